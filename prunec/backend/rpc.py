"""Measure a compiled TVM (Relax VM) library on a remote device over TVM RPC.

Two ways to reach the device, as on real boards:

* ``rpc="HOST:PORT"``: a ``python -m tvm.exec.rpc_server`` listening on that address;
* ``tracker="HOST:PORT", key="KEY"``: a ``python -m tvm.exec.rpc_tracker`` in front of
  one or more servers started with ``--tracker HOST:PORT --key KEY``.

The library must be exported (``export_library``) for the device's target, e.g. with
``tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++")`` for an aarch64 board; it is
uploaded, loaded into a ``relax.VirtualMachine`` on the remote CPU, run once on the
given inputs (outputs are copied back as numpy arrays) and timed with ``time_evaluator``.

Timings taken on an emulated device (qemu) are not performance figures: use them only
to prove that the artifact runs and computes the right outputs.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from prunec.errors import PrunecError

from .options import parse_hostport

__all__ = ["measure_over_rpc", "parse_hostport", "random_inputs"]

# How long to wait for a TCP connection to a server or tracker before calling it unreachable.
CONNECT_TIMEOUT_S = 10.0
# How long the RPC handshake may take once TCP is up. A TVM rpc_server serves one session at a
# time and leaves a second client waiting in its backlog without a word (and an emulated board
# answers slowly), so without a bound prunec could wait forever. PRUNEC_RPC_HANDSHAKE_TIMEOUT=S.
HANDSHAKE_TIMEOUT_S = float(os.environ.get("PRUNEC_RPC_HANDSHAKE_TIMEOUT", "120"))


def _noop_log(*_args: Any, **_kwargs: Any) -> None:
    return None


def _check_reachable(host: str, port: int, what: str) -> None:
    """Fail fast with a clear message; TVM's own clients retry a refused connection for 60 s."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise PrunecError(f"cannot reach {what} at {host}:{port}: {reason}") from None


def _within(seconds: float, what: str, fn: Callable[[], Any]) -> Any:
    """fn() in a daemon thread; PrunecError if it has not returned after `seconds` (the blocked
    native call is abandoned: it cannot be interrupted, and it dies with the process)."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    t = threading.Thread(target=call, name="prunec-rpc-connect", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise PrunecError(f"{what}: no answer within {seconds:.0f} s (busy serving another session, "
                          "or not a TVM RPC endpoint?); set PRUNEC_RPC_HANDSHAKE_TIMEOUT to wait longer")
    if "error" in box:
        raise box["error"]
    return box["value"]


def random_inputs(
    input_shapes: Mapping[str, Sequence[int]], dtype: str, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded random inputs: standard normal for floats, small integers otherwise."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in input_shapes.items():
        shape = [int(d) for d in shape]
        np_dtype = np.dtype(dtype)
        if np.issubdtype(np_dtype, np.floating):
            out[name] = rng.standard_normal(shape).astype(np_dtype)
        elif np_dtype == np.bool_:
            out[name] = rng.integers(0, 2, size=shape).astype(np_dtype)
        else:
            out[name] = rng.integers(0, 10, size=shape).astype(np_dtype)
    return out


def _to_numpy_list(value: Any) -> list[np.ndarray]:
    """Flatten a VM result (a tensor, or nested tuples of tensors) into numpy arrays."""
    if hasattr(value, "numpy"):
        return [value.numpy()]
    if isinstance(value, (int, float, bool, np.generic)):
        return [np.asarray(value)]
    try:
        items = list(value)
    except TypeError:
        raise PrunecError(f"unexpected output type from the remote VM: {type(value).__name__}") from None
    out: list[np.ndarray] = []
    for item in items:
        out.extend(_to_numpy_list(item))
    return out


def _open_session(rpc: str | None, tracker: str | None, key: str | None, log: Callable[..., Any]):
    import tvm.rpc  # imported late: importing tvm takes a second or two

    if rpc and tracker:
        raise PrunecError("give either --rpc HOST:PORT or --tracker HOST:PORT --key KEY, not both")
    if rpc:
        host, port = parse_hostport(rpc, "--rpc")
        _check_reachable(host, port, "the RPC server")
        log(f"rpc: connecting to {host}:{port}")
        try:
            remote = _within(HANDSHAKE_TIMEOUT_S, f"RPC server at {host}:{port}",
                             lambda: tvm.rpc.connect(host, port, key or ""))
        except PrunecError:
            raise
        except Exception as err:  # noqa: BLE001 - TVM raises plain RuntimeError/TVMError
            raise PrunecError(
                f"RPC server at {host}:{port} refused the session "
                f"(is it a TVM rpc_server, and not registered with a tracker?): {_one_line(err)}"
            ) from None
        return remote, f"rpc {host}:{port}"
    if tracker:
        if not key:
            raise PrunecError("--tracker needs --key KEY (the device key the servers registered with)")
        host, port = parse_hostport(tracker, "--tracker")
        _check_reachable(host, port, "the RPC tracker")
        log(f"rpc: asking tracker {host}:{port} for a device with key {key!r}")
        try:
            trk, summary = _within(HANDSHAKE_TIMEOUT_S, f"RPC tracker at {host}:{port}", lambda: (
                lambda t: (t, t.summary()))(tvm.rpc.connect_tracker(host, port)))
        except PrunecError:
            raise
        except Exception as err:  # noqa: BLE001
            raise PrunecError(f"{host}:{port} is not a working TVM RPC tracker: {_one_line(err)}") from None
        keys = sorted(
            {str(s.get("key", "")).split(":", 1)[-1] for s in summary.get("server_info", [])}
        )
        if key not in keys:
            have = ", ".join(keys) if keys else "none"
            raise PrunecError(
                f"the tracker at {host}:{port} has no device with key {key!r} (keys registered: {have})"
            )
        try:
            # The tracker queues the request until a server with this key is free.
            remote = trk.request(key, priority=1, session_timeout=0, max_retry=2)
        except Exception as err:  # noqa: BLE001
            raise PrunecError(
                f"could not get a {key!r} device from the tracker at {host}:{port}: {_one_line(err)}"
            ) from None
        return remote, f"tracker {host}:{port} key={key}"
    raise PrunecError("no remote device: give --rpc HOST:PORT or --tracker HOST:PORT --key KEY")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _run_remote(lib_path, input_shapes, arrays, rpc, tracker, key, repeat, number, log):
    """Connect, upload, load, run once and time; returns (outputs, seconds per repeat, where).

    TVM's exceptions are turned into PrunecError *outside* the except blocks and every remote
    handle is dropped first: a live traceback or exception context would otherwise keep the
    session open, and a TVM RPC server serves one session at a time.
    """
    import tvm
    from tvm import relax

    name = os.path.basename(lib_path)
    remote, where = _open_session(rpc, tracker, key, log)
    rlib = vm = args = timer = bench = None
    failure = None
    stage = "load"
    try:
        t0 = time.perf_counter()
        remote.upload(lib_path)
        rlib = remote.load_module(name)
        log(f"rpc: uploaded and loaded {name} in {time.perf_counter() - t0:.1f} s")
        stage = "run"
        dev = remote.cpu(0)
        vm = relax.VirtualMachine(rlib, dev)
        args = [tvm.runtime.tensor(arrays[n], device=dev) for n in input_shapes]
        # The stateful API works over RPC for tuple outputs too (a direct call returning a
        # tuple gives an opaque remote object).
        vm.set_input("main", *args)
        vm.invoke_stateful("main")
        outputs = _to_numpy_list(vm.get_outputs("main"))
        log(f"rpc: ran once, {len(outputs)} output(s); timing {repeat} x {number} run(s)")
        timer = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat)
        bench = timer("main")
        results = [float(t) for t in bench.results]
    except PrunecError as err:
        failure = str(err)
    except Exception as err:  # noqa: BLE001 - TVM raises RuntimeError/TVMError/RPCError
        if stage == "load":
            failure = (f"the device at {where} could not load {name} (compiled for another target, "
                       f"or not exported as a shared library?): {_one_line(err)}")
        else:
            failure = f"running the model on the device at {where} failed: {_one_line(err)}"
    finally:
        remote = rlib = vm = args = timer = bench = None
    if failure is not None:
        raise PrunecError(failure)
    return outputs, results, where


def measure_over_rpc(
    lib_path: str | os.PathLike[str],
    input_shapes: Mapping[str, Sequence[int]],
    dtype: str,
    rpc: str | None,
    tracker: str | None,
    key: str | None,
    repeat: int,
    log: Callable[..., Any] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    number: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Upload ``lib_path``, run it on the remote CPU, return outputs and latency statistics.

    ``input_shapes`` is ordered as the model's inputs (the VM's ``main`` takes them
    positionally). ``inputs`` overrides the seeded random inputs for the names it has.
    Returns ``{"latency_ms": {"median", "p10", "p90", "mean", "repeat", "number"},
    "outputs": [np.ndarray, ...], "device": "..."}``.
    """
    log = log or _noop_log
    lib_path = os.fspath(lib_path)
    if not os.path.isfile(lib_path):
        raise PrunecError(f"compiled library not found: {lib_path}")
    if repeat < 1 or number < 1:
        raise PrunecError(f"repeat and number must be >= 1 (got repeat={repeat}, number={number})")
    if not input_shapes:
        raise PrunecError("input_shapes is empty: the model's inputs and their shapes are needed")

    arrays = random_inputs(input_shapes, dtype, seed=seed)
    for name, arr in (inputs or {}).items():
        if name not in arrays:
            raise PrunecError(f"input {name!r} is not among the model inputs {list(input_shapes)}")
        arr = np.ascontiguousarray(arr)
        if list(arr.shape) != [int(d) for d in input_shapes[name]]:
            raise PrunecError(
                f"input {name!r} has shape {list(arr.shape)}, expected {list(input_shapes[name])}"
            )
        arrays[name] = arr

    try:
        outputs, results_s, where = _run_remote(lib_path, input_shapes, arrays, rpc, tracker, key,
                                                repeat, number, log)
    finally:
        # The remote objects (session, module, VM, tensors) form reference cycles: without a
        # collection the session stays open, and a TVM RPC server serves one session at a
        # time, so the next connection to it would wait forever.
        gc.collect()

    times_ms = np.asarray(results_s, dtype=np.float64) * 1e3
    latency = {
        "median": float(np.median(times_ms)),
        "p10": float(np.percentile(times_ms, 10)),
        "p90": float(np.percentile(times_ms, 90)),
        "mean": float(np.mean(times_ms)),
        "repeat": int(repeat),
        "number": int(number),
    }
    return {"latency_ms": latency, "outputs": outputs, "device": f"remote cpu via {where}"}

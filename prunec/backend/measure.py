"""Local measurement: compiled TVM artifact vs ONNX Runtime, same inputs, same thread count."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np


def make_inputs(sig: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in sig["inputs"]:
        dt = np.dtype(i["dtype"])
        if dt.kind == "f":
            out[i["name"]] = rng.standard_normal(i["shape"]).astype(dt)
        elif dt.kind == "b":
            out[i["name"]] = rng.integers(0, 2, i["shape"]).astype(dt)
        else:  # ids/indices: keep small so that gathers stay in range
            out[i["name"]] = rng.integers(0, 2, i["shape"]).astype(dt)
    return out


def stats_ms(seconds: list[float]) -> dict:
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"median": round(float(np.median(a)), 4), "p10": round(float(np.percentile(a, 10)), 4),
            "p90": round(float(np.percentile(a, 90)), 4), "std": round(float(a.std()), 4),
            "n": int(a.size)}


# CPUs this process may run on, read before TVM's thread pool can pin the main thread
try:
    _ALLOWED_CPUS = os.sched_getaffinity(0)
except AttributeError:  # not Linux
    _ALLOWED_CPUS = None


def set_tvm_threads(n: int) -> None:
    """n worker threads for TVM (the same count ONNX Runtime gets), not pinned to cores unless
    TVM_BIND_THREADS=1 (see prunec.backend)."""
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(n)
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    f = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if f is not None:
        f(1, n)  # mode 1 = big cores; n worker threads
    if _ALLOWED_CPUS and os.environ.get("TVM_BIND_THREADS") == "0":
        try:  # undo a pin of the main thread from an earlier pool configuration
            os.sched_setaffinity(0, _ALLOWED_CPUS)
        except OSError:
            pass


def _flatten(v) -> list[np.ndarray]:
    import tvm

    if isinstance(v, (list, tuple)) or type(v).__name__ == "Array":
        return [a for x in v for a in _flatten(x)]
    if isinstance(v, tvm.runtime.Tensor):
        return [v.numpy()]
    return [np.asarray(v)]


def load_vm(lib_path: Path, dev=None):
    import tvm
    from tvm import relax

    dev = dev or tvm.cpu()
    lib = tvm.runtime.load_module(str(lib_path))
    return relax.VirtualMachine(lib, dev), dev


def tvm_sampler(lib_path: Path, sig: dict, inputs: dict, dev=None, min_repeat_ms: int = 200):
    """(sample(n) -> n latencies in seconds, outputs) of a compiled library's `main`. Each sample
    averages as many runs as fit in min_repeat_ms; one untimed warm-up run gives the outputs."""
    import tvm

    vm, dev = load_vm(lib_path, dev)
    args = [tvm.runtime.tensor(inputs[i["name"]], dev) for i in sig["inputs"]]
    outs = _flatten(vm["main"](*args))

    def sample(n: int) -> list[float]:
        fte = vm.time_evaluator("main", dev, number=1, repeat=n, min_repeat_ms=min_repeat_ms)
        return list(fte(*args).results)

    return sample, outs


def ort_sampler(onnx_path: Path, inputs: dict, threads: int, min_repeat_ms: int = 200):
    """The same for ONNX Runtime on the CPU with `threads` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, inputs)
    for _ in range(2):
        sess.run(None, inputs)

    return repeat_sampler(lambda: sess.run(None, inputs), min_repeat_ms), [np.asarray(o) for o in outs]


def repeat_sampler(run_once, min_repeat_ms: int):
    """sample(n) -> n latencies in seconds, each the mean of as many runs as fill min_repeat_ms:
    the sampling scheme of TVM's time_evaluator, for runtimes timed from Python."""
    def sample(n: int) -> list[float]:
        samples = []
        for _ in range(n):
            k, t0 = 0, time.perf_counter()
            while True:
                run_once()
                k += 1
                dt = time.perf_counter() - t0
                if dt * 1e3 >= min_repeat_ms:
                    break
            samples.append(dt / k)
        return samples

    return sample


def tvm_run_and_time(lib_path: Path, sig: dict, inputs: dict, repeat: int, dev=None,
                     min_repeat_ms: int = 200) -> tuple[dict, list[np.ndarray]]:
    """Latency stats (ms) of `main` over `repeat` samples, and its outputs."""
    sample, outs = tvm_sampler(lib_path, sig, inputs, dev, min_repeat_ms)
    return stats_ms(sample(repeat)), outs


def ort_run_and_time(onnx_path: Path, inputs: dict, threads: int, repeat: int,
                     min_repeat_ms: int = 200) -> tuple[dict, list[np.ndarray]]:
    sample, outs = ort_sampler(onnx_path, inputs, threads, min_repeat_ms)
    return stats_ms(sample(repeat)), outs


# Idle time between two timed phases: a thread pool keeps spinning (sched_yield) for a while
# after its last job, and on 2 cores that steals time from whatever is timed next.
SETTLE_S = 0.5


def timed_rounds(samplers: dict, repeat: int, rounds: int, settle_s: float = SETTLE_S) -> dict:
    """Latency stats (ms) per sampler, timed in `rounds` interleaved rounds of `repeat` samples
    each (A B C, A B C, ...), with settle_s idle before each phase.

    The reported median is that of the best round (lowest median); the medians of all rounds
    are kept beside it. Why: on a shared VM the host slows this guest's cores for seconds at a
    time (measured here: one TVM library at 3.8 ms for some seconds, 8.5 ms for the next, in
    one process, 6.3 ms single-threaded throughout), so a single phase per model says more
    about when it ran than about the model; noise only ever adds time, and taking the best
    round of each, interleaved, gives every model the same chance at a quiet period."""
    from prunec import progress

    per: dict[str, list[list[float]]] = {name: [] for name in samplers}
    with progress.phase(f"timing ({max(1, rounds)} interleaved rounds)", total=max(1, rounds) * len(samplers),
                        unit="timings") as bar:
        for _ in range(max(1, rounds)):
            for name, sample in samplers.items():
                if settle_s:
                    time.sleep(settle_s)
                per[name].append(sample(repeat))
                bar.update()
    out = {}
    for name, rs in per.items():
        best = min(rs, key=lambda r: float(np.median(r)))
        st = stats_ms(best)
        st["rounds"] = len(rs)
        st["round_medians"] = [round(float(np.median(r)) * 1e3, 4) for r in rs]
        st["median_all"] = round(float(np.median([x for r in rs for x in r])) * 1e3, 4)
        out[name] = st
    return out


def paired_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a's time / b's time in the same round. A ratio of fastest rounds
    compares whichever round each run found quiet; on a host whose speed changes in phases
    (this project's VM: whole rounds ~1.5x slower for every runtime alike) one run can miss
    every quiet phase, and that ratio is off by the phase's factor. Two runs of one round are
    seconds apart, mostly in one phase, so their ratio keeps little of it."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_ratio needs the same number of rounds of each")
    return float(np.median([x / y for x, y in zip(a, b)]))


def compare_latency(libs: list[Path], sig: dict, rounds: int = 7) -> list[float]:
    """Median latency (ms) of each library's `main` on the same inputs, timed in alternation
    (rounds of ~50 ms each), so that load changes on a shared host hit all of them alike."""
    inputs = make_inputs(sig)
    samplers = [tvm_sampler(lib, sig, inputs, min_repeat_ms=50)[0] for lib in libs]
    samples: list[list[float]] = [[] for _ in libs]
    for _ in range(rounds):
        for k, sample in enumerate(samplers):
            samples[k].append(sample(1)[0] * 1e3)
    return [float(np.median(s)) for s in samples]


# Absolute differences below this always match: float32 outputs computed from activations of
# order 1 carry a few ulps of rounding (eps = 1.2e-7) whatever their own scale, so an output that
# is ~0 everywhere (PP-OCRv4's detector map on random input: max 6e-4, TVM vs ONNX Runtime
# 1.3e-7 apart) is not held to 1e-4 of its own scale.
ABS_FLOOR = 1e-6


def compare(got: list[np.ndarray], ref: list[np.ndarray], rtol: float = 1e-3,
            atol: float = 1e-4, abs_floor: float = ABS_FLOOR) -> dict:
    """{"ok", "max_abs", "max_rel"} of outputs against the reference's: each element within
    rtol of its reference plus atol of the output's largest magnitude, or abs_floor."""
    if len(got) != len(ref):
        return {"ok": False, "reason": f"{len(got)} outputs, ONNX Runtime gives {len(ref)}"}
    max_abs = max_rel = 0.0
    ok = True
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            return {"ok": False, "reason": f"output shape {g.shape} != {r.shape}"}
        g64, r64 = g.astype(np.float64), r.astype(np.float64)
        d = np.abs(g64 - r64)
        max_abs = max(max_abs, float(d.max(initial=0.0)))
        # relative to the output's own scale: elementwise relative error explodes near zero
        scale = float(np.abs(r64).max(initial=0.0)) or 1.0
        max_rel = max(max_rel, float(d.max(initial=0.0)) / scale)
        ok = ok and bool(np.allclose(g64, r64, rtol=rtol, atol=max(atol * scale, abs_floor)))
    return {"max_abs": max_abs, "max_rel": max_rel, "ok": ok}


# Interleaved rounds (benchmarks/alternate.py explains why): shared by bench_speedup and the latency table.
def clock_for(threads: int) -> Callable[[], float]:
    """The clock alternate() should use at this thread count: with one thread the calling thread's CPU
    time, which a preempted thread does not accumulate; with more, wall time (work runs on other threads)."""
    return time.thread_time if threads == 1 else time.perf_counter


def alternate(runs: dict[str, Callable[[], object]], rounds: int = 15, round_s: float = 0.1,
              clock: Callable[[], float] = time.perf_counter,
              settle_s: float = 0.0) -> dict[str, list[float]]:
    """{name: [ms per call in each round]} of `runs` (name -> one call), timed in `rounds`
    interleaved rounds; each round of a run is one untimed warm-up call, then calls until
    round_s of `clock` have passed. settle_s: idle time before each round of each run (a
    thread pool that still spins after the previous run would steal from the next)."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(max(1, rounds)):
        for name, run in runs.items():
            if settle_s:
                time.sleep(settle_s)
            run()
            n, t0 = 0, clock()
            while True:
                run()
                n += 1
                dt = clock() - t0
                if dt >= round_s:
                    break
            out[name].append(dt / n * 1e3)
    return out

"""Compiled libraries timed in alternation inside one process (bench_speedup --compare-libs).

Why: on a shared host the load changes over seconds, so two libraries timed one after the other
(or in two processes) differ by more than most schedule changes do. Here every library is loaded
once, then timed in rounds, A B C, A B C, ...: each round runs each library back to back for at
least `round_s` and records the mean time per call, so every library meets the same load, and
the figures are the fastest round (what the code can do; noise only ever adds time) and the
median round (what it usually did).

The clock: with one thread, the calling thread's CPU time (time.thread_time), which a
preempted thread does not accumulate, so it stays meaningful on a busy host; with more threads
the work runs on other threads too, so wall time (time.perf_counter).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

from prunec.backend.measure import alternate, clock_for, paired_ratio  # kept here: bench_speedup and tests import them from this module

__all__ = ["alternate", "clock_for", "summarize", "paired_ratio", "tvm_call", "runtime_call", "check_thread_clock",
           "calling_thread_share", "kept_libraries"]


def summarize(per_round: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """{name: {"fastest": ms, "median": ms, "rounds": n}} of alternate()'s result."""
    return {name: {"fastest": min(ms), "median": statistics.median(ms), "rounds": len(ms)}
            for name, ms in per_round.items()}


def tvm_call(lib: Path, io: dict, threads: int) -> tuple[Callable[[], object], list]:
    """(one call of the library's entry on random inputs, its outputs as numpy arrays). io: the
    .json prunec writes beside a library (inputs with shapes and dtypes, the entry name)."""
    import tvm

    from prunec.backend import measure as M

    M.set_tvm_threads(threads)
    vm, dev = M.load_vm(Path(lib))
    M.set_tvm_threads(threads)  # loading may have reconfigured the pool
    inputs = M.make_inputs(io)
    args = [tvm.runtime.tensor(inputs[i["name"]], dev) for i in io["inputs"]]
    f = vm[io.get("entry", "main")]
    outs = M._flatten(f(*args))
    return (lambda: f(*args)), outs


def runtime_call(runtime: str, onnx_path: Path, io: dict, threads: int,
                 shapes: dict | None = None) -> tuple[Callable[[], object], list]:
    """(one call, its outputs) of ONNX Runtime ("onnxruntime") or OpenVINO's CPU plugin in f32
    ("openvino") on the ONNX file a kept library was compiled from, with the inputs tvm_call
    makes from the same io. With one thread both run inside the calling thread (thread CPU time
    equals the process's, measured here), so thread CPU time times them too."""
    import numpy as np

    from prunec.backend import measure as M

    inputs = M.make_inputs(io)
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        return (lambda: sess.run(None, inputs)), [np.asarray(o) for o in sess.run(None, inputs)]
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(onnx_path))
        if shapes:  # dynamic dims fixed as the library was compiled
            model.reshape({k: list(v) for k, v in shapes.items()})
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY"})
        req = compiled.create_infer_request()
        res = req.infer(inputs)
        return (lambda: req.infer(inputs)), [np.array(res[o]) for o in compiled.outputs]
    raise ValueError(f"unknown runtime {runtime!r}")


def check_thread_clock(run: Callable[[], object], threads: int, calls: int = 3) -> float | None:
    """With one thread: thread CPU time / wall time over a few calls (None otherwise). Well
    under 1 on an idle host means the work ran on other threads and thread CPU time misses it."""
    if threads != 1:
        return None
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(calls):
        run()
    return (time.thread_time() - c0) / max(time.perf_counter() - w0, 1e-9)


def calling_thread_share(run: Callable[[], object], calls: int = 3) -> float:
    """The calling thread's share of the process's CPU time over a few calls: ~1 when the work
    runs in the calling thread (thread CPU time measures it), less when other threads do it."""
    c0, p0 = time.thread_time(), time.process_time()
    for _ in range(calls):
        run()
    return (time.thread_time() - c0) / max(time.process_time() - p0, 1e-9)


def kept_libraries(dirs: list[Path]) -> list[dict]:
    """The libraries bench_speedup --keep-libs left in each of `dirs`: [{"dir", "model",
    "tag" ("original"/"pruned"), "lib", "io", "macs"}], in the order of the dirs."""
    found = []
    for d in dirs:
        index = Path(d) / "libs.json"
        if not index.is_file():
            raise SystemExit(f"bench_speedup: {d} holds no libs.json (make it with --keep-libs)")
        for entry in json.loads(index.read_text()):
            for tag in ("original", "pruned"):
                lib = Path(d) / entry[tag]["lib"]
                found.append({"dir": str(d), "model": entry["model"], "tag": tag, "lib": lib,
                              "io": json.loads(lib.with_suffix(".json").read_text()),
                              "macs": entry[tag]["macs"], "onnx": entry[tag].get("onnx"),
                              "shapes": entry.get("shapes")})
    return found

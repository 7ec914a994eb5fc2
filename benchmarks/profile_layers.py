"""Per-kernel time of a model compiled by prunec's x86 pipeline, slowest first.

Where does the latency go? Compiles the ONNX model with the zero-trial default schedules (as
`prunec --target x86 --tune-trials 0` does), then times every kernel call of one inference:
each call is run alone `--number` times in a row (warm caches, as in the model only when the
previous layer's output still fits them) and inside the model, and the fastest time per call
is printed with the function's name and argument shapes. The sum is printed next to the whole
model's latency; the gap is the VM's own overhead plus the cache effects a kernel sees inside
the model.

  python benchmarks/profile_layers.py model.onnx [--shape NAME=D0,D1,..] [--threads 2]
      [--top 25] [--no-winograd] [--onnxruntime] [--beside ORIGINAL]

--onnxruntime adds ONNX Runtime's own per-node profile of the same model (its op names and
microseconds, summed per node over the profiled runs), for a layer-by-layer comparison.
--beside ORIGINAL (MODEL being a pruned copy of ORIGINAL) profiles ORIGINAL too and pairs the
calls: which of the pruned model's calls keep its speedup below its MAC reduction
(profile_beside.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _shapes(path: Path, overrides: dict) -> dict[str, list[int]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    out = {}
    for vi in m.graph.input:
        if vi.name not in inits:
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            out[vi.name] = overrides.get(vi.name, dims)
            if any(d <= 0 for d in out[vi.name]):
                raise SystemExit(f"profile_layers: input {vi.name!r} has dynamic dims; "
                                 f"give them with --shape {vi.name}=D0,D1,..")
    return out


def _clock(threads: int):
    """Thread CPU time on one thread (every kernel runs in the calling thread, and time the
    thread spends preempted by other jobs is not counted: a shared host's noise mostly goes),
    else wall time."""
    return time.thread_time if threads == 1 else time.perf_counter


def _timed(run, clock, number: int) -> float:
    """Seconds of `clock` per call over `number` back-to-back calls."""
    t0 = clock()
    for _ in range(number):
        run()
    return (clock() - t0) / number


def tvm_profile(path: Path, shapes: dict, threads: int, winograd: bool, number: int):
    """[(function, shapes, µs in the model, µs alone)] per kernel call of one inference, and the
    model's ms (each the fastest of several). In the model: timed between the VM's before/after
    hooks over `number` inferences (the previous layer's output and this layer's cold weights,
    as deployed); alone: the same call repeated back to back (warm caches). One thread: thread
    CPU time (see _clock), else wall time."""
    import tvm

    from prunec.backend import BackendOptions, build, frontend, measure
    from prunec.backend.targets import get_target

    measure.set_tvm_threads(threads)
    mod, sig = frontend.import_onnx(path, shapes)
    x86 = get_target("x86")
    tgt = x86.make_target(x86.config(BackendOptions(threads=threads)))
    ex = build.build(mod, tgt, x86, winograd=winograd)
    with tempfile.TemporaryDirectory() as d:
        # loaded back as a user would (a VM over the in-memory executable ran 2x slower here)
        ex.export_library(os.path.join(d, "model.so"))
        vm, _ = measure.load_vm(Path(d, "model.so"))
        measure.set_tvm_threads(threads)
    inputs = measure.make_inputs(sig)
    args = [tvm.runtime.tensor(inputs[i["name"]]) for i in sig["inputs"]]
    vm["main"](*args)
    clock = _clock(threads)
    if threads == 1:
        model_ms = min(_timed(lambda: vm["main"](*args), clock, 3) for _ in range(5)) * 1e3
    else:
        fte = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=10, min_repeat_ms=200)
        model_ms = float(np.min(fte(*args).results)) * 1e3
    calls, stamps = [], []  # the first instrumented inference records the calls themselves

    def record(func, name, before_run, ret_val, *fargs):
        if name.startswith(("vm.builtin", "runtime.")):  # VM helpers and tensor views, not kernels
            return 0
        if before_run:
            if record.collect:
                calls.append((func, name, [a for a in fargs
                                           if isinstance(a, tvm.runtime.Tensor)]))
            stamps.append(clock())
        else:
            stamps[-1] = clock() - stamps[-1]
        return 0

    record.collect = True
    vm.set_instrument(record)
    vm["main"](*args)
    record.collect, n_calls = False, len(calls)
    in_model = []
    for _ in range(max(5, number)):
        stamps.clear()
        vm["main"](*args)
        in_model.append(stamps[:n_calls])
    vm.set_instrument(None)
    # the fastest of the inferences per call (and of the samples alone, and of the whole
    # model): on a shared VM the host slows this guest for seconds at a time (2x, in both
    # directions within one run), noise only ever adds time, and a median mixes the two states
    in_model_us = np.min(np.asarray(in_model), axis=0) * 1e6
    rows = []
    for (func, name, fargs), t_model in zip(calls, in_model_us):
        func(*fargs)
        samples = [_timed(lambda: func(*fargs), clock, number) for _ in range(5)]
        rows.append((name, [tuple(a.shape) for a in fargs], float(t_model),
                     float(np.min(samples)) * 1e6))
    return rows, model_ms


def ort_profile(path: Path, shapes: dict, threads: int, runs: int = 50):
    """[(node, op, µs per run, fastest µs)] from ONNX Runtime's profiler: the mean over the
    profiled runs, and the node's fastest run (comparable with TVM's in-model column, also a
    fastest: on a shared host the mean mostly measures the other jobs)."""
    import onnxruntime as ort

    from prunec.backend import measure

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as d:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "ort")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sig = {"inputs": [{"name": i.name, "shape": shapes[i.name], "dtype": "float32"}
                          for i in sess.get_inputs()]}
        feeds = measure.make_inputs(sig)
        for _ in range(5):
            sess.run(None, feeds)
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = (e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"))
            per.setdefault(key, []).append(float(e["dur"]))
    # a node runs once per inference: the fastest of its runs is its fastest inference's
    return [(n, op, sum(us) / (runs + 5), min(us)) for (n, op), us in per.items()]


def _print_beside(orig: Path, pruned: Path, shapes: dict, rows, model_ms, a) -> None:
    import prunec
    from prunec.macs import graph_macs

    try:
        from profile_beside import beside, report
    except ImportError:  # run as `python -m benchmarks.profile_layers`
        from benchmarks.profile_beside import beside, report

    o_rows, o_ms = tvm_profile(orig, shapes, a.threads, not a.no_winograd, a.number)
    macs = [graph_macs(m.graph, m.shapes) for m in (prunec.load(str(f), shapes) for f in (orig, pruned))]
    ratio = macs[0] / macs[1]
    for line in report(beside(o_rows, rows, ratio), ratio, (o_ms, model_ms), a.top):
        print(line)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,..")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--number", type=int, default=20, help="back-to-back calls per sample")
    p.add_argument("--no-winograd", action="store_true")
    p.add_argument("--onnxruntime", action="store_true")
    p.add_argument("--beside", type=Path, metavar="ORIGINAL",
                   help="MODEL is a pruned copy of ORIGINAL: also profile ORIGINAL and pair the "
                        "calls (profile_beside.py)")
    a = p.parse_args(argv)
    for f in (a.model, a.beside):
        if f is not None and not f.is_file():
            raise SystemExit(f"profile_layers: no such file: {f}")
    overrides = {}
    for item in a.shape:
        name, _, dims = item.partition("=")
        overrides[name] = [int(d) for d in dims.split(",")]
    shapes = _shapes(a.model, overrides)
    rows, model_ms = tvm_profile(a.model, shapes, a.threads, not a.no_winograd, a.number)
    total, alone = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"TVM: {len(rows)} kernel calls, sum {total / 1e3:.3f} ms in the model "
          f"({alone / 1e3:.3f} ms alone); model {model_ms:.3f} ms (threads={a.threads}, "
          f"{'thread CPU time' if a.threads == 1 else 'wall time'})")
    print(f"  {'in model':>9}    {'share':>5}  {'alone':>9}")
    for name, shp, us, us1 in sorted(rows, key=lambda r: -r[2])[: a.top]:
        print(f"  {us:9.1f} us {100 * us / total:5.1f}%  {us1:9.1f} us  {name:<48} "
              f"{' '.join(map(str, shp))}")
    if a.beside is not None:
        _print_beside(a.beside, a.model, shapes, rows, model_ms, a)
    if a.onnxruntime:
        ort_rows = ort_profile(a.model, shapes, a.threads)
        tot, fast = sum(r[2] for r in ort_rows), sum(r[3] for r in ort_rows)
        print(f"ONNX Runtime: {len(ort_rows)} nodes, sum {fast / 1e3:.3f} ms of each node's "
              f"fastest run ({tot / 1e3:.3f} ms of means)")
        print(f"  {'fastest':>9}    {'share':>5}  {'mean':>9}")
        for n, op, us, us1 in sorted(ort_rows, key=lambda r: -r[3])[: a.top]:
            print(f"  {us1:9.1f} us {100 * us1 / fast:5.1f}%  {us:9.1f} us  {op:<16} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

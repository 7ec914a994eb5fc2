"""CUDA: TVM's compiled original and pruned models timed on a GPU, beside PyTorch running the same
ONNX graphs, with every output checked against ONNX Runtime's.

Two steps, because the machine that compiles is often not the one with the GPU (and needs none):

  python -m benchmarks.bench_cuda build --out DIR [--models yolov8n,vit,...] [--arch sm_90]
      here: builds and prunes the pairs (as bench_speedup does; --pair ORIG PRUNED for your own),
      compiles both with `prunec.compile(..., "cuda")`, and writes DIR/manifest.json, the
      libraries, fixed inputs and ONNX Runtime's CPU outputs for them.

  python benchmarks/bench_cuda.py measure DIR [--json out.json] [--profile]
      on the GPU machine: needs TVM's runtime (a full TVM install, or its runtime libraries with
      TVM_USE_RUNTIME_LIB=1) and numpy; the kernels were compiled at build time when nvcc was
      there (DIR/*.cuda/, prunec/backend/cuda_kernels.py), else nvcc compiles them here at load.
      PyTorch with onnx2torch, when importable, adds
      the baseline column: the same ONNX graph run eagerly with cuDNN, f32 (TF32 off, as TVM's
      kernels compute in f32). --profile adds each model's slowest kernels.

Latency is the median of --repeat samples of >= 100 ms each (TVM: its time_evaluator, which
synchronises the device; PyTorch: CUDA events around as many calls as fill the sample).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = ("yolov8n", "vit", "mobilenetv2", "resnet18", "ddddocr_det")


# ---------------------------------------------------------------- build (the compiling host)

def _built_in_pair(name: str, ratio: float, workdir: Path) -> dict:
    """Original and pruned ONNX files of a built-in model (cached in workdir)."""
    import onnx

    import prunec
    from prunec.pipeline import PruneOptions, prune_model

    orig, pruned = workdir / f"{name}.onnx", workdir / f"{name}.r{ratio:g}.onnx"
    if name == "vit":  # the attention model of docs/performance.md
        from models.vit import vit

        proto, shapes = vit(image=224, patch=16, dim=192, heads=3, depth=4), \
            {"input": [1, 3, 224, 224]}
    elif name == "ddddocr_det":
        from models.fetch_pypi import ddddocr_path

        proto, shapes = onnx.load(str(ddddocr_path("common_det.onnx"))), \
            {"images": [1, 3, 416, 416]}
    else:
        sys.path.insert(0, str(ROOT))
        from benchmarks.bench_speedup import _input_shapes, _original

        proto, wanted = _original(name)
        shapes = _input_shapes(proto, wanted)
    if not (orig.exists() and pruned.exists()):
        onnx.save(proto, str(orig))
        model = prunec.from_proto(proto, input_shapes=shapes)
        pm, _report, _ = prune_model(model, PruneOptions(ratio=ratio, target="cuda",
                                                         input_shapes=shapes))
        prunec.save(pm, str(pruned))
    return {"name": name, "original": orig, "pruned": pruned, "shapes": shapes}


def build(a) -> int:
    import onnxruntime as ort

    import prunec
    from prunec.backend.measure import make_inputs
    from prunec.macs import graph_macs

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    work = a.workdir
    work.mkdir(parents=True, exist_ok=True)
    pairs = []
    if a.pair:
        for orig, pruned in a.pair:
            shapes = dict(_shape(s) for s in a.shape)
            pairs.append({"name": Path(orig).stem, "original": Path(orig), "pruned": Path(pruned),
                          "shapes": shapes})
    else:
        pairs = [_built_in_pair(n, a.ratio, work) for n in a.models.split(",")]
    old = out / "manifest.json"  # variants built into one DIR (--tag) add to its manifest
    manifest = json.loads(old.read_text()) if old.exists() else {"arch": a.arch, "models": []}
    manifest["models"] = [m for m in manifest["models"]
                          if m["name"] not in {p["name"] + a.tag for p in pairs}]
    for p in pairs:
        entry = {"name": p["name"] + a.tag, "versions": {}}
        for version in ("original", "pruned"):
            src = Path(p[version])
            t0 = time.perf_counter()
            c = prunec.compile(str(src), "cuda", cuda_arch=a.arch, input_shapes=p["shapes"],
                               cuda_graph=a.cuda_graph)
            lib = c.export(out / f"{entry['name']}.{version}.so")
            compile_s = time.perf_counter() - t0
            inputs = make_inputs(c.signature, seed=0)
            so = ort.SessionOptions()
            so.log_severity_level = 3
            ref = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"]).run(
                None, inputs)
            io = out / f"{entry['name']}.{version}.npz"
            np.savez(io, **{f"in:{k}": v for k, v in inputs.items()},
                     **{f"out:{i}": r for i, r in enumerate(ref)})
            m = prunec.load(str(src), p["shapes"])
            onnx_copy = out / f"{entry['name']}.{version}.onnx"
            if a.with_onnx:
                onnx_copy.write_bytes(src.read_bytes())
            entry["versions"][version] = {
                "lib": lib.name, "io": io.name, "signature": c.signature,
                "onnx": onnx_copy.name if a.with_onnx else None,
                "macs": graph_macs(m.graph, m.shapes), "compile_s": round(compile_s, 2),
                "unscheduled": c.stats.get("unscheduled", [])}
            print(f"[{entry['name']}] {version}: compiled for {a.arch} in {compile_s:.1f} s -> {lib}",
                  flush=True)
        manifest["models"].append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {out / 'manifest.json'}")
    return 0


def _shape(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.partition("=")
    return name, [int(d) for d in dims.split(",")]


# ---------------------------------------------------------------- measure (the GPU host)

def _load_tvm_cuda(folder: Path):
    """TVM with its CUDA runtime; the libraries' kernels from their precompiled fatbins (else
    nvcc for the GPU here: prunec/backend/cuda_kernels.py)."""
    import tvm

    if not any("cuda" in k for k in getattr(tvm.base, "_LOADED_LIBS", {})):
        from tvm_ffi.libinfo import load_lib_ctypes  # runtime-only install: load the sidecar

        load_lib_ctypes("tvm", "tvm_runtime_cuda", "RTLD_GLOBAL",
                        extra_lib_paths=[Path(tvm.__file__).parent / "lib"])
    sys.path.insert(0, str(ROOT))
    from prunec.backend.cuda_kernels import kernels_dir, use_precompiled

    use_precompiled(*(kernels_dir(p) for p in folder.glob("*.so")), log=print)
    return tvm


def _compare(got: list[np.ndarray], ref: list[np.ndarray]) -> dict:
    worst = 0.0
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            return {"ok": False, "why": f"shape {g.shape} vs {r.shape}"}
        scale = float(np.abs(r).max()) or 1.0
        worst = max(worst, float(np.abs(g.astype(np.float64) - r).max()) / scale)
    return {"ok": worst < 1e-3, "max_rel_err": worst}


def _tvm_time(tvm, lib_path: Path, sig: dict, io, repeat: int, profile: bool):
    from tvm.runtime.vm import VirtualMachine

    dev = tvm.cuda(0)
    t0 = time.perf_counter()
    vm = VirtualMachine(tvm.runtime.load_module(str(lib_path)), dev)
    args = [tvm.runtime.tensor(io[f"in:{i['name']}"], dev) for i in sig["inputs"]]
    outs = vm["main"](*args)
    dev.sync()
    load_s = time.perf_counter() - t0
    flat = outs if isinstance(outs, (list, tuple)) or type(outs).__name__ == "Array" else [outs]
    got = [o.numpy() for o in flat]
    fte = vm.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=100)
    ms = float(np.median(fte(*args).results)) * 1e3
    kernels = _kernel_profile(tvm, vm, dev, args) if profile else None
    return ms, got, load_s, kernels


def _kernel_profile(tvm, vm, dev, args, runs: int = 5) -> list:
    """Each called function's device time, summed over a call of main: synchronise before and
    after every call (adds a few microseconds each; the ranking is what this is for)."""
    totals: dict[str, list[float]] = {}
    start = [0.0]

    def instrument(func, name, before, ret, *rest):
        dev.sync()
        if before:
            start[0] = time.perf_counter()
        else:
            totals.setdefault(name, []).append(time.perf_counter() - start[0])
        return 0

    vm.set_instrument(instrument)
    for _ in range(runs):
        vm["main"](*args)
    rows = [(n, sum(v) / runs * 1e3, len(v) // runs) for n, v in totals.items()]
    return sorted(rows, key=lambda r: -r[1])


def _torch_time(onnx_path: Path, sig: dict, io, repeat: int) -> dict:
    """PyTorch (onnx2torch) on the GPU, f32: eager, and its calls replayed as one CUDA graph
    (what a PyTorch user does at batch 1). Empty when it is not installed."""
    try:
        import torch
        from onnx2torch import convert
    except ImportError as e:
        return {"torch_why": f"not installed ({e.name})"}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True

    def timed(run) -> float:
        samples = []
        for _ in range(repeat):
            n, e0, e1 = 0, torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            e0.record()
            while time.perf_counter() - t0 < 0.1:
                run()
                n += 1
            e1.record()
            e1.synchronize()
            samples.append(e0.elapsed_time(e1) / n)
        return float(np.median(samples))

    r: dict = {}
    try:
        net = convert(str(onnx_path)).cuda().eval()
        xs = [torch.from_numpy(io[f"in:{i['name']}"]).cuda() for i in sig["inputs"]]
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up (cuDNN's algorithm search) off the capture
                for _ in range(5):
                    out = net(*xs)
            torch.cuda.current_stream().wait_stream(side)
            r["torch_ms"] = timed(lambda: net(*xs))
            outs = out if isinstance(out, (list, tuple)) else [out]
            r["torch_out"] = [o.float().cpu().numpy() for o in outs]
            r["torch_kernel_ms"] = _kernel_sum_ms(torch, lambda: net(*xs))
            try:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    net(*xs)
                r["torch_graph_ms"] = timed(g.replay)
            except Exception as e:  # noqa: BLE001 - a host sync inside the graph
                r["torch_graph_why"] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    except Exception as e:  # noqa: BLE001 - an op onnx2torch lacks: report, keep measuring
        r["torch_why"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return r


def _kernel_sum_ms(torch, run, calls: int = 10) -> float | None:
    """PyTorch's GPU kernel time per call, launch gaps excluded (its profiler): where eager
    PyTorch is bound by Python and launches, this is what its kernels (cuDNN's) cost."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            run()
        torch.cuda.synchronize()
    us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
             for e in prof.key_averages())
    return us / calls / 1e3 if us else None


def _ort_cpu_time(onnx_path: Path, io, repeat: int) -> float:
    """ONNX Runtime on this machine's CPU, all cores (the runtime a user has without a GPU)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feed = {k[3:]: io[k] for k in io.files if k.startswith("in:")}
    for _ in range(3):
        sess.run(None, feed)
    samples = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.1:
            sess.run(None, feed)
            n += 1
        samples.append((time.perf_counter() - t0) / n * 1e3)
    return float(np.median(samples))


def measure(a) -> int:
    folder = a.folder
    tvm = _load_tvm_cuda(folder)
    dev = tvm.cuda(0)
    if not dev.exist:
        print("bench_cuda: error: no CUDA GPU here", file=sys.stderr)
        return 2
    manifest = json.loads((folder / "manifest.json").read_text())
    print(f"GPU: {dev.device_name}, sm_{dev.compute_version.replace('.', '')}; libraries built "
          f"for {manifest['arch']}", flush=True)
    rows = []
    for entry in manifest["models"]:
        row = {"name": entry["name"]}
        for version, v in entry["versions"].items():
            io = np.load(folder / v["io"])
            ref = [io[k] for k in sorted((k for k in io.files if k.startswith("out:")),
                                         key=lambda k: int(k[4:]))]
            ms, got, load_s, kernels = _tvm_time(tvm, folder / v["lib"], v["signature"], io,
                                                 a.repeat, a.profile)
            r = {"macs": v["macs"], "tvm_ms": ms, "load_s": load_s, "check": _compare(got, ref),
                 "compile_s": v["compile_s"]}
            if kernels:
                r["kernels"] = [{"name": n, "ms": round(t, 4), "calls": c}
                                for n, t, c in kernels[:a.profile_top]]
            if v.get("onnx"):
                r.update(_torch_time(folder / v["onnx"], v["signature"], io, a.repeat))
                if "torch_out" in r:
                    r["torch_check"] = _compare(r.pop("torch_out"), ref)
                r["ort_cpu_ms"] = _ort_cpu_time(folder / v["onnx"], io, a.repeat)
            row[version] = r
            print(f"[{entry['name']}] {version}: TVM {ms:.3f} ms (load {load_s:.1f} s, output "
                  f"{r['check']}); " + ", ".join(f"{k} {r[k]}" for k in (
                      "torch_ms", "torch_kernel_ms", "torch_graph_ms", "torch_check", "ort_cpu_ms", "torch_why",
                      "torch_graph_why") if k in r), flush=True)
            for k in r.get("kernels", []):
                print(f"    {k['ms']:8.4f} ms  x{k['calls']:<3d} {k['name']}")
        rows.append(row)
    _table(rows)
    if a.json:
        a.json.write_text(json.dumps({"gpu": dev.device_name, "rows": rows}, indent=1))
    return 0 if all(r[v]["check"]["ok"] for r in rows for v in ("original", "pruned")) else 1


def _table(rows: list) -> None:
    cols = ("tvm_ms", "torch_ms", "torch_kernel_ms", "torch_graph_ms", "ort_cpu_ms")
    heads = ("TVM", "PyTorch eager", "PyTorch kernels alone", "PyTorch CUDA graph", "ORT CPU")
    print("\n| model | MACs ratio | " + " | ".join(f"{h} original / pruned ms" for h in heads)
          + " | TVM speedup | efficiency |")
    print("|---|---|" + "---|" * len(cols) + "---|---|")
    for r in rows:
        o, p = r["original"], r["pruned"]
        ratio, speed = o["macs"] / p["macs"], o["tvm_ms"] / p["tvm_ms"]
        cells = [f"{o[c]:.3f} / {p[c]:.3f}" if o.get(c) and p.get(c) else "-" for c in cols]
        print(f"| {r['name']} | {ratio:.2f} | " + " | ".join(cells)
              + f" | {speed:.2f} | {speed / ratio:.2f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="prune and compile the pairs here; write DIR")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--models", default="yolov8n,vit")
    b.add_argument("--pair", nargs=2, action="append", metavar=("ORIGINAL", "PRUNED"))
    b.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,..")
    b.add_argument("--ratio", type=float, default=0.5)
    b.add_argument("--workdir", type=Path, default=ROOT / "out" / "bench_cuda",
                   help="where the built-in pairs' ONNX files are cached")
    b.add_argument("--arch", default="sm_90")
    b.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="compile without CUDA graphs (prunec --no-cuda-graph)")
    b.add_argument("--tag", default="", help="appended to each model's name (variants in one DIR)")
    b.add_argument("--no-onnx", dest="with_onnx", action="store_false",
                   help="leave the ONNX files out of DIR (no PyTorch column; a smaller DIR)")
    m = sub.add_parser("measure", help="run DIR's libraries on the GPU here")
    m.add_argument("folder", type=Path)
    m.add_argument("--repeat", type=int, default=10)
    m.add_argument("--json", type=Path)
    m.add_argument("--profile", action="store_true")
    m.add_argument("--profile-top", type=int, default=8)
    a = p.parse_args(argv)
    return build(a) if a.cmd == "build" else measure(a)


if __name__ == "__main__":
    sys.exit(main())

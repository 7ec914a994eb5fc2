"""Which GEMM tile suits which workload on a GPU: every fused function that TVM's dlight Matmul rule
schedules in the given models (convs as implicit GEMMs: I output pixels x J output channels x K
input channels x window), compiled under several tile shapes into one CUDA library, each kernel
timed alone on the GPU.

Why: dlight has one CUDA tile (32 pixels x 64 channels per block of 128 threads). Pruned models
have 8-64 output channels, so most of that tile is padding, and their small late layers launch a
handful of blocks on a 132-SM GPU (docs/cuda.md: YOLOv8n's efficiency on an H200 is 0.48 against
0.83 on the CPU). This measures, per workload, what each candidate tile costs, to choose the tile
from (I, J, K) instead.

  python -m benchmarks.bench_cuda_tiles build --out DIR MODEL.onnx[:NAME=D0,D1,..] ...
      here (no GPU): DIR/tiles.so (+ DIR/tiles.cuda/ when nvcc is here) and DIR/tiles.json
  python benchmarks/bench_cuda_tiles.py measure DIR [--json out.json]
      on the GPU machine (TVM's runtime only): each kernel's best time, and per workload the
      fastest tile beside dlight's

Status: built and compiled here (YOLOv8n original + pruned: 78 workloads x 7 tiles, 69 MB of
library, 11 MB of fatbin, 17 min of nvcc on the shared 2-core host); not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (block_x, block_y, micro_x, micro_y); x tiles I (pixels), y tiles J (channels).
TILES = {
    "i32j64": (8, 16, 4, 4),   # dlight's own CUDA configuration
    "i128j8": (32, 2, 4, 4), "i128j16": (32, 4, 4, 4), "i64j32": (16, 8, 4, 4),
    "i32j32": (8, 8, 4, 4), "i16j32": (4, 8, 4, 4), "i16j16": (8, 8, 2, 2),
}
DEFAULT = "i32j64"


def gemm_dims(func) -> list[int] | None:
    """[batch, I, J, K] of a matmul-like PrimFunc, as dlight's Matmul rule normalises it."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import get_root_block
    from tvm.s_tir.dlight.gpu.matmul import get_index_map, get_reduction_blocks

    sch = s_tir.Schedule(func)
    red = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
    if not red:
        return None
    block = sch.get(red[0])
    maps = get_index_map(block)
    if not maps:
        return None
    return [int(x) for x in maps[0].map_shape([int(iv.dom.extent) for iv in block.iter_vars])]


def build(a) -> int:
    import tvm
    from tvm import tirx
    from tvm.s_tir import dlight as dl

    sys.path.insert(0, str(ROOT))
    from prunec.backend import cuda_kernels as K
    from prunec.backend import frontend
    from prunec.backend.options import BackendOptions
    from prunec.backend.targets import get_target

    opts = BackendOptions(target="cuda", cuda_arch=a.arch)
    tgt = get_target("cuda")
    target = tgt.make_target(tgt.config(opts))
    funcs, meta, seen = {}, {}, set()
    for spec in a.models:
        path, _, shape = spec.partition(":")
        shapes = dict([(shape.split("=")[0], [int(d) for d in shape.split("=")[1].split(",")])]) \
            if shape else {}
        mod, _sig = frontend.import_onnx(path, shapes)
        for gv, f in tgt.fuse(mod, target).functions.items():
            if not isinstance(f, tirx.PrimFunc) or (dims := gemm_dims(f)) is None:
                continue
            text = f.script()
            if text in seen:  # the same workload in both models: once
                continue
            seen.add(text)
            for tile, (bx, by, mx, my) in TILES.items():
                cfg = dl.gpu.Matmul.Config(block_size_x=bx, block_size_y=by, micro_size_x=mx,
                                           micro_size_y=my, micro_size_k=16, vector_size=2,
                                           unroll=256, use_shared=True, storage_align=True)
                rule = dl.gpu.Matmul()
                rule.get_configs = lambda _t, cfg=cfg: cfg
                with target:
                    sch = rule.apply(f, target, False)
                if sch is None:
                    continue
                name = f"k{len(meta)}"
                funcs[name] = sch.mod["main"].with_attr("global_symbol", name)
                meta[name] = {"model": Path(path).name, "func": gv.name_hint, "dims": dims,
                              "tile": tile, "args": [[int(d) for d in p.shape] for p in f.params],
                              "dtypes": [str(p.dtype) for p in f.params]}
    print(f"{len(meta)} kernels ({len(seen)} workloads x {len(TILES)} tiles); compiling",
          flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lib = tvm.compile(tvm.IRModule(funcs), target=target)
    lib.export_library(str(a.out / "tiles.so"))
    K.precompile(lib, a.out / "tiles.so", a.arch)  # kernels beside the library, when nvcc is here
    (a.out / "tiles.json").write_text(json.dumps(meta))
    print(f"built in {time.perf_counter() - t0:.0f} s -> {a.out}")
    return 0


def measure(a) -> int:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_cuda import _load_tvm_cuda

    tvm = _load_tvm_cuda(a.folder)
    dev = tvm.cuda(0)
    meta = json.loads((a.folder / "tiles.json").read_text())
    lib = tvm.runtime.load_module(str(a.folder / "tiles.so"))
    times: dict[str, float | None] = {}
    for name, m in meta.items():
        args = [tvm.runtime.tensor(np.random.default_rng(0).uniform(-1, 1, s).astype(d), dev)
                for s, d in zip(m["args"], m["dtypes"])]
        try:
            fte = lib.time_evaluator(name, dev, number=20, repeat=3, min_repeat_ms=5)
            times[name] = min(fte(*args).results) * 1e6
        except Exception as e:  # noqa: BLE001 - a tile that does not launch: report, go on
            times[name] = None
            print(f"{name} ({m['tile']}, {m['func']}): {str(e).splitlines()[0][:100]}")
    by_work: dict[str, dict] = {}
    for name, m in meta.items():
        w = by_work.setdefault(f"{m['model']}:{m['func']}", {"dims": m["dims"], "us": {}})
        w["us"][m["tile"]] = times[name]
    print("| workload | I x J x K | dlight us | best tile | best us | gain |")
    print("|---|---|---|---|---|---|")
    total = [0.0, 0.0]
    for key, w in sorted(by_work.items()):
        ok = {t: us for t, us in w["us"].items() if us}
        if DEFAULT not in ok:
            continue
        best = min(ok, key=ok.get)
        total[0] += ok[DEFAULT]
        total[1] += ok[best]
        _b, i, j, k = w["dims"]
        print(f"| {key} | {i} x {j} x {k} | {ok[DEFAULT]:.1f} | {best} | {ok[best]:.1f} | "
              f"{ok[DEFAULT] / ok[best]:.2f} |")
    print(f"\nsum over workloads (each once): dlight {total[0]:.0f} us, best tiles {total[1]:.0f} us")
    if a.json:
        a.json.write_text(json.dumps(by_work, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("models", nargs="+", metavar="MODEL.onnx[:NAME=D0,D1,..]")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--arch", default="sm_90")
    m = sub.add_parser("measure")
    m.add_argument("folder", type=Path)
    m.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    return build(a) if a.cmd == "build" else measure(a)


if __name__ == "__main__":
    sys.exit(main())

"""TVM vs ONNX Runtime, original vs pruned, on x86 (this host).

For each (original, pruned) ONNX pair: TVM latency of both (same compiler settings, same
tuning budget), ONNX Runtime latency of both (same threads), speedups, and whether TVM's
outputs match ONNX Runtime. Done at 0 tuning trials (prunec's fast default schedules) and,
with --budget N, again after tuning with N trials per pair (N/2 per model).

  python benchmarks/bench_tvm.py out/models/resnet18.onnx out/demo/resnet18.pruned.onnx \
      [--pair A.onnx B.onnx ...] [--budget 64] [--threads 2] [--shape input.1=1,3,224,224]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunec import backend  # noqa: E402


def _shapes(model_path: Path, overrides: dict[str, list[int]]) -> dict[str, list[int]]:
    """Static input shapes: --shape overrides, else the model's, symbolic dims set to 1."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    out = {}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = overrides.get(vi.name, dims)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("original", type=Path, nargs="?")
    p.add_argument("pruned", type=Path, nargs="?")
    p.add_argument("--pair", nargs=2, action="append", type=Path, default=[],
                   metavar=("ORIGINAL", "PRUNED"), help="another pair (repeatable)")
    p.add_argument("--budget", type=int, default=0,
                   help="also measure after tuning with this many trials per pair")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,..")
    p.add_argument("--threads", type=int)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--tuning-db", help="default: a fresh temporary database")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    pairs = ([(a.original, a.pruned)] if a.original and a.pruned else []) + \
        [tuple(x) for x in a.pair]
    if not pairs:
        p.error("give ORIGINAL PRUNED and/or --pair ORIGINAL PRUNED")
    overrides = {}
    for s in a.shape:
        name, _, dims = s.partition("=")
        overrides[name] = [int(d) for d in dims.split(",")]
    db = a.tuning_db or tempfile.mkdtemp(prefix="prunec-bench-db-")
    budgets = [0] + ([a.budget] if a.budget > 0 else [])

    ap = argparse.ArgumentParser()
    ap.add_argument("--target")
    backend.add_arguments(ap)
    log = print if a.verbose else (lambda m: None)
    rows = []
    for orig, pruned in pairs:
        for budget in budgets:
            argv2 = ["--target", "x86", "--tune-trials", str(budget), "--tuning-db", db,
                     "--repeat", str(a.repeat)] + (["--threads", str(a.threads)]
                                                   if a.threads else [])
            args = ap.parse_args(argv2)
            with tempfile.TemporaryDirectory() as out:
                r = backend.run(args, orig, pruned, _shapes(orig, overrides), Path(out), log)
            mo, mp = r["models"]["original"], r["models"]["pruned"]
            rows.append({
                "pair": f"{orig.name} / {pruned.name}", "trials": budget,
                "tvm_o": mo["latency_ms"]["median"], "tvm_p": mp["latency_ms"]["median"],
                "ort_o": mo["onnxruntime_latency_ms"]["median"],
                "ort_p": mp["onnxruntime_latency_ms"]["median"],
                "speedup": r["speedup"], "ort_speedup": r["onnxruntime_speedup"],
                "ok": mo["output_check"]["ok"] and mp["output_check"]["ok"],
                "tune_s": r["tuning"]["time_s"], "threads": r["compiler"]["threads"]})
            print_row(rows[-1], header=len(rows) == 1)
    print(f"(latency: median ms over {a.repeat} samples; threads={rows[0]['threads']}; "
          f"tuning db {db})")
    return 0


def print_row(r, header=False):
    if header:
        print(f"{'pair':<40} {'trials':>6} {'tune s':>7} {'TVM orig':>9} {'TVM prun':>9} "
              f"{'ORT orig':>9} {'ORT prun':>9} {'TVM spd':>8} {'ORT spd':>8} "
              f"{'TVM/ORT o':>9} {'TVM/ORT p':>9} {'match':>5}")
    print(f"{r['pair'][:40]:<40} {r['trials']:>6} {r['tune_s']:>7.0f} {r['tvm_o']:>9.2f} "
          f"{r['tvm_p']:>9.2f} {r['ort_o']:>9.2f} {r['ort_p']:>9.2f} {r['speedup']:>7.2f}x "
          f"{r['ort_speedup']:>7.2f}x {r['ort_o'] / r['tvm_o']:>8.2f}x "
          f"{r['ort_p'] / r['tvm_p']:>8.2f}x {'yes' if r['ok'] else 'NO':>5}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Sparsity: TVM latency dense vs block-sparse per layer and per model, and accuracy / fidelity.

    python benchmarks/bench_sparsity.py kernels                 # one layer alone: crossover per block shape
    python benchmarks/bench_sparsity.py models                  # whole models at 50/70/90% block sparsity
    PYTHONPATH=. python benchmarks/bench_sparsity.py accuracy   # Fashion-MNIST (apt: dataset-fashion-mnist)

Latencies: prunec's x86 build (fast default schedules) of each version, timed alone, best of
several samples of >= 40 ms (layers) or interleaved rounds (models, as prunec measures).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import prunec  # noqa: E402
from prunec.passes.sparsify import SparsityOptions, sparsify  # noqa: E402
from prunec.sparsity import Pattern, make_mask  # noqa: E402


def _target(threads: int):
    from prunec.backend import tvm_target

    return tvm_target("x86", threads=threads)


# --------------------------------------------------------------------------- one layer
LAYERS = [("conv1x1 256->256 @28x28", "conv1x1", 256, 256, 784),
          ("conv1x1 512->512 @14x14", "conv1x1", 512, 512, 196),
          ("matmul 768->3072, 197 tokens", "matmul", 3072, 768, 197)]


def kernels(args) -> None:
    from prunec.backend import sparse as S
    from prunec.backend.cpu.facts import vector_lanes

    from prunec.backend import measure as M

    target = _target(args.threads)
    lanes = vector_lanes(target)
    M.set_tvm_threads(args.threads)
    blocks = [(1, 8), (8, 1), (16, 1), (4, 4), (1, 1)]
    shares = [0.5, 0.7, 0.8, 0.9, 0.95]
    print(f"target {target.attrs.get('mcpu')}, {args.threads} threads, {lanes} lanes; bias + ReLU fused in both")
    print("| layer | block | sparsity | dense us | sparse us | speedup |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for label, kind, n, k, p in LAYERS[:1] if args.quick else LAYERS:
        for r, c in blocks[:2] if args.quick else blocks:
            for s in shares[-2:] if args.quick else shares:
                w = rng.standard_normal((n, k)).astype(np.float32)
                pat = Pattern("block", rows=r, cols=c) if r * c > 1 else Pattern("unstructured")
                w = np.where(make_mask(np.abs(w), pat, s), w, 0).astype(np.float32)
                x_shape = [1, k, 28 if p == 784 else 14, 28 if p == 784 else 14] if kind == "conv1x1" else [1, p, k]
                plan = S._Plan(0, kind, w, None, None, rng.standard_normal(n).astype(np.float32), True, x_shape)
                plan.block = (r, c, 1.0)
                d, sp = S._time_layer(plan, target, lanes, rounds=args.rounds)
                print(f"| {label} | {r}x{c} | {s:.2f} | {d * 1e6:.0f} | {sp * 1e6:.0f} | {d / sp:.2f}x |", flush=True)


# --------------------------------------------------------------------------- whole models
def _models(names: list[str]) -> dict:
    from models.zoo import build

    specs = {"resnet50": lambda: build("resnet50", width=32, image=112),
             "vit": lambda: build("vit", image=224, patch=16, dim=192, heads=3, depth=2),
             "yolov8": lambda: build("yolov8")}
    return {n: specs[n]() for n in names}


def _calib(model: prunec.Model, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in model.input_shapes.items():
        x = rng.standard_normal((n, *shape[1:])).astype(np.float32)
        out[name] = (0.5 + (x + np.roll(x, 1, -1) + np.roll(x, 1, -2)) / 3).astype(np.float32)
    return out


def models(args) -> None:
    import onnx

    from prunec.backend import measure as M
    from prunec.backend import sparse as S
    from prunec.backend.build import build
    from prunec.backend.targets import get_target
    from prunec.backend.cpu.facts import vector_lanes
    from prunec.backend.frontend import import_onnx
    from prunec.recovery.data import from_arrays
    from prunec.recovery.scoring import output_error

    target = _target(args.threads)
    lanes = vector_lanes(target)
    M.set_tvm_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_sparsity."))
    rows = []
    for name, proto in _models(args.models.split(",")).items():
        path = tmp / f"{name}.onnx"
        onnx.save(proto, path)
        model = prunec.load(path)
        shapes = model.input_shapes
        mod, sig = import_onnx(path, shapes)
        dense_lib = get_target("x86").export(build(mod, target, "x86"), tmp / f"{name}.dense.so")
        calib = from_arrays(_calib(model, 64, 0), model)
        held = from_arrays(_calib(model, 16, 1), model)
        for s in [float(v) for v in args.sparsity.split(",")]:
            opts = SparsityOptions(sparsity=s, pattern=args.pattern, criterion="magnitude", reconstruct=False)
            plain, res = sparsify(model, opts)
            err_plain = output_error(model, plain, held)
            err_rec = float("nan")
            if args.reconstruct:
                rebuilt, _ = sparsify(model, SparsityOptions(sparsity=s, pattern=args.pattern, reconstruct=True), calib)
                err_rec = output_error(model, rebuilt, held)
            sp_path = tmp / f"{name}.{s}.onnx"
            prunec.save(plain, sp_path)
            smod, _ = import_onnx(sp_path, shapes)
            t0 = time.perf_counter()
            smod, records = S.rewrite(smod, target, lanes)
            decide_s = time.perf_counter() - t0
            sparse_lib = get_target("x86").export(build(smod, target, "x86"), tmp / f"{name}.{s}.so")
            inputs = M.make_inputs(sig)
            samplers = {"dense": M.tvm_sampler(dense_lib, sig, inputs, min_repeat_ms=100)[0],
                        "sparse": M.tvm_sampler(sparse_lib, sig, inputs, min_repeat_ms=100)[0]}
            st = M.timed_rounds(samplers, repeat=3, rounds=args.rounds)
            _, outs = M.tvm_run_and_time(sparse_lib, sig, inputs, 1, min_repeat_ms=1)
            from prunec.runtime import run_model

            ref = run_model(plain.to_proto(), inputs)
            check = M.compare(outs, [np.asarray(r) for r in ref])
            print(f"\n## {name} at {int(100 * s)}% {args.pattern} (magnitude), {res.to_dict()['sparsity']:.3f} of "
                  f"{res.weights:,} weights zero; kernel choice took {decide_s:.0f}s")
            print("| layer | op | n x k | p | zeros | kernel | dense us | sparse us | why |")
            print("|---|---|---|---|---|---|---|---|---|")
            for r in records:
                print(f"| {r['layer']} | {r['op']} | {r['n']}x{r['k']} | {r['p']} | {100 * r['sparsity']:.0f}% | "
                      f"{r['kernel']} | {r.get('dense_us', float('nan')):.0f} | {r.get('sparse_us', float('nan')):.0f} | "
                      f"{r['why']} |")
            d, sp = st["dense"]["median"], st["sparse"]["median"]
            rows.append((name, s, len(records), sum(r["kernel"] != "dense" for r in records), d, sp, err_plain,
                         err_rec, check.get("max_rel", float("nan"))))
            print(f"whole model: dense {d:.3f} ms, sparse {sp:.3f} ms ({d / sp:.2f}x); TVM vs ONNX Runtime on the "
                  f"sparse model max rel {check.get('max_rel', float('nan')):.1e}", flush=True)
    print("\n| model | sparsity | candidate layers | BSR layers | dense ms | sparse ms | speedup | "
          "rel. output error (mask only) | with reconstruction | TVM vs ORT |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s, cand, used, d, sp, e0, e1, mr in rows:
        print(f"| {name} | {int(100 * s)}% | {cand} | {used} | {d:.3f} | {sp:.3f} | {d / sp:.2f}x | {e0:.3g} | "
              f"{e1:.3g} | {mr:.1e} |")


# --------------------------------------------------------------------------- accuracy
def accuracy(args) -> None:
    from benchmarks.bench_accuracy import accuracy as acc_of
    from benchmarks.bench_accuracy import calibration
    from models.fashion_mnist import MODEL_PATH, available, load_split
    from prunec.recovery.data import load_calib

    if not available():
        print("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist", file=sys.stderr)
        raise SystemExit(1)
    model = prunec.load(MODEL_PATH)
    xte, yte = load_split("test")
    xtr, _ = load_split("train")
    base = acc_of(model, xte, yte)
    print(f"Fashion-MNIST CNN: dense test accuracy {100 * base:.2f}% ({len(yte)} images); "
          f"{args.samples} unlabeled training images per draw, seeds {args.seeds}; no training")
    settings = [("unstructured", 0.5), ("2:4", 0.5), ("unstructured", 0.7), ("block:1x8", 0.5), ("block:1x8", 0.7)]
    if args.quick:
        settings = settings[:2]
    print("| pattern | sparsity | criterion | reconstruction | accuracy % (per seed) | mean delta | worst delta |")
    print("|---|---|---|---|---|---|---|")
    seeds = [int(s) for s in args.seeds.split(",")]
    for pattern, s in settings:
        for crit, rec in [("magnitude", False), ("wanda", False), ("wanda", True)]:
            accs = []
            for seed in seeds if crit == "wanda" else seeds[:1]:
                data = load_calib(calibration(xtr, args.samples, seed), model) if crit == "wanda" else None
                out, res = sparsify(model, SparsityOptions(sparsity=s, pattern=pattern, criterion=crit,
                                                           reconstruct=rec), data)
                accs.append(acc_of(out, xte, yte))
            deltas = [100 * (a - base) for a in accs]
            print(f"| {pattern} | {res.to_dict()['sparsity']:.2f} | {crit} | {'OBS' if rec else '-'} | "
                  f"{' / '.join(f'{100 * a:.2f}' for a in accs)} | {np.mean(deltas):+.2f} | {min(deltas):+.2f} |",
                  flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="*", default=["kernels", "models", "accuracy"],
                    choices=["kernels", "models", "accuracy"])
    ap.add_argument("--threads", type=int, default=1,
                    help="TVM threads (default 1: on a loaded shared host 2-thread pools stall on each other)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default="resnet50,vit,yolov8")
    ap.add_argument("--sparsity", default="0.5,0.7,0.9")
    ap.add_argument("--pattern", default="block:1x8")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (default 3)")
    ap.add_argument("--reconstruct", action="store_true", help="models: also the fidelity with OBS reconstruction")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    for what in args.what:
        {"kernels": kernels, "models": models, "accuracy": accuracy}[what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

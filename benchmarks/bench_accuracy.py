"""Accuracy after pruning without retraining: Fashion-MNIST test accuracy of the committed small CNN.

Calibration: 256 unlabeled images from the *training* split; accuracy on the 10,000 test images.
Needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist).

    python -m benchmarks.bench_accuracy                    # full table (tens of minutes on 2 cores)
    python -m benchmarks.bench_accuracy --quick            # a few rows
    python -m benchmarks.bench_accuracy --seeds 0,1,2      # the 2x-MACs rows per calibration draw, mean/min
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import prunec
from models.fashion_mnist import INPUT_NAME, MODEL_PATH, available, load_split
from prunec.pipeline import PruneOptions, prune_model
from prunec.runtime import session

DATA_FREE = ["l1", "l2", "bn", "random"]
DATA = ["act", "apoz", "output", "output-var", "lsq"]


def accuracy(model: prunec.Model, x: np.ndarray, y: np.ndarray) -> float:
    sess = session(model.to_proto())
    pred = np.concatenate([sess.run(None, {INPUT_NAME: x[i:i + 1000]})[0].argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).mean())


def calibration(xtr: np.ndarray, n: int, seed: int) -> dict:
    """n unlabeled training images drawn with this seed (seed 0: the images every table uses)."""
    return {INPUT_NAME: xtr[np.random.default_rng(seed).choice(len(xtr), n, replace=False)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int, default=256, help="calibration images (default 256)")
    ap.add_argument("--steps", type=int, default=3, help="K for the multi-round rows (default 3)")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--seeds", help="comma-separated calibration draws: only the --target-macs 0.5 rows, per seed")
    args = ap.parse_args()
    if not available():
        print("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 1
    xte, yte = load_split("test")
    xtr, _ = load_split("train")
    calib = calibration(xtr, args.samples, 0)
    model = prunec.load(MODEL_PATH)
    base = accuracy(model, xte, yte)
    print(f"model {MODEL_PATH.name}: test accuracy {base * 100:.2f}% ({len(yte)} images); "
          f"calibration: {args.samples} unlabeled training images; round-to {args.round_to}\n")

    def run(label: str, **kw) -> float:
        t0 = time.perf_counter()
        opts = PruneOptions(round_to=args.round_to, **kw)
        pruned, report, plan = prune_model(model, opts)
        acc = accuracy(pruned, xte, yte)
        macs = report["macs"]["before"] / report["macs"]["after"]
        kept = "/".join(str(g.size - len(plan.groups.get(g.id, []))) for g in prunec.analyze(model).prunable_groups)
        how = (report.get("allocation") or {}).get("method", "-")
        print(f"| {label:<34} | {report['criterion']:<10} | {how:<6} | {kept:<11} | {macs:5.2f}x | {acc * 100:6.2f} | "
              f"{(acc - base) * 100:+6.2f} | {time.perf_counter() - t0:5.1f} |", flush=True)
        return acc - base

    print("| setting                            | criterion  | alloc  | kept        | MACs   | acc %  | delta  | time s |")
    print("|------------------------------------|------------|--------|-------------|--------|--------|--------|--------|")
    if args.seeds:
        rows = {"default (auto)": {}, "one round (--steps 1)": dict(steps=1), "default, mirror 3": dict(calib_mirror=3),
                "lsq, probe": dict(criterion="lsq", allocation="probe"),
                "output, probe": dict(criterion="output", allocation="probe")}
        deltas: dict[str, list[float]] = {k: [] for k in rows}
        for seed in (int(s) for s in args.seeds.split(",")):
            c = calibration(xtr, args.samples, seed)
            for label, kw in rows.items():
                deltas[label].append(run(f"target-macs 0.5 {label}, seed {seed}", target_macs=0.5, calib=c, **kw))
        print()
        for label, d in deltas.items():
            print(f"target-macs 0.5 {label}: delta mean {np.mean(d) * 100:+.2f}, worst {min(d) * 100:+.2f} "
                  f"over seeds {args.seeds}")
        return 0
    if args.quick:
        for recon in (False, True):
            run(f"ratio 0.3 {'recon' if recon else 'no recon'}", ratio=0.3, criterion="output", calib=calib,
                reconstruct=recon)
        run("target-macs 0.5 recon, probe", target_macs=0.5, criterion="output", calib=calib, allocation="probe")
        run("target-macs 0.5 default (auto)", target_macs=0.5, calib=calib)
        return 0
    for ratio in (0.3, 0.5, 0.7):
        for crit in DATA_FREE + DATA:
            run(f"ratio {ratio} no recon", ratio=ratio, criterion=crit, calib=calib, reconstruct=False)
            run(f"ratio {ratio} recon", ratio=ratio, criterion=crit, calib=calib, reconstruct=True)
        for crit in ("l2", "output", "output-var", "lsq"):
            run(f"ratio {ratio} recon, {args.steps} steps", ratio=ratio, criterion=crit, calib=calib,
                reconstruct=True, steps=args.steps)
    for target in (0.5, 0.3):
        for crit in ("l2", "act", "output", "output-var", "lsq"):
            run(f"target-macs {target} no recon", target_macs=target, criterion=crit, calib=calib, reconstruct=False)
            run(f"target-macs {target} recon, probe", target_macs=target, criterion=crit, calib=calib,
                allocation="probe")
            run(f"target-macs {target} recon, {args.steps} steps, probe", target_macs=target, criterion=crit,
                calib=calib, steps=args.steps, allocation="probe")
        for crit in ("output", "lsq"):
            run(f"target-macs {target} recon, refit", target_macs=target, criterion=crit, calib=calib,
                allocation="refit")
        run(f"target-macs {target} default (auto)", target_macs=target, calib=calib)
        run(f"target-macs {target} data-free (no calib)", target_macs=target, criterion="l2")
    return 0


if __name__ == "__main__":
    sys.exit(main())

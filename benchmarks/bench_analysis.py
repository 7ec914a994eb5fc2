"""Analysis and shrink time vs graph size (ResNet-50-sized graph and scaled variants).

    python benchmarks/bench_analysis.py [--full-only]
Prints one line per graph: nodes, params, load, analyze, plan, shrink, verify (seconds).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import prunec  # noqa: E402
from models.resnet import resnet50_full, resnet_scaled  # noqa: E402
from prunec.passes.prune import build_plan  # noqa: E402
from prunec.pipeline import PruneOptions  # noqa: E402
from prunec.passes import shrink  # noqa: E402


def measure(name: str, proto) -> None:
    t0 = time.perf_counter()
    model = prunec.from_proto(proto)
    t1 = time.perf_counter()
    analysis = prunec.analyze(model)
    t2 = time.perf_counter()
    plan = build_plan(analysis, PruneOptions(ratio=0.5))
    t3 = time.perf_counter()
    pruned = shrink(analysis, plan)
    t4 = time.perf_counter()
    prunec.verify(model, pruned)
    t5 = time.perf_counter()
    print(f"{name:<28} {len(model.graph.nodes):>6} {prunec.macs.graph_params(model.graph):>11,} "
          f"{t1 - t0:>7.2f} {t2 - t1:>8.2f} {t3 - t2:>6.2f} {t4 - t3:>7.2f} {t5 - t4:>7.2f}   "
          f"analyze+plan+shrink {t4 - t1:.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-only", action="store_true")
    args = ap.parse_args()
    print(f"{'graph':<28} {'nodes':>6} {'params':>11} {'load':>7} {'analyze':>8} {'plan':>6} {'shrink':>7} {'verify':>7}")
    measure("resnet50 (224, 25.6M)", resnet50_full())
    if args.full_only:
        return
    for n in (1, 2, 4, 8, 16, 32):
        measure(f"resnet blocks [{n},{n},{n},{n}] w16", resnet_scaled(blocks=(n, n, n, n), width=16, image=64))


if __name__ == "__main__":
    main()

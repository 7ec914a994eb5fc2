"""`prunec sweep`: what each MACs budget costs, before choosing one.

For a range of `--target-macs` shares the model is pruned and refitted exactly as `prunec MODEL
--calib C --target-macs F --recover refit` would, and each point reports the MACs and parameters
left, the held-out output error against the original (relative squared error on the calibration
samples held out from fitting), the ONNX Runtime latency, and a user metric when one is given
(Python API: `metric(model) -> float`, e.g. accuracy on a labelled set). What does not depend on the
budget (statistics, importance scores, allocation probes) is measured once for all points.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import PrunecError
from .graph import Model
from .macs import graph_macs, graph_params
from .options import PruneOptions

DEFAULT_TARGETS = (0.9, 0.8, 0.67, 0.5, 0.4)


@dataclass
class SweepPoint:
    target_macs: float  # 1.0: the original model
    macs: int
    params: int
    macs_reduction: float  # original MACs / these MACs
    output_error: float  # held-out relative squared output error vs the original (0 for it)
    latency_ms: float | None = None  # ONNX Runtime on the CPU, median of 5 samples
    metric: float | None = None
    seconds: float = 0.0  # time this point took (pruning and refit; the shared work goes to the first)


def ort_latency_ms(model: Model, threads: int = 1, repeat: int = 5) -> float:
    """Median latency of one run of the model in ONNX Runtime on the CPU, inputs of the analysed shapes."""
    import tempfile

    from .backend.measure import ort_sampler
    from .runtime import random_inputs

    proto = model.to_proto()
    with tempfile.TemporaryDirectory(prefix="prunec-sweep-") as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(proto.SerializeToString())
        sample, _ = ort_sampler(path, random_inputs(proto, model.input_shapes), threads, min_repeat_ms=100)
        return float(np.median(sample(repeat))) * 1e3


def sweep(model: Model, opts: PruneOptions, targets=DEFAULT_TARGETS, *,
          metric: Callable[[Model], float] | None = None, latency: bool = True, threads: int = 1,
          log=lambda s: None) -> list[SweepPoint]:
    """The original model's point, then one per target share (largest first). `opts` must name
    calibration data; its target_macs is replaced by each target, recovery is the least-squares refit."""
    from .dependency import analyze
    from .passes.prune import _Calibrated

    if opts.calib is None:
        raise PrunecError("prunec sweep needs calibration data (--calib FILE.npz or an image folder): "
                          "the output error of each budget is measured on it")
    targets = sorted({float(t) for t in targets}, reverse=True)
    for t in targets:
        if not 0.0 < t < 1.0:
            raise PrunecError(f"sweep target {t}: must be in (0, 1) (a share of the original MACs to keep)")
    if not targets:
        raise PrunecError("sweep: give at least one target share (e.g. --targets 0.8,0.67,0.5)")
    recover = "none" if opts.recover == "none" else "refit"
    base = replace(opts, target_macs=targets[0], ratio=0.0, recover=recover)
    macs0, params0 = graph_macs(model.graph, model.shapes), graph_params(model.graph)
    points = [SweepPoint(1.0, macs0, params0, 1.0, 0.0,
                         ort_latency_ms(model, threads) if latency else None,
                         metric(model) if metric is not None else None)]
    log(f"sweep: original {macs0 / 1e6:.1f} MMACs" + (f", {points[0].latency_ms:.2f} ms" if latency else ""))
    runs = _Calibrated(model, base, log)  # keeps the data, scores and probes between the points
    analysis = analyze(model, exclude=opts.exclude)
    for t in targets:
        t0 = time.perf_counter()
        runs.opts = replace(base, target_macs=t)
        runs.started = t0  # each point has the recovery budget (it bounds --steps auto's rounds)
        pruned, _, entries = runs.run(analysis)
        macs = graph_macs(pruned.graph, pruned.shapes)
        point = SweepPoint(t, macs, graph_params(pruned.graph), macs0 / max(macs, 1),
                           float(entries["calibration"]["output_error"]),
                           ort_latency_ms(pruned, threads) if latency else None,
                           metric(pruned) if metric is not None else None, time.perf_counter() - t0)
        points.append(point)
        log(f"sweep: target {t}: {point.macs_reduction:.2f}x fewer MACs, held-out output error "
            f"{point.output_error:.4g}" + (f", {point.latency_ms:.2f} ms" if latency else ""))
    return points


def format_table(points: list[SweepPoint]) -> str:
    has_metric = any(p.metric is not None for p in points)
    has_latency = any(p.latency_ms is not None for p in points)
    head = ["target MACs", "MACs", "fewer MACs", "params", "held-out output error"]
    head += ["ORT latency ms"] * has_latency + ["metric"] * has_metric + ["time s"]
    rows = []
    for p in points:
        row = ["original" if p.target_macs == 1.0 else f"{p.target_macs:g}", f"{p.macs / 1e6:.1f}M",
               f"{p.macs_reduction:.2f}x", f"{p.params / 1e6:.2f}M", f"{p.output_error:.4g}"]
        if has_latency:
            row.append("" if p.latency_ms is None else f"{p.latency_ms:.2f}")
        if has_metric:
            row.append("" if p.metric is None else f"{p.metric:.4g}")
        row += [f"{p.seconds:.0f}" if p.target_macs != 1.0 else ""]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head)] + [line(r) for r in rows])


def plot(points: list[SweepPoint], path: str | Path) -> Path:
    """Held-out output error (and the metric) against MACs and latency, as a PNG (needs matplotlib:
    pip install 'prunec[report]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PrunecError("--plot needs matplotlib: pip install 'prunec[report]'") from None
    has_latency = any(p.latency_ms is not None for p in points)
    fig, axes = plt.subplots(1, 2 if has_latency else 1, figsize=(10 if has_latency else 5.5, 4), squeeze=False)
    xs = [("MACs (millions)", [p.macs / 1e6 for p in points])]
    if has_latency:
        xs.append(("ONNX Runtime latency (ms)", [p.latency_ms for p in points]))
    for ax, (label, x) in zip(axes[0], xs):
        ax.plot(x, [p.output_error for p in points], "o-", color="tab:blue")
        for xi, p in zip(x, points):
            ax.annotate("orig" if p.target_macs == 1.0 else f"{p.target_macs:g}", (xi, p.output_error),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out output error", color="tab:blue")
        ax.grid(alpha=0.3)
        if any(p.metric is not None for p in points):
            twin = ax.twinx()
            twin.plot(x, [p.metric for p in points], "s--", color="tab:orange")
            twin.set_ylabel("metric", color="tab:orange")
    fig.suptitle("prunec sweep: cost of each MACs budget (least-squares refit, no training)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def to_json(points: list[SweepPoint]) -> list[dict]:
    return [asdict(p) for p in points]

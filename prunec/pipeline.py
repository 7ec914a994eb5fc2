"""The main job: load -> passes (fold BatchNorm, prune, ...) -> verify -> write (-> compile)."""
from __future__ import annotations

import time
from pathlib import Path

from .errors import PrunecError
from .graph import Model, load, save
from .macs import graph_macs, graph_params
from .options import PruneOptions  # noqa: F401  (callers import it from here)
from .plan import Plan
from .report import coverage, groups_summary
from .verify import verify


def pipeline_passes(opts: PruneOptions, log=lambda s: None) -> list:
    """The passes a run applies, in order."""
    from prunec.passes import FoldBatchNorm, Prune

    passes = [FoldBatchNorm()] if opts.fold_bn else []
    passes.append(Prune(opts, log))
    return passes


def prune_model(model: Model, opts: PruneOptions, log=lambda s: None) -> tuple[Model, dict, Plan]:
    """Prune an in-memory model; returns the verified pruned model and the report (no files)."""
    from prunec.passes import PruneResult, run_passes

    t0 = time.perf_counter()
    if not 0.0 <= opts.ratio < 1.0:
        raise PrunecError(f"--ratio {opts.ratio}: must be in [0, 1)")
    pruned, results = run_passes(model, pipeline_passes(opts, log))
    pruning = next(r for r in results if isinstance(r, PruneResult))
    analysis, plan = pruning.analysis, pruning.plan
    t_passes = time.perf_counter()
    checks = verify(model, pruned)
    t_verify = time.perf_counter()
    summary = groups_summary(analysis)
    pruned_ids = set(plan.groups)
    report = {
        "input": model.source,
        "input_shapes": model.input_shapes,
        "ratio": opts.ratio,
        "criterion": f"plan {opts.plan_in}" if opts.plan_in else pruning.criterion,
        "round_to": plan.meta.get("round_to"),
        "params": {"before": graph_params(model.graph), "after": graph_params(pruned.graph)},
        "macs": {"before": graph_macs(model.graph, model.shapes), "after": graph_macs(pruned.graph, pruned.shapes)},
        "groups": {
            "total": len(summary),
            "prunable": sum(g["prunable"] for g in summary),
            "pruned": len(pruned_ids),
            "channels_removed": plan.removed_channels,
            "skipped": [{"id": g["id"], "size": g["size"], "reasons": g["reasons"]}
                        for g in summary if not g["prunable"]],
            "approximate": [{"id": g["id"], "why": g["approximate"]} for g in summary
                            if g["approximate"] and g["id"] in pruned_ids],
        },
        "coverage": coverage(analysis),
        "unsupported_ops": analysis.unsupported,
        "verify": checks,
        "notes": model.notes + [n for r in results for n in r.notes],
        **pruning.entries,
        "timing_s": {**pruning.timing, "verify": t_verify - t_passes, "total": t_verify - t0},
    }
    return pruned, report, plan


def prune_file(path: str | Path, outdir: str | Path, opts: PruneOptions, log=print) -> dict:
    """Prune a model file; writes OUTDIR/<stem>.pruned.onnx and OUTDIR/report.json."""
    path, outdir = Path(path), Path(outdir)
    model = load(path, opts.input_shapes)
    pruned, report, plan = prune_model(model, opts, log)
    out_path = outdir / f"{path.stem}.pruned.onnx"
    if out_path.resolve() == path.resolve():
        raise PrunecError(f"output {out_path} would overwrite the input; choose another -o")
    save(pruned, out_path)
    report["output"] = str(out_path)
    if opts.plan_out:
        plan.save(opts.plan_out)
        report["plan"] = str(opts.plan_out)
    write_report(report, outdir)
    return report


def write_report(report: dict, outdir: Path) -> Path:
    import json
    import os
    import tempfile

    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "report.json"
    fd, tmp = tempfile.mkstemp(prefix=".report.", dir=outdir)
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=1, default=float)
        f.write("\n")
    os.replace(tmp, path)
    return path

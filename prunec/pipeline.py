"""The main job: load -> analyze -> score -> plan -> shrink -> verify -> write (-> compile)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import importance
from .dependency import analyze
from .errors import PrunecError
from .graph import Model, load, save
from .macs import graph_macs, graph_params
from .plan import Plan, make_plan
from .report import coverage, groups_summary
from .verify import verify

# Channel multiples that suit each target's vector width / matrix units.
DEFAULT_ROUND_TO = {"none": 8, "x86": 16, "arm": 8, "cuda": 8}


@dataclass
class PruneOptions:
    ratio: float = 0.5
    criterion: str = "auto"  # auto: l2 without calibration data, a data criterion with it
    round_to: int | None = None
    min_keep: int = 1
    global_ranking: bool = False
    exclude: list[str] = field(default_factory=list)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    fold_bn: bool = False
    plan_in: str | None = None
    plan_out: str | None = None
    target: str = "none"
    # calibration and accuracy recovery (prunec/calibrated.py)
    calib: object = None  # .npz path, image folder, dict of arrays, iterable of input dicts, CalibData
    preprocess: str | None = None  # for image folders, e.g. "size=320,mean=0,std=255,layout=NCHW,rgb"
    calib_samples: int | None = 512
    calib_mirror: int | None = None  # also use every sample mirrored along this input axis (3: NCHW width)
    target_macs: float | None = None  # share of the original MACs to keep (0.5 = 2x fewer)
    protect: bool | None = None  # floors for stem/head/tiny groups; default: on with target_macs
    protect_keep: float | None = None  # stem/head floor share; default 0.5 with a refit allocation, else 0.75
    reconstruct: bool | None = None  # default: on when calibration data is given
    recon_mode: str = "auto"
    steps: int = 1
    sensitivity_samples: int = 16
    allocation: str = "auto"  # --target-macs: probe (sensitivity curves), refit (search with refits), auto


def _round_to(opts: PruneOptions) -> int:
    return opts.round_to if opts.round_to is not None else DEFAULT_ROUND_TO.get(opts.target, 8)


def build_plan(analysis, opts: PruneOptions) -> Plan:
    if opts.plan_in:
        return Plan.load(opts.plan_in)
    criterion = "l2" if opts.criterion == "auto" else opts.criterion
    scores = importance.score_groups(analysis, criterion)
    return make_plan(analysis, scores, opts.ratio, round_to=_round_to(opts), min_keep=opts.min_keep,
                     global_ranking=opts.global_ranking, meta={"criterion": criterion})


def prune_model(model: Model, opts: PruneOptions, log=lambda s: None) -> tuple[Model, dict, Plan]:
    """Prune an in-memory model; returns the verified pruned model and the report (no files)."""
    from prunec.passes import fold_batchnorm, shrink

    t0 = time.perf_counter()
    if not 0.0 <= opts.ratio < 1.0:
        raise PrunecError(f"--ratio {opts.ratio}: must be in [0, 1)")
    notes = []
    if opts.fold_bn:
        model, n = fold_batchnorm(model)
        notes.append(f"folded {n} BatchNormalization nodes into convolutions")
    t_load = time.perf_counter()
    analysis = analyze(model, exclude=opts.exclude)
    t_analyze = time.perf_counter()
    from .calibrated import calibrated_prune, wants_calibrated_flow

    if wants_calibrated_flow(opts):  # calibration data, a MACs budget or several rounds
        pruned, plan, extra = calibrated_prune(model, opts, _round_to(opts), log)
        t_plan = time.perf_counter()
    else:
        plan = build_plan(analysis, opts)
        t_plan = time.perf_counter()
        pruned = shrink(analysis, plan)
        extra = {"criterion": plan.meta.get("criterion", opts.criterion),
                 "calibration": {"used": False, "note": "no calibration data: data-free criterion, no reconstruction"}}
    t_shrink = time.perf_counter()
    criterion = extra.pop("criterion")
    checks = verify(model, pruned)
    t_verify = time.perf_counter()
    summary = groups_summary(analysis)
    pruned_ids = set(plan.groups)
    report = {
        "input": model.source,
        "input_shapes": model.input_shapes,
        "ratio": opts.ratio,
        "criterion": f"plan {opts.plan_in}" if opts.plan_in else criterion,
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
        "notes": model.notes + notes,
        **extra,
        "timing_s": {"analyze": t_analyze - t_load, "plan": t_plan - t_analyze,
                     "shrink": t_shrink - t_plan, "verify": t_verify - t_shrink, "total": t_verify - t0},
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

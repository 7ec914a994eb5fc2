"""Pruning that keeps accuracy from the ONNX file and unlabeled calibration inputs alone.

Per round (--steps K gives K rounds): statistics -> scores -> plan (ratio, or MACs budget spread by
measured sensitivity) -> shrink -> reconstruct (refit consumers by least squares). Reconstruction is
kept only if it lowers the output error on held-out calibration samples, so it never makes a round worse.
"""
from __future__ import annotations

import time

import numpy as np

from . import criteria
from .allocate import Floors, budget_plan, group_sensitivity
from .calib import CalibData, collect_stats, load_calib, mirrored
from .dependency import analyze
from .errors import PrunecError
from .graph import Model
from .macs import graph_macs
from .plan import Plan, make_plan
from .search import RefitMeasure, affordable, choose

# With data, `auto` is lsq where it is affordable (better than output on every Fashion-MNIST row of
# docs/accuracy.md), else output: lsq's greedy elimination took 62 s on YOLOv8n with only 32 samples.
DEFAULT_DATA_CRITERION = "lsq"
LARGE_MODEL_DATA_CRITERION = "output"
REFIT_PROTECT_KEEP = 0.5


def resolve_criterion(opts, data: CalibData | None, model: Model | None = None) -> str:
    crit = opts.criterion or "auto"
    if crit != "auto":
        return crit
    if data is None:
        return "l2"
    if model is not None and not affordable(graph_macs(model.graph, model.shapes), len(data)):
        return LARGE_MODEL_DATA_CRITERION
    return DEFAULT_DATA_CRITERION


def calibrated_prune(model: Model, opts, round_to: int, log=lambda s: None,
                     analysis=None) -> tuple[Model, Plan, dict]:
    """Returns the pruned model (not yet verified), the plan of the last round, and report entries.
    `analysis`: of `model` with opts.exclude, when the caller has it already."""
    from prunec.passes import Reconstruct, shrink
    from prunec.passes.reconstruct import output_error

    t0 = time.perf_counter()
    data: CalibData | None = None
    if opts.calib is not None:
        data = load_calib(opts.calib, model, opts.preprocess, opts.calib_samples)
    t_load = time.perf_counter() - t0
    criterion = resolve_criterion(opts, data, model)
    crit = criteria.get(criterion)
    if crit.needs_data and data is None:
        raise PrunecError(f"criterion {criterion!r} needs calibration data: give --calib FILE.npz or an image folder")
    if opts.steps < 1:
        raise PrunecError("--steps must be at least 1")
    do_recon = opts.reconstruct if opts.reconstruct is not None else data is not None
    if do_recon and data is None:
        raise PrunecError("--reconstruct needs calibration data (--calib)")
    fit, check = _split(data) if data is not None else (None, None)
    mirror = getattr(opts, "calib_mirror", None)
    if mirror is not None:
        if data is None:
            raise PrunecError("--calib-mirror needs calibration data (--calib)")
        if fit is check:  # too few samples to hold any out
            data = fit = check = mirrored(data, mirror)
        else:  # mirror each split on its own: a held-out sample's mirror image is held out too
            fit, check = mirrored(fit, mirror), mirrored(check, mirror)
            data = CalibData({k: np.concatenate([fit.arrays[k], check.arrays[k]]) for k in fit.arrays}, fit.source)
    base_macs = graph_macs(model.graph, model.shapes)
    protect = opts.protect if opts.protect is not None else opts.target_macs is not None
    floors = Floors(min_keep=opts.min_keep, protect=protect)
    current, plans, rounds = model, [], []
    t_stats = t_sens = 0.0
    allocations: list[dict] = []
    for step in range(1, opts.steps + 1):
        if analysis is None or analysis.model is not current:
            analysis = analyze(current, exclude=opts.exclude)
        t = time.perf_counter()
        evidence = _evidence(crit, current, analysis, data, fit)
        t_stats += time.perf_counter() - t
        scores = crit.score_groups(analysis, analysis.prunable_groups, evidence)
        meta = {"criterion": criterion, "step": step, "steps": opts.steps}
        if opts.target_macs is not None:
            keep_share = 1.0 - (1.0 - opts.target_macs) * step / opts.steps
            t = time.perf_counter()
            method, why = _allocation(opts, analysis, scores, keep_share, round_to, data, do_recon, current)
            sens = measure = None
            if method == "refit":
                measure = RefitMeasure(current, analysis, fit, check, mode=opts.recon_mode)
            elif data is not None:
                sens = group_sensitivity(current, analysis, data, scores, samples=opts.sensitivity_samples)
            plan = budget_plan(analysis, scores, keep_share, sens, round_to=round_to,
                               floors=_floors_for(floors, method, opts), meta=meta, base_macs=base_macs,
                               measure=measure)
            alloc = {"method": method, "why": why, "time_s": time.perf_counter() - t}
            if measure is not None:
                alloc["evaluations"] = measure.evaluations
            allocations.append(alloc)
            t_sens += alloc["time_s"]
        else:
            ratio = 1.0 - (1.0 - opts.ratio) ** (1.0 / opts.steps)
            plan = make_plan(analysis, scores, ratio, round_to=round_to if step == opts.steps else 1,
                             min_keep=opts.min_keep, global_ranking=opts.global_ranking, meta=meta)
            if protect:
                _apply_floors(plan, analysis, scores, floors, round_to if step == opts.steps else 1)
        if plan.meta.get("budget", "met") != "met":
            log(f"--target-macs {opts.target_macs}: {plan.meta['budget']}")
        pruned = shrink(analysis, plan)
        info = {"step": step, "groups_pruned": len(plan.groups), "channels_removed": plan.removed_channels,
                "macs": graph_macs(pruned.graph, pruned.shapes), "budget": plan.meta.get("budget")}
        if do_recon and plan.groups:
            refit, done = Reconstruct(current, analysis, plan, fit, mode=opts.recon_mode, log=log)(pruned)
            rinfo = done.report()
            before, after = output_error(current, pruned, check), output_error(current, refit, check)
            rinfo.update(output_error_before=before, output_error_after=after, kept=after <= before)
            if after <= before:
                pruned = refit
            else:
                log(f"reconstruct: step {step} did not lower the held-out error ({after:.4g} > {before:.4g}); not kept")
            info["reconstruct"] = rinfo
        rounds.append(info)
        plans.append(plan)
        current = pruned
    entries = {
        "criterion": criterion,
        "calibration": ({"source": data.source, "samples": len(data), "fit_samples": len(fit),
                         "check_samples": len(check), "load_s": t_load, "stats_s": t_stats,
                         "sensitivity_s": t_sens}
                        if data is not None else
                        {"used": False, "note": f"no calibration data: data-free criterion {criterion!r}"
                                                + (", no reconstruction" if not do_recon else "")}),
        "target_macs": opts.target_macs,
        "steps": rounds,
    }
    if allocations:  # how the MACs budget was spread, per round
        entries["allocation"] = dict(allocations[-1], time_s=sum(a["time_s"] for a in allocations),
                                     **({"rounds": allocations} if len(allocations) > 1 else {}))
    if data is not None:
        entries["calibration"]["output_error"] = output_error(model, current, check)
    plan = plans[-1]
    if len(plans) > 1:
        plan = Plan(plan.groups, dict(plan.meta, note="plan of the last round only; earlier rounds in 'rounds'",
                                      rounds=[p.to_json() for p in plans[:-1]]))
    return current, plan, entries


def _evidence(crit, model: Model, analysis, data: CalibData | None, fit: CalibData | None) -> criteria.Evidence:
    """What the criterion declares it needs, measured on `model`: statistics on all samples, Gram
    matrices on the fit split."""
    groups = analysis.prunable_groups
    if crit.needs == criteria.STATS:
        return criteria.Evidence(stats=collect_stats(model, data, crit.stat_keys(analysis, groups)))
    if crit.needs == criteria.GRAM:
        from prunec.passes.reconstruct import collect_grams

        return criteria.Evidence(grams=collect_grams(model, fit, crit.gram_jobs(analysis, groups), rows=crit.rows))
    return criteria.Evidence()


ALLOCATIONS = ("auto", "probe", "refit")


def _allocation(opts, analysis, scores, keep_share, round_to, data, do_recon, model) -> tuple[str, str]:
    """--allocation: probe (sensitivity curves, cheap), refit (search on pruned+refitted models), auto."""
    asked = getattr(opts, "allocation", "auto") or "auto"
    if asked not in ALLOCATIONS:
        raise PrunecError(f"--allocation {asked!r}: choose one of {', '.join(ALLOCATIONS)}")
    if asked == "refit" and (data is None or not do_recon):
        raise PrunecError("--allocation refit needs calibration data (--calib) and reconstruction")
    if data is None:
        return "probe", "no calibration data: importance shares"
    if not do_recon:
        return "probe", "no reconstruction"
    return choose(asked, analysis, scores, keep_share, round_to, len(data), graph_macs(model.graph, model.shapes))


def _floors_for(floors: Floors, method: str, opts) -> Floors:
    """Stem/head floor: a refit search measures what pruning the stem costs after reconstruction, so the
    floor only guards against noise there (50%); probe curves and importance shares misjudge the stem
    (measured without refit), so they keep 75%. PruneOptions.protect_keep overrides both."""
    from dataclasses import replace

    keep = getattr(opts, "protect_keep", None)
    if keep is not None and not 0.0 <= keep <= 1.0:
        raise PrunecError(f"protect_keep {keep}: must be in [0, 1] (the share of a stem/head group kept)")
    if keep is None:
        keep = REFIT_PROTECT_KEEP if method == "refit" else floors.protect_keep
    return replace(floors, protect_keep=keep)


def _apply_floors(plan: Plan, analysis, scores, floors: Floors, round_to: int) -> None:
    """--protect with --ratio: stem/head groups and tiny groups lose no more than the floors allow."""
    from .allocate import protected_groups
    from .plan import rounding_multiple

    protected = protected_groups(analysis)
    by_id = {g.id: g for g in analysis.groups}
    for gid in list(plan.groups):
        g = by_id[gid]
        keep = floors.keep_floor(g, protected)
        m = rounding_multiple(g, round_to)
        keep = min(g.size, -(-keep // m) * m)
        n = min(len(plan.groups[gid]), g.size - keep)
        order = np.argsort(scores[gid], kind="stable")
        if n <= 0:
            del plan.groups[gid]
        else:
            plan.groups[gid] = sorted(int(i) for i in order[:n])
    plan.meta["protected"] = protected


def _split(data: CalibData) -> tuple[CalibData, CalibData]:
    """Fit on most samples, check on the rest (all of them when there are too few to spare)."""
    n = len(data)
    if n < 32:
        return data, data
    n_check = min(64, n // 5)
    fit = CalibData({k: v[:n - n_check] for k, v in data.arrays.items()}, data.source)
    check = CalibData({k: v[n - n_check:] for k, v in data.arrays.items()}, data.source)
    return fit, check

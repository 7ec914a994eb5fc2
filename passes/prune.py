"""The pruning pass: analyse, score, plan, shrink (with calibration data: rounds of scores, budget
allocation, shrink and refit, prunec/calibrated.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from prunec import criteria
from prunec.dependency import Analysis, analyze
from prunec.graph import Model
from prunec.options import PruneOptions
from prunec.plan import Plan, make_plan

from .base import PassResult
from .shrink import shrink


@dataclass
class PruneResult(PassResult):
    plan: Plan | None = None  # what was removed (the last round's, with --steps)
    analysis: Analysis | None = None  # the groups of the model this pass was given
    criterion: str = ""
    entries: dict = field(default_factory=dict)  # report entries: calibration, steps, allocation
    timing: dict = field(default_factory=dict)  # seconds: analyze, plan, shrink

    def report(self) -> dict:
        return {"criterion": self.criterion, **self.entries}


def build_plan(analysis: Analysis, opts: PruneOptions) -> Plan:
    """The data-free plan: the options' criterion and ratio, or the plan file given."""
    if opts.plan_in:
        return Plan.load(opts.plan_in)
    criterion = "l2" if opts.criterion == "auto" else opts.criterion
    scores = criteria.score_groups(analysis, criterion)
    return make_plan(analysis, scores, opts.ratio, round_to=opts.rounding, min_keep=opts.min_keep,
                     global_ranking=opts.global_ranking, meta={"criterion": criterion})


class Prune:
    name = "prune"

    def __init__(self, opts: PruneOptions, log=lambda s: None):
        self.opts, self.log = opts, log

    def __call__(self, model: Model) -> tuple[Model, PruneResult]:
        opts = self.opts
        t0 = time.perf_counter()
        analysis = analyze(model, exclude=opts.exclude)
        t_analyze = time.perf_counter()
        if opts.calibrated:
            from prunec.calibrated import calibrated_prune

            pruned, plan, entries = calibrated_prune(model, opts, opts.rounding, self.log, analysis=analysis)
            t_plan = t_shrink = time.perf_counter()
        else:
            plan = build_plan(analysis, opts)
            t_plan = time.perf_counter()
            pruned = shrink(analysis, plan)
            t_shrink = time.perf_counter()
            entries = {"criterion": plan.meta.get("criterion", opts.criterion),
                       "calibration": {"used": False,
                                       "note": "no calibration data: data-free criterion, no reconstruction"}}
        criterion = entries.pop("criterion")
        return pruned, PruneResult(plan=plan, analysis=analysis, criterion=criterion, entries=entries,
                                   timing={"analyze": t_analyze - t0, "plan": t_plan - t_analyze,
                                           "shrink": t_shrink - t_plan})

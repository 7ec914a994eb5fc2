"""The pruning pass: analyse, score, plan, shrink.

Data-free (a criterion on weights, or a plan file): one plan, one shrink. With calibration data, a
MACs budget or several rounds (--steps K), each round runs the recovery flow (prunec/recovery):
scores from data -> plan (ratio, or a MACs budget spread by measured cost) -> shrink -> reconstruct
(kept only if it lowers the output error on held-out samples, so it never makes a round worse).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from prunec import criteria, progress
from prunec.dependency import Analysis, analyze
from prunec.errors import PrunecError
from prunec.graph import Model
from prunec.macs import graph_macs
from prunec.options import PruneOptions
from prunec.plan import Plan, make_plan
from prunec.recovery.allocation import (Floors, allocation_method, apply_floors, budget_plan,
                                        floors_for)
from prunec.recovery.data import CalibData, fit_and_check, load_calib
from prunec.recovery.refit import ROWS as REFIT_ROWS
from prunec.recovery.scores import evidence, resolve_criterion
from prunec.recovery.sensitivity import RefitMeasure, group_sensitivity
from prunec.recovery.scoring import output_error

from .base import PassResult
from .factorize import BASE_MACS
from .reconstruct import Reconstruct
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
        self.teacher: Model | None = None  # distill towards this model instead of the one given (factorize sets it)
        # --recover-budget counts from here: the passes are built just before they run, so the
        # factorization, the plan and the refit all spend the recovery budget before distillation does
        self.started = time.perf_counter()

    def __call__(self, model: Model) -> tuple[Model, PruneResult]:
        opts = self.opts
        t0 = time.perf_counter()
        analysis = analyze(model, exclude=opts.exclude)
        t_analyze = time.perf_counter()
        if not opts.structured:  # sparsity only: the groups are still reported, nothing is removed
            return model.copy(), PruneResult(plan=Plan(meta={"criterion": "none"}), analysis=analysis,
                                             criterion="none (sparsity only)",
                                             timing={"analyze": t_analyze - t0, "plan": 0.0, "shrink": 0.0})
        if opts.calibrated:
            calibrated = _Calibrated(model, opts, self.log, teacher=self.teacher, started=self.started)
            pruned, plan, entries = calibrated.run(analysis)
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
        if BASE_MACS in pruned.annotations:  # consumed here; not saved in the output's metadata
            pruned = replace(pruned, annotations={k: v for k, v in pruned.annotations.items() if k != BASE_MACS})
        return pruned, PruneResult(plan=plan, analysis=analysis, criterion=criterion, entries=entries,
                                   timing={"analyze": t_analyze - t0, "plan": t_plan - t_analyze,
                                           "shrink": t_shrink - t_plan})


RECOVERY = ("auto", "refit", "distill", "none")
MIN_DISTILL_S = 20.0  # below this, distillation would spend its time compiling
# --steps auto: a MACs budget keeping less than this share is pruned in two rounds. Measured at 2x
# (docs/accuracy.md): a second plan on the refitted model raised YOLOv8n's box F1 0.844 -> 0.868 and
# PP-OCRv4's exact match 0.918 -> 0.941; at 1.5x one round did as well.
TWO_ROUNDS_BELOW = 0.6
# ... unless the first round and a short second one would leave distillation less than this share of
# the recovery budget. A round (scores, allocation, refit) took 3.2-5.3x its scoring on YOLOv8n and
# ddddocr's recognizer.
DISTILL_SHARE = 0.4
ROUND_PER_SCORES = 5.0
# That estimate can be far off (ddddocr's detector: 11x, the refit at 416x416), so once a round has
# run, its measured time sizes the next: a later round that would overrun the budget runs on fewer
# calibration samples (never under MIN_ROUND_SAMPLES), its refit taking more output positions from
# each (up to MAX_ROWS_SCALE x the default rows) so its least-squares systems stay well posed.
MIN_ROUND_SAMPLES = 64
MAX_ROWS_SCALE = 4


def rounds_for(opts: PruneOptions, budget: float | None, calibrated: bool) -> int:
    """How many rounds to prune in: --steps N, or auto (None): two for a MACs budget under
    TWO_ROUNDS_BELOW with calibration data (a refit between them), else one."""
    if opts.steps is not None:
        if opts.steps < 1:
            raise PrunecError("--steps must be at least 1")
        return opts.steps
    two = calibrated and budget is not None and opts.target_latency is None and budget < TWO_ROUNDS_BELOW
    return 2 if two else 1


def resolve_recover(asked: str | None, data: CalibData | None, reconstruct: bool | None = None) -> str:
    """--recover: auto is distill when jax is installed, else refit (the report says so); with
    --no-reconstruct, auto recovers nothing (an explicit --recover distill still distills)."""
    asked = asked or "refit"
    if asked not in RECOVERY:
        raise PrunecError(f"--recover {asked!r}: choose one of {', '.join(RECOVERY)}")
    if data is None:
        if asked == "distill":
            raise PrunecError("--recover distill needs calibration data (--calib)")
        return "none"
    if asked == "auto" and reconstruct is False:
        return "none"
    if asked == "auto":
        import importlib.util

        return "distill" if importlib.util.find_spec("jax") is not None else "refit"
    return asked


class _Calibrated:
    """The rounds of a calibrated run (one per --steps), on the data the options name."""

    def __init__(self, model: Model, opts: PruneOptions, log, teacher: Model | None = None,
                 started: float | None = None):
        """teacher: distillation's (default the model); started: when the recovery budget began
        (default now)."""
        from .distill import DEFAULT_BUDGET_S

        self.model, self.opts, self.log = model, opts, log
        self.teacher = teacher or model
        t0 = time.perf_counter()
        self.started = t0 if started is None else started
        self.recovery_budget = float(opts.recover_budget or DEFAULT_BUDGET_S)  # seconds, distillation included
        self.data: CalibData | None = None
        if opts.calib is not None:
            self.data = load_calib(opts.calib, model, opts.preprocess, opts.calib_samples)
        self.t_load = time.perf_counter() - t0
        self.criterion = resolve_criterion(opts.criterion, self.data, model)
        self.crit = criteria.get(self.criterion)
        if self.crit.needs_data and self.data is None:
            raise PrunecError(f"criterion {self.criterion!r} needs calibration data: give --calib FILE.npz or an image folder")
        self.recover = resolve_recover(opts.recover, self.data, opts.reconstruct)
        self.do_recon = (opts.reconstruct if opts.reconstruct is not None
                         else self.data is not None and self.recover != "none")
        if self.do_recon and self.data is None:
            raise PrunecError("--reconstruct needs calibration data (--calib)")
        if opts.calib_mirror is not None and self.data is None:
            raise PrunecError("--calib-mirror needs calibration data (--calib)")
        self.fit = self.check = None
        if self.data is not None:
            self.data, self.fit, self.check = fit_and_check(self.data, opts.calib_mirror)
        # the share to keep is of the model as given, before passes/factorize.py made it cheaper
        self.base_macs = model.annotations.get(BASE_MACS) or graph_macs(model.graph, model.shapes)
        self.latency = None  # --target-latency: recovery/latency.py measures on the target
        if getattr(opts, "target_latency", None) is not None:
            from prunec.recovery.latency import LatencyBudget

            self.latency = LatencyBudget(opts)
        self.protect = opts.protect if opts.protect is not None else self.budget is not None
        self.floors = Floors(min_keep=opts.min_keep, protect=self.protect)
        self.t_stats = self.t_sens = 0.0
        self.allocations: list[dict] = []
        self.memos: dict = {}
        self.rounds, self.steps_note = 1, None  # set by run(): --steps, or auto from the budget
        self.rows: int | None = None  # the refit's rows per sample when a round runs on fewer samples

    def _two_rounds_fit(self, t_scores: float) -> bool:
        """--steps auto: whether the first round and the smallest second one (on MIN_ROUND_SAMPLES fit
        samples; _next_round_samples sizes the real one from the first's measured time) leave the
        recovery budget enough (DISTILL_SHARE of it when distillation comes next, else any), a round
        timed as ROUND_PER_SCORES x its scoring (the first round's scoring, just measured). Counting a
        full second round here made the choice flip with the host's noise: YOLOv8n's scores took 28 s
        in one run (two rounds) and 36 s in the next (one)."""
        spent = time.perf_counter() - self.started
        smallest = min(1.0, MIN_ROUND_SAMPLES / max(len(self.fit), 1))
        left = self.recovery_budget - spent - (ROUND_PER_SCORES * (1.0 + smallest) - 1.0) * t_scores
        return left >= (DISTILL_SHARE * self.recovery_budget if self.recover == "distill" else 0.0)

    def _next_round_samples(self, t_round: float, shrink: float) -> int | None:
        """--steps auto, after a round of t_round s: how many fit samples the next round may use for the
        rounds to end within the recovery budget (less DISTILL_SHARE of it when distillation comes
        next); None: all of them. The next round is estimated as the last one scaled by the MACs it
        runs (`shrink`: the model's MACs after the last round over before it) and by its samples."""
        limit = self.recovery_budget * ((1.0 - DISTILL_SHARE) if self.recover == "distill" else 1.0)
        left = limit - (time.perf_counter() - self.started)
        estimate, n = t_round * shrink, len(self.fit)
        if estimate <= left or n <= MIN_ROUND_SAMPLES:
            return None
        return max(MIN_ROUND_SAMPLES, int(n * max(left, 0.0) / estimate))

    @contextmanager
    def _on_samples(self, n: int | None):
        """Within: the round's scores, allocation and refit use the first n fit samples (None: all);
        the held-out check stays whole."""
        if n is None:
            yield
            return
        data, fit = self.data, self.fit
        self.data, self.fit = data.subset(n), fit.subset(n)
        self.rows = REFIT_ROWS * min(MAX_ROWS_SCALE, max(1, round(len(fit) / n)))
        try:
            yield
        finally:
            self.data, self.fit, self.rows = data, fit, None

    def _distill_budget(self) -> float | None:
        """Seconds left for distillation: the recovery budget less what the plan and refit took;
        None when less than a tenth of it (or MIN_DISTILL_S) is left, too little to run an epoch's checks.
        With --recover-epochs the epochs decide and the whole budget is given."""
        if self.opts.recover_epochs is not None:
            return self.recovery_budget
        left = self.recovery_budget - (time.perf_counter() - self.started)
        return left if left >= max(MIN_DISTILL_S, 0.1 * self.recovery_budget) else None

    def _distill(self, current: Model) -> dict:
        """The recovery entry of distilling `current` in what is left of the budget (with the
        distilled model under "model"), or of skipping it when too little is left."""
        left = self._distill_budget()
        if left is None:
            spent = time.perf_counter() - self.started
            note = (f"distillation skipped: the plan and refit took {spent:.0f} s of the "
                    f"{self.recovery_budget:.0f} s recovery budget (raise --recover-budget)")
            self.log(f"distill: {note}")
            return {"method": "refit", "budget_s": self.recovery_budget, "note": note}
        from .distill import Distill

        distilled, done = Distill(self.teacher, self.fit, self.check, budget_s=left,
                                  epochs=self.opts.recover_epochs, log=self.log)(current)
        return dict(done.report(), budget_s=self.recovery_budget, model=distilled)

    @property
    def budget(self) -> float | None:
        """The share to keep: of the MACs, or with --target-latency of the measured latency (read from
        the options each round: prunec sweep changes them between runs)."""
        return self.opts.target_macs if self.latency is None else self.opts.target_latency

    def run(self, analysis: Analysis | None = None) -> tuple[Model, Plan, dict]:
        """The pruned model (not yet verified), the plan of the last round, and report entries.
        `analysis`: of the model, when the caller has it already."""
        opts = self.opts
        current, plans, rounds = self.model, [], []
        self.allocations, self.t_stats, self.t_sens = [], 0.0, 0.0
        self.rounds = rounds_for(opts, self.budget, self.do_recon)  # the budget may change between runs (sweep)
        self.steps_note = None
        step, samples, macs_in = 0, None, graph_macs(current.graph, current.shapes)
        while step < self.rounds:  # _plan may lower self.rounds after the first scores
            step += 1
            t_round = time.perf_counter()
            with self._on_samples(samples):
                if analysis is None or analysis.model is not current:
                    analysis = analyze(current, exclude=opts.exclude)
                plan = self._plan(current, analysis, step)
                pruned = shrink(analysis, plan)
                info = {"step": step, "groups_pruned": len(plan.groups), "channels_removed": plan.removed_channels,
                        "macs": graph_macs(pruned.graph, pruned.shapes), "budget": plan.meta.get("budget")}
                if samples is not None:
                    info["samples"] = samples
                if self.do_recon and plan.groups:
                    pruned, info["reconstruct"] = self._refit(current, analysis, plan, pruned, step)
            info["time_s"] = time.perf_counter() - t_round
            rounds.append(info)
            plans.append(plan)
            current = pruned
            if step < self.rounds and opts.steps is None and self.fit is not None:
                samples = self._next_round_samples(info["time_s"], info["macs"] / max(macs_in, 1))
                if samples is not None:
                    note = (f"round {step + 1} on {samples} of the {len(self.fit)} fit samples (--steps auto): "
                            f"round {step} took {info['time_s']:.0f} s of the {self.recovery_budget:.0f} s "
                            "recovery budget")
                    self.steps_note = f"{self.steps_note}; {note}" if self.steps_note else note
                    self.log(f"prune: {note}")
            macs_in = info["macs"]  # the next round's input is this round's output
        recovery = None
        if self.recover == "distill":
            recovery = self._distill(current)
            current = recovery.pop("model", current)  # absent when distillation was skipped
        elif self.data is not None:
            recovery = {"method": "refit" if self.do_recon else "none"}
            if opts.recover == "auto" and self.recover == "refit":
                recovery["note"] = "distillation skipped: jax is not installed (pip install 'prunec[distill]')"
        entries = {"criterion": self.criterion, "calibration": self._calibration_entry(current),
                   "target_macs": opts.target_macs, "steps": rounds}
        if self.steps_note:
            entries["steps_note"] = self.steps_note
        if self.latency is not None:
            entries["latency_budget"] = self.latency.finish(plans[-1], current)
        if recovery is not None:
            entries["recovery"] = recovery
        if self.allocations:  # how the MACs budget was spread, per round
            allocs = self.allocations
            entries["allocation"] = dict(allocs[-1], time_s=sum(a["time_s"] for a in allocs),
                                         **({"rounds": allocs} if len(allocs) > 1 else {}))
        plan = plans[-1]
        if len(plans) > 1:
            plan = Plan(plan.groups, dict(plan.meta, note="plan of the last round only; earlier rounds in 'rounds'",
                                          rounds=[p.to_json() for p in plans[:-1]]))
        return current, plan, entries

    def _plan(self, current: Model, analysis: Analysis, step: int) -> Plan:
        opts, data, round_to = self.opts, self.data, self.opts.rounding
        of = f" (round {step}/{self.rounds})" if self.rounds > 1 else ""
        t = time.perf_counter()
        measured = self._memo("evidence", current)
        if measured is None:
            with progress.phase(f"scores from calibration data ({self.criterion}){of}"):
                measured = self._remember("evidence", current, evidence(self.crit, current, analysis, data, self.fit))
        t_scores = time.perf_counter() - t
        self.t_stats += t_scores
        if step == 1 and self.rounds > 1 and opts.steps is None and not self._two_rounds_fit(t_scores):
            self.rounds, of = 1, ""
            self.steps_note = (f"one round, not two (--steps auto): the scores took {t_scores:.0f} s, so even a "
                               "short second round would " + ("leave distillation too little" if self.recover == "distill"
                                           else "exceed") + f" of the {self.recovery_budget:.0f} s recovery budget")
            self.log(f"prune: {self.steps_note}")
        scores = self.crit.score_groups(analysis, analysis.prunable_groups, measured)
        meta = {"criterion": self.criterion, "step": step, "steps": self.rounds}
        if self.budget is not None:
            keep_share = 1.0 - (1.0 - self.budget) * step / self.rounds
            t = time.perf_counter()
            method, why = allocation_method(opts, analysis, scores, keep_share, round_to, data, self.do_recon, current)
            sens = measure = size_model = None
            if self.latency is not None:  # timed on the target: the table of its layers, the original model
                self.latency.prepare(current, analysis, shrink)
                size_model = self.latency.size_model
            with progress.phase(f"allocation of the {'MACs' if self.latency is None else 'latency'} budget ({method}){of}"):
                if method == "refit":
                    measure = RefitMeasure(current, analysis, self.fit, self.check, shrink, mode=opts.recon_mode)
                elif data is not None:
                    sens = self._memo("probes", current)
                    if sens is None:
                        sens = self._remember("probes", current, group_sensitivity(
                            current, analysis, data, scores, samples=opts.sensitivity_samples,
                            fit=self.fit if self.do_recon else None))
                plan = budget_plan(analysis, scores, keep_share, sens, round_to=round_to, size_model=size_model,
                                   floors=floors_for(self.floors, method, opts, refit_aware=sens is not None and self.do_recon),
                                   meta=meta,
                                   base_macs=self.base_macs if size_model is None else None, measure=measure)
            alloc = {"method": method, "why": why, "time_s": time.perf_counter() - t}
            if sens is not None:
                alloc["probes"] = "least-squares compensated" if self.do_recon else "zeroed"
            if measure is not None:
                alloc["evaluations"] = measure.evaluations
            self.allocations.append(alloc)
            self.t_sens += alloc["time_s"]
        else:
            last = step == self.rounds
            ratio = 1.0 - (1.0 - opts.ratio) ** (1.0 / self.rounds)
            plan = make_plan(analysis, scores, ratio, round_to=round_to if last else 1,
                             min_keep=opts.min_keep, global_ranking=opts.global_ranking, meta=meta)
            if self.protect:
                apply_floors(plan, analysis, scores, self.floors, round_to if last else 1)
        if plan.meta.get("budget", "met") != "met":
            what = f"--target-macs {opts.target_macs}" if self.latency is None else f"--target-latency {self.budget}"
            self.log(f"{what}: {plan.meta['budget']}")
        return plan

    # What a round measures on its input model whatever the budget (scores' evidence, allocation
    # probes), kept for the next run() on the same model: `prunec sweep` runs one budget after another.
    def _memo(self, what: str, model: Model):
        kept = self.memos.get((what, id(model)))
        return kept[1] if kept is not None and kept[0] is model else None

    def _remember(self, what: str, model: Model, value):
        self.memos[(what, id(model))] = (model, value)
        return value

    def _refit(self, current: Model, analysis: Analysis, plan: Plan, pruned: Model, step: int) -> tuple[Model, dict]:
        """Reconstruct, kept only if it lowers the held-out output error."""
        of = f" (round {step}/{self.rounds})" if self.rounds > 1 else ""
        with progress.phase(f"reconstruction (least-squares refit, {len(self.fit)} samples){of}"):
            refit, done = Reconstruct(current, analysis, plan, self.fit, mode=self.opts.recon_mode, log=self.log,
                                      **({"rows": self.rows} if self.rows else {}))(pruned)
            rinfo = done.report()
            before, after = output_error(current, pruned, self.check), output_error(current, refit, self.check)
        rinfo.update(output_error_before=before, output_error_after=after, kept=after <= before)
        if after <= before:
            return refit, rinfo
        self.log(f"reconstruct: step {step} did not lower the held-out error ({after:.4g} > {before:.4g}); not kept")
        return pruned, rinfo

    def _calibration_entry(self, result: Model) -> dict:
        data = self.data
        if data is None:
            return {"used": False, "note": f"no calibration data: data-free criterion {self.criterion!r}"
                                           + (", no reconstruction" if not self.do_recon else "")}
        return {"source": data.source, "samples": len(data), "fit_samples": len(self.fit),
                "check_samples": len(self.check), "load_s": self.t_load, "stats_s": self.t_stats,
                "sensitivity_s": self.t_sens, "output_error": output_error(self.model, result, self.check),
                **({"sample_shapes": data.shape_summary()} if len(data.groups) > 1 else {})}

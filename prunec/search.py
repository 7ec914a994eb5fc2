"""Reconstruction-aware allocation: score a candidate plan by pruning, refitting and measuring it.

The probe allocation (prunec.allocate.group_sensitivity) zeroes channels without refitting, one group
at a time, so it rates groups whose loss reconstruction repairs well (often the stem) as costly.
Here a candidate plan is applied to the model, its consumers are refitted on the fit split
(passes/reconstruct.py, as the pipeline will) and the end-to-end output error is measured on the
held-out split: the greedy of budget_plan then walks on real pruned models, interactions included.
Each step costs one prune + refit per group, so this is for small models (see `choose`).
"""
from __future__ import annotations

import math
import time

import numpy as np

from .calib import CalibData, Tapper, channel_sq, relative_error
from .dependency import Analysis
from .graph import Model
from .layers import refit_kind
from .plan import Plan, rounding_multiple

# auto: refit search when (estimated prune+refit evaluations) x (calibration samples) x (model MACs)
# stays below this; ~1 minute on 2 cores for the Fashion-MNIST CNN (9 MMACs, 256 samples, ~40 evaluations)
REFIT_WORK_LIMIT = 2e11
REFIT_MAX_EVALS = 120
SMALL_MODEL_WORK = 2e10  # model MACs x calibration samples (Fashion-MNIST CNN: 2.3e9; YOLOv8n at 320: 2.8e11)
CACHE_BYTES = 512 * 2**20  # the original's layer tensors on the fit split are kept when they fit in this


class RefitMeasure:
    """measure(plan) -> relative output error on `check` of the pruned, refitted model vs `reference`."""

    def __init__(self, model: Model, analysis: Analysis, fit: CalibData, check: CalibData,
                 mode: str = "auto", reference: Model | None = None):
        self.model, self.analysis, self.fit, self.check, self.mode = model, analysis, fit, check, mode
        ref = Tapper(reference or model, [])
        self.n_out = ref.n_graph_outputs
        self.ref: list[list[np.ndarray]] = []
        ref.stream(check, lambda v: self.ref.append([np.asarray(v[o], np.float64)
                                                    for o in ref.outputs[:self.n_out]]))
        self.energy = [sum(channel_sq(r[j]) for r in self.ref) for j in range(self.n_out)]
        self.evaluations, self.seconds = 0, 0.0
        from prunec.passes.reconstruct import OriginalValues

        tensors = [t.name for n in analysis.graph.nodes if refit_kind(n) is not None
                   for t in (n.inputs[0], n.outputs[0])]
        self.cache = (OriginalValues(model, fit, tensors)
                      if OriginalValues.nbytes(model, fit, tensors) <= CACHE_BYTES else None)

    def __call__(self, plan: Plan) -> float:
        from prunec.passes import shrink
        from prunec.passes.reconstruct import reconstruct

        t0 = time.perf_counter()
        pruned = shrink(self.analysis, plan)
        refit, _ = reconstruct(self.model, self.analysis, plan, pruned, self.fit, mode=self.mode,
                               cache=self.cache)
        err = min(self._error(pruned), self._error(refit))  # the pipeline keeps the better of the two
        self.evaluations += 1
        self.seconds += time.perf_counter() - t0
        return err

    def _error(self, model: Model) -> float:
        tap = Tapper(model, [])
        num = [np.zeros_like(e) for e in self.energy]
        it = iter(self.ref)

        def compare(values):
            r = next(it)
            for j, o in enumerate(tap.outputs[:self.n_out]):
                num[j] += channel_sq(np.asarray(values[o], np.float64) - r[j])
        # same batches as the reference pass: a batch-capable model stays batch-capable after pruning
        tap.batch = len(self.ref[0][0]) if tap.batched else 1
        tap.stream(self.check, compare)
        return relative_error(num, self.energy)


def affordable(macs: float, samples: int) -> bool:
    """Is the model small enough for the costlier data paths (lsq by default, a refit search)?"""
    return macs * samples <= SMALL_MODEL_WORK


def estimated_evaluations(analysis: Analysis, scores: dict, target_macs: float, round_to: int) -> int:
    """Prune+refit evaluations of the greedy: one per group per removed block. MACs go about with the
    square of the kept share (layers lose input and output channels), so ~1 - sqrt(F) of the blocks go."""
    groups = [g for g in analysis.prunable_groups if g.id in scores]
    blocks = sum(g.size // rounding_multiple(g, round_to) for g in groups)
    return len(groups) * (max(1, math.ceil(blocks * (1.0 - math.sqrt(target_macs)))) + 1)


def choose(allocation: str, analysis: Analysis, scores: dict, target_macs: float, round_to: int,
           samples: int, macs: float) -> tuple[str, str]:
    """'probe' or 'refit' for --allocation auto (by estimated cost), and why."""
    if allocation != "auto":
        return allocation, "asked"
    evals = estimated_evaluations(analysis, scores, target_macs, round_to)
    work = evals * samples * macs
    if evals <= REFIT_MAX_EVALS and work <= REFIT_WORK_LIMIT:
        return "refit", f"~{evals} prune+refit evaluations, {work:.2g} MAC-samples <= {REFIT_WORK_LIMIT:.2g}"
    return "probe", f"~{evals} prune+refit evaluations, {work:.2g} MAC-samples: too costly for a refit search"

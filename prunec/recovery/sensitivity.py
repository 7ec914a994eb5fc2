"""What pruning costs, measured on calibration data.

`group_sensitivity` (the probe allocation) zeroes channels without refitting, one group at a time, so
it rates groups whose loss reconstruction repairs well (often the stem) as costly. `RefitMeasure`
(the refit allocation) applies a whole candidate plan, refits the consumers on the fit split as the
pipeline will, and measures the end-to-end output error on the held-out split: the greedy of
allocation.budget_plan then walks on real pruned models, interactions included. Each step costs one
prune + refit per group, so it is for small models (allocation.choose).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from prunec.dependency import Analysis
from prunec.graph import Model
from prunec.layers import refit_kind
from prunec.plan import Plan, keep_count

from .data import CalibData
from .refit import reconstruct
from .stream import OriginalValues, Tapper, channel_sq, relative_error

CACHE_BYTES = 512 * 2**20  # the original's layer tensors on the fit split are kept when they fit in this


def group_sensitivity(model, analysis: Analysis, data, scores: dict[str, np.ndarray],
                      probes: tuple[float, ...] = (0.25, 0.5, 0.75), samples: int = 16,
                      log=lambda s: None) -> dict[str, list[tuple[int, float]]]:
    """For each group: [(channels removed, end-to-end relative output error)] when that group alone
    loses its least important channels at each probe share, on calibration samples.
    One ORT session: the consumers' weights are graph inputs, fed zeroed columns per probe."""
    tensors = analysis.graph.tensors()
    groups = [g for g in analysis.prunable_groups if g.id in scores]
    in_members = {g.id: [m for m in g.members if m.role == "in" and isinstance(tensors.get(m.tensor), gs.Constant)]
                  for g in groups}
    weights = sorted({m.tensor for ms in in_members.values() for m in ms})
    tapper = Tapper(model, [], weights_as_inputs=weights)
    data = data.subset(samples)
    ref: list[list[np.ndarray]] = []
    tapper.stream(data, lambda v: ref.append([np.asarray(v[o], np.float64) for o in tapper.outputs]))
    energy = [sum(channel_sq(r[j]) for r in ref) for j in range(len(tapper.outputs))]
    base = {name: tensors[name].values for name in weights}
    out = {}
    for g in groups:
        order = np.argsort(scores[g.id], kind="stable")
        curve = []
        for n in sorted({g.size - keep_count(g.size, p, 1, 1) for p in probes} - {0}):
            extra = dict(base)
            for m in in_members[g.id]:
                w = np.array(extra[m.tensor])
                index = [slice(None)] * w.ndim
                index[m.axis] = m.positions[order[:n]].ravel()
                w[tuple(index)] = 0
                extra[m.tensor] = w
            err = [np.zeros_like(e) for e in energy]
            it = iter(ref)

            def compare(values, err=err, it=it):
                r = next(it)
                for j, o in enumerate(tapper.outputs):
                    err[j] += channel_sq(np.asarray(values[o], np.float64) - r[j])

            tapper.stream(data, compare, extra=extra)
            curve.append((int(n), relative_error(err, energy)))
        out[g.id] = curve
    return out


class RefitMeasure:
    """measure(plan) -> relative output error on `check` of the pruned, refitted model vs `reference`.
    `shrink(analysis, plan) -> Model` applies a plan (the shrink pass; given, so recovery does not
    import the passes that use it)."""

    def __init__(self, model: Model, analysis: Analysis, fit: CalibData, check: CalibData,
                 shrink: Callable[[Analysis, Plan], Model], mode: str = "auto", reference: Model | None = None):
        self.model, self.analysis, self.fit, self.check, self.mode = model, analysis, fit, check, mode
        self.shrink = shrink
        ref = Tapper(reference or model, [])
        self.n_out = ref.n_graph_outputs
        self.ref: list[list[np.ndarray]] = []
        ref.stream(check, lambda v: self.ref.append([np.asarray(v[o], np.float64)
                                                    for o in ref.outputs[:self.n_out]]))
        self.energy = [sum(channel_sq(r[j]) for r in self.ref) for j in range(self.n_out)]
        self.evaluations, self.seconds = 0, 0.0
        tensors = [t.name for n in analysis.graph.nodes if refit_kind(n) is not None
                   for t in (n.inputs[0], n.outputs[0])]
        self.cache = (OriginalValues(model, fit, tensors)
                      if OriginalValues.nbytes(model, fit, tensors) <= CACHE_BYTES else None)

    def __call__(self, plan: Plan) -> float:
        t0 = time.perf_counter()
        pruned = self.shrink(self.analysis, plan)
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

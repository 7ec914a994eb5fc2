"""How much to prune where: a MACs budget spread over groups by measured sensitivity.

`--target-macs F` means: the pruned model keeps at most F of the original MACs (0.5 = 2x fewer).

Each channel gets a priority = (estimated output error of removing it) / (MACs its removal saves).
The error estimate is the group's *measured* sensitivity on calibration data (the end-to-end output
error when its least important channels are dropped) shared among its channels in proportion to
their importance scores. One threshold over all priorities is moved by bisection until the MACs
model says the budget is met. Floors (stem, heads, tiny groups, --min-channels) always hold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .dependency import Analysis, Group
from .errors import PrunecError
from .macs import node_macs
from .plan import Plan, keep_count, rounding_multiple


# ----------------------------------------------------------------------------- protection
@dataclass
class Floors:
    min_keep: int = 1
    protect: bool = True
    protect_keep: float = 0.75  # stem and head groups keep at least this share
    tiny: int = 8  # groups of at most this many channels are not pruned when protecting
    max_ratio: float = 0.9  # no group loses more than this share

    def keep_floor(self, g: Group, protected: set[str]) -> int:
        floor = max(self.min_keep, g.size - math.floor(self.max_ratio * g.size), 1)
        if self.protect:
            if g.size <= self.tiny:
                return g.size
            if g.id in protected:
                floor = max(floor, math.ceil(self.protect_keep * g.size))
        return min(floor, g.size)


def _mac_nodes(analysis: Analysis) -> set[str]:
    return {n.name for n in analysis.graph.nodes if node_macs(n, analysis.model.shapes)}


def protected_groups(analysis: Analysis) -> dict[str, str]:
    """Groups produced by the first compute layers (stem) or read by the last ones (heads): id -> why."""
    g = analysis.graph
    macs = _mac_nodes(analysis)
    consumers: dict[str, list[gs.Node]] = {}
    for n in g.nodes:
        for t in n.inputs:
            consumers.setdefault(t.name, []).append(n)
    # forward from the graph inputs through non-compute nodes
    first, seen, todo = set(), set(), [t.name for t in g.inputs]
    while todo:
        for n in consumers.get(todo.pop(), []):
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.name in macs:
                first.add(n.name)
            else:
                todo.extend(o.name for o in n.outputs)
    # backward from the graph outputs
    producer = {o.name: n for n in g.nodes for o in n.outputs}
    last, seen, todo = set(), set(), [t.name for t in g.outputs]
    while todo:
        n = producer.get(todo.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.name in macs:
            last.add(n.name)
        else:
            todo.extend(t.name for t in n.inputs if not isinstance(t, gs.Constant))
    out = {}
    for grp in analysis.prunable_groups:
        for m in grp.members:
            if m.role == "out" and _user(analysis, m.tensor) & first:
                out[grp.id] = "stem"
            elif m.role == "in" and _user(analysis, m.tensor) & last:
                out.setdefault(grp.id, "head")
    return out


def _user(analysis: Analysis, tensor: str) -> set[str]:
    return {n.name for n in analysis.graph.nodes if any(t.name == tensor for t in n.inputs)}


# ----------------------------------------------------------------------------- MACs model
class MacsModel:
    """MACs of each weighted node scale with the kept share of each of its weight's channel axes."""

    def __init__(self, analysis: Analysis, groups: list[Group]):
        shapes = analysis.model.shapes
        self.total = sum(node_macs(n, shapes) for n in analysis.graph.nodes)
        weight_nodes: dict[str, int] = {}
        for n in analysis.graph.nodes:
            m = node_macs(n, shapes)
            for t in n.inputs:
                if m and isinstance(t, gs.Constant) and t.values.ndim >= 2:
                    weight_nodes[t.name] = weight_nodes.get(t.name, 0) + m
        tensors = analysis.graph.tensors()
        # per (weight, axis): its size, and for each group the positions each channel holds there
        self.axes: dict[tuple[str, int], tuple[int, int, list[tuple[int, int]]]] = {}
        index = {g.id: i for i, g in enumerate(groups)}
        for g in groups:
            for m in g.members:
                if m.role in ("out", "in") and m.tensor in weight_nodes:
                    key = (m.tensor, m.axis)
                    size = tensors[m.tensor].values.shape[m.axis]
                    entry = self.axes.setdefault(key, (weight_nodes[m.tensor], size, []))
                    entry[2].append((index[g.id], m.positions.shape[1]))
        self.by_weight: dict[str, list[tuple[int, int, list]]] = {}
        for (w, _), entry in self.axes.items():
            self.by_weight.setdefault(w, []).append(entry)
        self.groups = groups

    def macs(self, removed: np.ndarray) -> float:
        """removed[i]: channels removed from groups[i] -> estimated total MACs."""
        saved = 0.0
        for w, entries in self.by_weight.items():
            base = entries[0][0]
            keep = 1.0
            for _, size, members in entries:
                keep *= max(0.0, 1.0 - sum(removed[i] * reps for i, reps in members) / size)
            saved += base * (1.0 - keep)
        return self.total - saved

    def per_channel(self) -> np.ndarray:
        """MACs saved by removing one channel of each group (others untouched)."""
        out = np.zeros(len(self.groups))
        for base, size, members in self.axes.values():
            for i, reps in members:
                out[i] += base * reps / size
        return np.maximum(out, 1.0)


# ----------------------------------------------------------------------------- sensitivity
def group_sensitivity(model, analysis: Analysis, data, scores: dict[str, np.ndarray], probe: float = 0.5,
                      samples: int = 32, log=lambda s: None) -> dict[str, float]:
    """End-to-end relative output error when each group alone loses its `probe` least important
    channels, measured on calibration samples. One ORT session: the consumers' weights are fed in."""
    from .calib import Tapper, channel_sq, relative_error

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
    out = {}
    for g in groups:
        n = g.size - keep_count(g.size, probe, 1, 1)
        drop = np.argsort(scores[g.id], kind="stable")[:n]
        extra = {}
        for m in in_members[g.id]:
            w = np.array(extra.get(m.tensor, tensors[m.tensor].values))
            index = [slice(None)] * w.ndim
            index[m.axis] = m.positions[drop].ravel()
            w[tuple(index)] = 0
            extra[m.tensor] = w
        for name in weights:
            extra.setdefault(name, tensors[name].values)
        err = [np.zeros_like(e) for e in energy]
        it = iter(ref)

        def compare(values, err=err, it=it):
            r = next(it)
            for j, o in enumerate(tapper.outputs):
                err[j] += channel_sq(np.asarray(values[o], np.float64) - r[j])

        tapper.stream(data, compare, extra=extra)
        out[g.id] = relative_error(err, energy)
    return out


# ----------------------------------------------------------------------------- the plan
def _give_back(removed: np.ndarray, groups, prios, mults, mm: MacsModel, budget: float) -> np.ndarray:
    """Rounding to channel multiples makes one threshold overshoot the budget: put back the most
    valuable blocks of channels (highest error per MAC) while the budget still holds."""
    removed = removed.copy()
    while True:
        best, best_value = None, -1.0
        for i, g in enumerate(groups):
            step = min(mults[i], int(removed[i]))
            if step <= 0:
                continue
            trial = removed.copy()
            trial[i] -= step
            if mm.macs(trial) > budget:
                continue
            value = float(np.sum(prios[i][int(removed[i]) - step:int(removed[i])]))
            if value > best_value:
                best, best_value = i, value
        if best is None:
            return removed
        removed[best] -= min(mults[best], int(removed[best]))


def budget_plan(analysis: Analysis, scores: dict[str, np.ndarray], target_macs: float,
                sensitivity: dict[str, float] | None = None, round_to: int = 8, floors: Floors | None = None,
                probe: float = 0.5, meta: dict | None = None, base_macs: float | None = None) -> Plan:
    """Remove channels until the model keeps at most `target_macs` of `base_macs` (default: its own MACs)."""
    if not 0.0 < target_macs <= 1.0:
        raise PrunecError(f"--target-macs {target_macs}: must be in (0, 1] (the share of MACs to keep)")
    floors = floors or Floors()
    groups = [g for g in analysis.prunable_groups if g.id in scores]
    protected = protected_groups(analysis) if floors.protect else {}
    mm = MacsModel(analysis, groups)
    budget = target_macs * (base_macs if base_macs is not None else mm.total)
    per_channel = mm.per_channel()
    orders, prios, caps, mults = [], [], [], []
    for i, g in enumerate(groups):
        s = np.maximum(np.asarray(scores[g.id], np.float64), 0)
        order = np.argsort(s, kind="stable")
        w = s / (s.sum() or 1.0)
        n_probe = max(1, g.size - keep_count(g.size, probe, 1, 1))
        probe_weight = float(np.sum(w[order[:n_probe]])) or 1e-12
        sens = sensitivity.get(g.id, 0.0) if sensitivity is not None else 1.0
        # loss of each channel in removal order (cumulative max keeps it monotone)
        loss = np.maximum.accumulate(sens * w[order] / probe_weight + 1e-12 * np.arange(g.size))
        orders.append(order)
        prios.append(loss / per_channel[i])
        caps.append(g.size - floors.keep_floor(g, protected))
        mults.append(rounding_multiple(g, round_to))

    def removal(t: float) -> np.ndarray:
        out = np.zeros(len(groups))
        for i, g in enumerate(groups):
            n = min(int(np.searchsorted(prios[i], t, side="left")), caps[i])
            keep = keep_count(g.size, n / g.size, mults[i], g.size - caps[i])
            out[i] = g.size - keep
        return out

    candidates = np.unique(np.concatenate([p for p in prios] + [np.array([0.0, np.inf])]))
    lo, hi = 0, len(candidates) - 1  # find the smallest threshold that meets the budget
    reachable = mm.macs(removal(candidates[hi])) <= budget
    if not reachable:  # the floors win: remove all that they allow, and say so
        best = removal(candidates[hi])
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            if mm.macs(removal(candidates[mid])) <= budget:
                hi = mid
            else:
                lo = mid + 1
        best = removal(candidates[lo])
        best = _give_back(best, groups, prios, mults, mm, budget)
    plan = Plan(meta=dict(meta or {}, target_macs=target_macs, round_to=round_to, ranking="macs-budget",
                          estimated_macs=mm.macs(best), protected=protected,
                          budget="met" if reachable else (
                              f"not reachable: floors keep {mm.macs(best) / mm.total:.3f} of the MACs; "
                              "lower them with --no-protect / --min-channels"),
                          sensitivity="measured" if sensitivity is not None else "none (uniform)"))
    for i, g in enumerate(groups):
        n = int(best[i])
        if n:
            plan.groups[g.id] = sorted(int(k) for k in orders[i][:n])
    return plan

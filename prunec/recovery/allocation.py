"""How much to prune where: a MACs budget spread over groups by measured sensitivity.

`--target-macs F` means: the pruned model keeps at most F of the original MACs (0.5 = 2x fewer).

Groups lose blocks of channels (the rounding multiple) greedily, cheapest first: a block's cost is
the increase of the group's estimated output error per MAC it saves. The error curve of a group is
*measured* on calibration data (sensitivity.py: end-to-end output error with 25%, 50%, 75% of its least important
channels dropped), interpolated and made convex; without data, the share of its importance scores.
The MACs model stops the greedy at the budget. Floors (stem, heads, tiny groups, --min-channels) always hold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from prunec.dependency import Analysis, Group
from prunec.errors import PrunecError
from prunec.macs import graph_macs, node_macs
from prunec.plan import Plan, rounding_multiple


# auto: refit search when (estimated prune+refit evaluations) x (calibration samples) x (model MACs)
# stays below this; ~1 minute on 2 cores for the Fashion-MNIST CNN (9 MMACs, 256 samples, ~40 evaluations)
REFIT_WORK_LIMIT = 2e11
REFIT_MAX_EVALS = 120
REFIT_PROTECT_KEEP = 0.5  # stem/head floor when a refit search measures the stem's cost
ALLOCATIONS = ("auto", "probe", "refit")


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
        weight_nodes: dict[str, float] = {}
        for n in analysis.graph.nodes:
            m = node_macs(n, shapes)
            weights = [t for t in n.inputs if isinstance(t, gs.Constant) and t.values.ndim >= 2]
            # A node with several weights (an LSTM's W and R) spends its MACs across them, each
            # weight element once per step: split by size, or the node's MACs count once per weight
            # and a budget is "met" on paper with more MACs left (ddddocr: 0.55 kept for 0.5 asked).
            total = sum(t.values.size for t in weights)
            for t in weights if m else []:
                weight_nodes[t.name] = weight_nodes.get(t.name, 0) + m * t.values.size / total
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
                    entry[2].append((index[g.id], m.positions.shape[1], m.positions))
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
                if sum(p.size for _, _, p in members) <= size:  # the groups partition the axis: counts add
                    keep *= max(0.0, 1.0 - sum(removed[i] * reps for i, reps, _ in members) / size)
                else:  # product layouts (grouped convs, heads): a position goes with any of its channels
                    mask = np.ones(size, dtype=bool)
                    for i, _, pos in members:
                        mask[pos[:int(removed[i])].ravel()] = False
                    keep *= mask.sum() / size
            saved += base * (1.0 - keep)
        return self.total - saved

    def per_channel(self) -> np.ndarray:
        """MACs saved by removing one channel of each group (others untouched)."""
        out = np.zeros(len(self.groups))
        for base, size, members in self.axes.values():
            for i, reps, _ in members:
                out[i] += base * reps / size
        return np.maximum(out, 1.0)


# ----------------------------------------------------------------------------- cost curves
def loss_curve(g: Group, score: np.ndarray, sensitivity) -> np.ndarray:
    """Estimated output error after removing the n least important channels, n = 0..size, with
    non-decreasing increments (convex), from the measured points or (data-free) the score shares."""
    order = np.argsort(score, kind="stable")
    w = np.maximum(np.asarray(score, np.float64), 0)[order]
    share = np.concatenate([[0.0], np.cumsum(w) / (w.sum() or 1.0)])
    if sensitivity is None:
        loss = share
    else:
        points = [(n, e) for n, e in (sensitivity if isinstance(sensitivity, list) else [(g.size // 2, sensitivity)])]
        xs = np.array([0.0] + [p[0] for p in points])
        ys = np.array([0.0] + [max(p[1], 0.0) for p in points])
        n = np.arange(g.size + 1, dtype=np.float64)
        loss = np.interp(n, xs, ys)
        slope = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1.0)
        loss = np.where(n > xs[-1], ys[-1] + slope * (n - xs[-1]), loss)
        loss += 1e-6 * ys[-1] * share  # ties (flat parts) broken by the scores
    steps = np.maximum.accumulate(np.diff(loss))  # convex: each channel costs at least the previous one
    return np.concatenate([[0.0], np.cumsum(np.maximum(steps, 0) + 1e-15)])


# ----------------------------------------------------------------------------- the plan
def budget_plan(analysis: Analysis, scores: dict[str, np.ndarray], target_macs: float,
                sensitivity: dict[str, float] | None = None, round_to: int = 8, floors: Floors | None = None,
                meta: dict | None = None, base_macs: float | None = None,
                measure: Callable[[Plan], float] | None = None, size_model: Callable | None = None) -> Plan:
    """Remove channels until the model keeps at most `target_macs` of `base_macs` (default: its own MACs).
    `size_model(analysis, groups)`: what the budget counts instead of MACs (recovery/latency.py's
    LatencyModel: measured latency; its `keep_counts` replace the rounding multiples where set).

    The error of a candidate plan is the sum of the groups' sensitivity curves, or with `measure`
    (sensitivity.RefitMeasure: prune, refit and compare on held-out data) that function's value, memoized."""
    if not 0.0 < target_macs <= 1.0:
        raise PrunecError(f"--target-macs {target_macs}: must be in (0, 1] (the share of MACs to keep)")
    floors = floors or Floors()
    groups = [g for g in analysis.prunable_groups if g.id in scores]
    protected = protected_groups(analysis) if floors.protect else {}
    mm = size_model(analysis, groups) if size_model is not None else MacsModel(analysis, groups)
    quantity = getattr(mm, "quantity", "macs")
    budget = target_macs * (base_macs if base_macs is not None else mm.total)
    orders = [np.argsort(scores[g.id], kind="stable") for g in groups]
    floors_keep = [floors.keep_floor(g, protected) for g in groups]
    if measure is None and sensitivity is not None:
        # No group is cut past its deepest probe: beyond it the curve is only extrapolated, and the
        # error of a group near empty rises much faster than the probes' slope (YOLOv8n at 2x: box
        # branches cut 64 -> 8 on the extrapolation; kept at 16 and more, its refit scored 0.847
        # box F1 instead of 0.821 at the same MACs).
        floors_keep = [max(k, g.size - max((n for n, _ in sensitivity[g.id]), default=g.size))
                       if isinstance(sensitivity.get(g.id), list) else k
                       for g, k in zip(groups, floors_keep)]
    mults = [rounding_multiple(g, round_to) for g in groups]

    def plan_of(state: np.ndarray) -> Plan:
        return Plan({g.id: sorted(int(k) for k in orders[i][:int(state[i])])
                     for i, g in enumerate(groups) if int(state[i])})

    if measure is None:
        curves = [loss_curve(g, scores[g.id], None if sensitivity is None else sensitivity.get(g.id, 0.0))
                  for g in groups]

        def cost(state: np.ndarray) -> float:
            return float(sum(curves[i][int(n)] for i, n in enumerate(state)))
    else:
        memo: dict[tuple, float] = {}

        def cost(state: np.ndarray) -> float:
            key = tuple(int(n) for n in state)
            if key not in memo:
                memo[key] = float(measure(plan_of(state))) if any(key) else 0.0
            return memo[key]

    best, reachable = _greedy(groups, mm, budget, mults, floors_keep, cost, getattr(mm, "keep_counts", None))
    if measure is not None:
        how = "refit search"
    else:
        how = "measured" if sensitivity is not None else "none (uniform)"
    plan = plan_of(best)
    plan.meta = dict(meta or {}, round_to=round_to, ranking="macs-budget" if quantity == "macs" else "latency-budget",
                     protected=protected,
                     budget="met" if reachable else (
                         f"not reachable: floors keep {mm.macs(best) / mm.total:.3f} of the "
                         f"{'MACs' if quantity == 'macs' else 'latency'}; lower them with --no-protect / --min-channels"),
                     sensitivity=how)
    if quantity == "macs":
        plan.meta.update(target_macs=target_macs, estimated_macs=mm.macs(best))
    else:
        plan.meta.update({"target_share": target_macs, f"estimated_{quantity}": mm.macs(best),
                          f"original_{quantity}": mm.total})
    return plan


def _greedy(groups: list[Group], mm: MacsModel, budget: float, mults: list[int], floors_keep: list[int],
            cost: Callable[[np.ndarray], float], keep_counts: list | None = None) -> tuple[np.ndarray, bool]:
    """Blocks removed per group (and whether the budget is met) by a greedy walk on cost(state).
    keep_counts[i], where given: the kept counts group i may step through instead of multiples."""
    def smaller_keep(i: int, keep: int) -> int:
        if keep_counts is not None and keep_counts[i] is not None:
            return max((k for k in keep_counts[i] if k < keep), default=-1)
        return ((keep - 1) // mults[i]) * mults[i]

    def next_removed(i: int, removed: np.ndarray) -> int | None:
        """Remove one more block: keep the next smaller multiple of the rounding unit."""
        keep = groups[i].size - int(removed[i])
        new_keep = smaller_keep(i, keep)
        if new_keep < max(floors_keep[i], 1):
            return None
        return groups[i].size - new_keep

    def candidates(state: np.ndarray, current: float):
        for i in range(len(groups)):
            n = next_removed(i, state)
            if n is None:
                continue
            trial = state.copy()
            trial[i] = n
            macs = mm.macs(trial)
            if current - macs > 0:
                yield trial, macs, cost(trial) - cost(state)

    # Walk the greedy path (least error added per MAC saved first); rounding makes blocks coarse,
    # so at every point of the path also consider finishing with the one block that meets the budget
    # with the least error, and keep the cheapest way found.
    state, current = np.zeros(len(groups)), mm.total
    best, best_loss = None, np.inf
    while True:
        if current <= budget:
            if cost(state) < best_loss:
                best, best_loss = state, cost(state)
            break
        cands = list(candidates(state, current))
        if not cands:
            break
        finishing = [c for c in cands if c[1] <= budget]
        if finishing:
            fin = min(finishing, key=lambda c: c[2])
            if cost(fin[0]) < best_loss:
                best, best_loss = fin[0], cost(fin[0])
        need = current - budget  # MACs saved beyond the budget earn nothing: big blocks don't win by overshooting
        step = min(cands, key=lambda c: c[2] / min(current - c[1], need))
        state, current = step[0], step[1]
    if best is None:  # the floors stop it first
        return state, False
    # put back blocks (the costliest to lose first) that the budget can still afford
    changed = True
    while changed:
        changed = False
        back = []
        for i in range(len(groups)):
            if best[i] <= 0:
                continue
            trial = best.copy()
            if keep_counts is not None and keep_counts[i] is not None:
                keep = groups[i].size - int(best[i])
                trial[i] = groups[i].size - min(k for k in keep_counts[i] + [groups[i].size] if k > keep)
            else:
                trial[i] = max(0, best[i] - mults[i])
                if (groups[i].size - trial[i]) % mults[i] and trial[i] > 0:
                    continue
            if mm.macs(trial) <= budget:
                back.append((cost(trial) - cost(best), i, trial))
        if back:
            best, changed = min(back, key=lambda b: (b[0], b[1]))[2], True
    return best, True


# ----------------------------------------------------------------------------- which allocation, floors
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


def allocation_method(opts, analysis, scores, keep_share, round_to, data, do_recon, model) -> tuple[str, str]:
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


def floors_for(floors: Floors, method: str, opts, refit_aware: bool = False) -> Floors:
    """Stem/head floor: a refit search, or probes fed the consumers' least-squares compensation
    (`refit_aware`), measure what pruning the stem costs after reconstruction, so the floor only guards
    against noise there (50%); zeroing probes and importance shares misjudge the stem (measured
    without refit), so they keep 75%. PruneOptions.protect_keep overrides both."""
    keep = getattr(opts, "protect_keep", None)
    if keep is not None and not 0.0 <= keep <= 1.0:
        raise PrunecError(f"protect_keep {keep}: must be in [0, 1] (the share of a stem/head group kept)")
    if keep is None:
        keep = REFIT_PROTECT_KEEP if method == "refit" or refit_aware else floors.protect_keep
    return replace(floors, protect_keep=keep)


def apply_floors(plan: Plan, analysis, scores, floors: Floors, round_to: int) -> None:
    """--protect with --ratio: stem/head groups and tiny groups lose no more than the floors allow."""
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

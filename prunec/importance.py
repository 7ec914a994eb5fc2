"""Importance of each channel of each group (higher = keep).

Data-free criteria read the group's weights; every member is normalized to mean 1 before the
members are summed, so a group's score does not depend on how many layers it spans and scores of
different groups can share one global ranking.
"""
from __future__ import annotations

import zlib

import numpy as np

from .dependency import Analysis, Group, Member
from .errors import PrunecError


def _member_norms(analysis: Analysis, group: Group, roles: tuple[str, ...], power: float) -> list[np.ndarray]:
    tensors = analysis.graph.tensors()
    out = []
    for m in group.members:
        if m.role not in roles:
            continue
        w = np.asarray(tensors[m.tensor].values, dtype=np.float64)
        flat = np.moveaxis(w, m.axis, 0).reshape(w.shape[m.axis], -1)
        per_pos = np.sum(np.abs(flat) ** power, axis=1)  # one value per axis position
        out.append(per_pos[m.positions].sum(axis=1))  # gather each channel's positions
    return out


def _normalized_sum(parts: list[np.ndarray], size: int) -> np.ndarray:
    total = np.zeros(size)
    for p in parts:
        mean = p.mean()
        total += p / mean if mean > 0 else p
    return total


def magnitude(analysis: Analysis, group: Group, p: int = 2) -> np.ndarray:
    parts = _member_norms(analysis, group, ("out", "in"), p)
    return _normalized_sum(parts, group.size) ** (1.0 / p)


def bn_scale(analysis: Analysis, group: Group) -> np.ndarray:
    parts = _member_norms(analysis, group, ("norm",), 1)
    if not parts:  # no normalization layer in this group: fall back to weights
        return magnitude(analysis, group)
    return _normalized_sum(parts, group.size)


def random(analysis: Analysis, group: Group, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(group.id.encode()) + seed)
    return rng.random(group.size)


# ----------------------------------------------------------------------------- calibration-based
# These read per-channel activation statistics (prunec.calib.ChannelStats keyed by (tensor, axis)).

def _act_parts(group: Group, stats: dict, value) -> list[np.ndarray]:
    out = []
    for m in group.members:
        s = stats.get((m.tensor, m.axis)) if m.role == "act" else None
        if s is not None and s.sum is not None:
            out.append(np.asarray(value(s))[m.positions].sum(axis=1))
    return out


def activation(analysis: Analysis, group: Group, stats: dict) -> np.ndarray:
    """Mean |activation| of each channel, over every tensor of the group."""
    parts = _act_parts(group, stats, lambda s: s.mean_abs)
    return _normalized_sum(parts, group.size) if parts else magnitude(analysis, group)


def nonzero_rate(analysis: Analysis, group: Group, stats: dict) -> np.ndarray:
    """1 - average percentage of zeros (APoZ): channels that are mostly dead after ReLU go first."""
    parts = _act_parts(group, stats, lambda s: 1.0 - s.zero_rate)
    if not parts:
        return magnitude(analysis, group)
    # ties (no zeros anywhere, e.g. SiLU nets) are broken by mean |activation|
    return np.mean(parts, axis=0) + 1e-3 * activation(analysis, group, stats) / group.size


def consumer_inputs(analysis: Analysis, group: Group) -> list[tuple[object, object, Member, Member]]:
    """(node, data input, weight member, activation member) for each node that consumes the group
    through a constant weight's input axis."""
    import onnx_graphsurgeon as gs

    nodes = {n.name: n for n in analysis.graph.nodes}
    acts = {}
    for m in group.members:
        if m.role == "act":
            acts.setdefault(m.tensor, m)
    out = []
    for m in group.members:
        if m.role != "in":
            continue
        for node in analysis.graph.nodes if m.node not in nodes else [nodes[m.node]]:
            ws = [i for i, t in enumerate(node.inputs) if t.name == m.tensor]
            if not ws or node.op not in ("Conv", "Gemm", "MatMul"):
                continue
            data = [t for i, t in enumerate(node.inputs[:2]) if i not in ws and not isinstance(t, gs.Constant)]
            if data and data[0].name in acts:
                out.append((node, data[0], m, acts[data[0].name]))
            break
    return out


def output_error(analysis: Analysis, group: Group, stats: dict, centered: bool = False) -> np.ndarray:
    """Squared error each channel's removal adds to the outputs of the layers that read it:
    E[x_k^2] * ||W[:, k]||^2 (with `centered`, Var[x_k]: the mean is compensated in the bias)."""
    tensors = analysis.graph.tensors()
    parts = []
    for node, x, w_member, x_member in consumer_inputs(analysis, group):
        s = stats.get((x_member.tensor, x_member.axis))
        if s is None or s.sum is None:
            continue
        w = np.asarray(tensors[w_member.tensor].values, dtype=np.float64)
        flat = np.moveaxis(w, w_member.axis, 0).reshape(w.shape[w_member.axis], -1)
        w_energy = np.einsum("ij,ij->i", flat, flat)[w_member.positions]  # [size, reps]
        x_energy = np.asarray(s.var if centered else s.mean_sq)[x_member.positions]
        if w_energy.shape[1] != x_energy.shape[1]:  # e.g. grouped conv: the weight repeats differently
            parts.append(w_energy.sum(1) * x_energy.mean(1))
        else:
            parts.append((w_energy * x_energy).sum(1))
    if not parts:
        return activation(analysis, group, stats)
    return _normalized_sum(parts, group.size)


CRITERIA = {
    "l2": lambda a, g: magnitude(a, g, 2),
    "l1": lambda a, g: magnitude(a, g, 1),
    "bn": bn_scale,
    "random": random,
}
# criterion -> function(analysis, group, stats)
DATA_CRITERIA = {
    "act": activation,
    "apoz": nonzero_rate,
    "output": output_error,
    "output-var": lambda a, g, s: output_error(a, g, s, centered=True),
}
# "lsq" (greedy elimination under least-squares refit) needs Gram matrices, not channel statistics:
# prunec.passes.reconstruct.selection_scores computes it (the calibrated flow calls it)
GRAM_CRITERIA = ("lsq",)
ALL_CRITERIA = sorted(CRITERIA) + sorted(DATA_CRITERIA) + list(GRAM_CRITERIA)


def needs_data(criterion: str) -> bool:
    return criterion in DATA_CRITERIA or criterion in GRAM_CRITERIA


def score_groups(analysis: Analysis, criterion: str = "l2", groups: list[Group] | None = None,
                 stats: dict | None = None) -> dict[str, np.ndarray]:
    groups = groups if groups is not None else analysis.prunable_groups
    if criterion in GRAM_CRITERIA:
        raise PrunecError(f"importance criterion {criterion!r} needs calibration data and the calibrated flow (--calib)")
    if criterion in DATA_CRITERIA:
        if stats is None:
            raise PrunecError(f"importance criterion {criterion!r} needs calibration data (--calib)")
        fn = DATA_CRITERIA[criterion]
        return {g.id: fn(analysis, g, stats) for g in groups}
    if criterion not in CRITERIA:
        raise PrunecError(f"unknown importance criterion {criterion!r}; choose one of {ALL_CRITERIA}")
    fn = CRITERIA[criterion]
    return {g.id: fn(analysis, g) for g in groups}


def stat_keys(analysis: Analysis, groups: list[Group] | None = None, criterion: str | None = None) -> list[tuple[str, int]]:
    """The (activation tensor, axis) pairs whose statistics the data criteria read ("output" only
    needs the inputs of the consuming layers; the others every activation of the group)."""
    keys: dict[tuple[str, int], None] = {}
    for g in groups if groups is not None else analysis.prunable_groups:
        if criterion in ("output", "output-var"):
            members = [xm for _, _, _, xm in consumer_inputs(analysis, g)]
            if members:
                for m in members:
                    keys[(m.tensor, m.axis)] = None
                continue
        for m in g.members:
            if m.role == "act" and m.tensor in analysis.model.shapes:
                keys[(m.tensor, m.axis)] = None
    return list(keys)

"""Importance of each channel of each group (higher = keep).

Data-free criteria read the group's weights; every member is normalized to mean 1 before the
members are summed, so a group's score does not depend on how many layers it spans and scores of
different groups can share one global ranking.
"""
from __future__ import annotations

import zlib

import numpy as np

from .dependency import Analysis, Group
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


CRITERIA = {
    "l2": lambda a, g: magnitude(a, g, 2),
    "l1": lambda a, g: magnitude(a, g, 1),
    "bn": bn_scale,
    "random": random,
}


def score_groups(analysis: Analysis, criterion: str = "l2", groups: list[Group] | None = None) -> dict[str, np.ndarray]:
    if criterion not in CRITERIA:
        raise PrunecError(f"unknown importance criterion {criterion!r}; choose one of {sorted(CRITERIA)}")
    fn = CRITERIA[criterion]
    return {g.id: fn(analysis, g) for g in (groups if groups is not None else analysis.prunable_groups)}

"""Criteria on activation statistics of the group's channels."""
from __future__ import annotations

import numpy as np

from . import STATS, Criterion, normalized_sum, register
from .magnitude import magnitude


def _act_parts(group, stats: dict, value) -> list[np.ndarray]:
    out = []
    for m in group.members:
        s = stats.get((m.tensor, m.axis)) if m.role == "act" else None
        if s is not None and s.sum is not None:
            out.append(np.asarray(value(s))[m.positions].sum(axis=1))
    return out


def mean_activation(analysis, group, stats: dict) -> np.ndarray:
    """Mean |activation| of each channel, over every tensor of the group (weights without any)."""
    parts = _act_parts(group, stats, lambda s: s.mean_abs)
    return normalized_sum(parts, group.size) if parts else magnitude(analysis, group)


@register
class MeanActivation(Criterion):
    name, help, needs = "act", "mean |activation|", STATS

    def score(self, analysis, group, evidence):
        return mean_activation(analysis, group, evidence.stats)


@register
class NonzeroRate(Criterion):
    """1 - average percentage of zeros (APoZ): channels that are mostly dead after ReLU go first."""

    name, help, needs = "apoz", "zero rate", STATS

    def score(self, analysis, group, evidence):
        parts = _act_parts(group, evidence.stats, lambda s: 1.0 - s.zero_rate)
        if not parts:
            return magnitude(analysis, group)
        # ties (no zeros anywhere, e.g. SiLU nets) are broken by mean |activation|
        return np.mean(parts, axis=0) + 1e-3 * mean_activation(analysis, group, evidence.stats) / group.size

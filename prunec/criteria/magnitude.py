"""Data-free criteria: weight magnitudes, BatchNorm scales, a seeded random baseline."""
from __future__ import annotations

import zlib

import numpy as np

from ..ops.quantize import real_values
from ..subgraphs import all_tensors
from . import Criterion, normalized_sum, register


def member_norms(analysis, group, roles: tuple[str, ...], power: float) -> list[np.ndarray]:
    """Per member with one of `roles`: the sum of |w|^power over each channel's slice of the weight."""
    tensors = all_tensors(analysis.graph)  # If/Loop/Scan bodies too
    out = []
    for m in group.members:
        if m.role not in roles:
            continue
        w = np.asarray(real_values(analysis.graph, tensors[m.tensor]), dtype=np.float64)  # int8: dequantized
        flat = np.moveaxis(w, m.axis, 0).reshape(w.shape[m.axis], -1)
        per_pos = np.sum(np.abs(flat) ** power, axis=1)  # one value per axis position
        out.append(per_pos[m.positions].sum(axis=1))  # gather each channel's positions
    return out


def magnitude(analysis, group, p: int = 2) -> np.ndarray:
    parts = member_norms(analysis, group, ("out", "in"), p)
    return normalized_sum(parts, group.size) ** (1.0 / p)


@register
class L2(Criterion):
    name, help = "l2", "weight L2 norm"

    def score(self, analysis, group, evidence):
        return magnitude(analysis, group, 2)


@register
class L1(Criterion):
    name, help = "l1", "weight L1 norm"

    def score(self, analysis, group, evidence):
        return magnitude(analysis, group, 1)


@register
class BatchNormScale(Criterion):
    name, help = "bn", "BatchNorm scale"

    def score(self, analysis, group, evidence):
        parts = member_norms(analysis, group, ("norm",), 1)
        if not parts:  # no normalization layer in this group: fall back to weights
            return magnitude(analysis, group)
        return normalized_sum(parts, group.size)


@register
class Random(Criterion):
    name, help = "random", "seeded baseline"

    def score(self, analysis, group, evidence, seed: int = 0):
        rng = np.random.default_rng(zlib.crc32(group.id.encode()) + seed)
        return rng.random(group.size)

"""The error each channel's removal adds to the outputs of the layers that read it."""
from __future__ import annotations

import numpy as np

from prunec.layers import consumers
from prunec.subgraphs import all_tensors

from . import STATS, Criterion, normalized_sum, register
from .activation import mean_activation


@register
class OutputError(Criterion):
    """E[x_k^2] * ||W[:, k]||^2 summed over the consuming layers."""

    name, help, needs = "output", "error each channel adds to the next layers' outputs", STATS
    centered = False  # Var[x_k] instead of E[x_k^2]: the mean is compensated in the bias

    def stat_keys(self, analysis, groups):
        """Only the consuming layers' inputs (a group without any: all of its activations)."""
        keys: dict[tuple[str, int], None] = {}
        for g in groups:
            members = [xm for _, _, _, xm in consumers(analysis, g)]
            if members:
                for m in members:
                    keys[(m.tensor, m.axis)] = None
            else:
                keys.update(dict.fromkeys(super().stat_keys(analysis, [g])))
        return list(keys)

    def score(self, analysis, group, evidence):
        stats = evidence.stats
        tensors = all_tensors(analysis.graph)  # If/Loop/Scan bodies too
        parts = []
        for node, x, w_member, x_member in consumers(analysis, group):
            s = stats.get((x_member.tensor, x_member.axis))
            if s is None or s.sum is None:
                continue
            w = np.asarray(tensors[w_member.tensor].values, dtype=np.float64)
            flat = np.moveaxis(w, w_member.axis, 0).reshape(w.shape[w_member.axis], -1)
            w_energy = np.einsum("ij,ij->i", flat, flat)[w_member.positions]  # [size, reps]
            x_energy = np.asarray(s.var if self.centered else s.mean_sq)[x_member.positions]
            if w_energy.shape[1] != x_energy.shape[1]:  # e.g. grouped conv: the weight repeats differently
                parts.append(w_energy.sum(1) * x_energy.mean(1))
            else:
                parts.append((w_energy * x_energy).sum(1))
        if not parts:
            return mean_activation(analysis, group, stats)
        return normalized_sum(parts, group.size)


@register
class CenteredOutputError(OutputError):
    name, help = "output-var", "same, mean compensated"
    centered = True

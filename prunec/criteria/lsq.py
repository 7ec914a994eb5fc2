"""Criterion "lsq": greedy backward elimination of each consumer's inputs under least-squares refit
(ThiNet-like). A channel's score is the output energy the refitted consumer loses when it goes
(made non-decreasing along the removal order), relative to the consumer's output energy, summed over
consumers. It reads the Gram matrices of the consumers' inputs ([X 1]^T [X 1] and [X 1]^T Y, im2col
rows as in reconstruction); downdates of the inverse keep each step O(d^2). Groups without a usable
consumer get zeros (ties keep their natural order)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from prunec.layers import consumers, refit_kind

from . import GRAM, Criterion, register


@dataclass
class GramJob:
    """One consuming layer of one group: its node, data input x and output y (tensor names)."""

    group: object
    node: gs.Node
    x: str
    y: str
    positions: np.ndarray  # [group size, reps]: x's channel axis positions of each channel


@register
class LeastSquares(Criterion):
    name, help, needs = "lsq", "greedy elimination under least-squares refit of the consumers", GRAM
    rows = 64  # im2col rows per sample
    lam = 1e-3  # ridge, relative to the mean diagonal

    def gram_jobs(self, analysis, groups) -> list[GramJob]:
        jobs = []
        for g in groups:
            for node, x, wm, xm in consumers(analysis, g):
                kind = refit_kind(node)
                if kind.groups(node) != 1 or not kind.refittable(node, x, len(analysis.shape(x))):
                    continue
                jobs.append(GramJob(g, node, x.name, node.outputs[0].name, np.asarray(xm.positions)))
        return jobs

    def score_groups(self, analysis, groups, evidence):
        out = {g.id: np.zeros(g.size) for g in groups}
        jobs = self.gram_jobs(analysis, groups)
        for job, (G, B) in zip(jobs, evidence.grams):
            K = refit_kind(job.node).patch_width(job.node.inputs[1].values.shape)
            score = self._eliminate(G, B, K, job.group.size, job.positions)
            if score is None:
                continue
            g = job.group
            rank = np.empty(g.size)
            rank[np.argsort(score, kind="stable")] = np.arange(g.size)
            out[g.id] = out[g.id] + score + 1e-9 * rank
        return out

    def _eliminate(self, G: np.ndarray, B: np.ndarray, K: int, size: int, pos: np.ndarray) -> np.ndarray | None:
        d = G.shape[0] - 1
        A = G.copy()
        A[np.arange(d), np.arange(d)] += self.lam * (np.trace(G[:d, :d]) / max(d, 1) + 1e-12)
        try:
            M = np.linalg.inv(A)
        except np.linalg.LinAlgError:
            return None
        Z = M @ B
        energy = max(float(np.sum(B * Z)), 1e-30)
        blocks = [np.concatenate([np.arange(p * K, (p + 1) * K) for p in pos[c]]) for c in range(size)]
        alive_feat = np.arange(d + 1)  # positions of the alive features in M's index space
        where = {int(f): i for i, f in enumerate(alive_feat)}
        alive, score, level = list(range(size)), np.zeros(size), 0.0
        while len(alive) > 1:
            best, best_d, best_idx = None, np.inf, None
            for c in alive:
                idx = np.array([where[int(f)] for f in blocks[c]])
                try:
                    delta = float(np.sum(Z[idx] * np.linalg.solve(M[np.ix_(idx, idx)], Z[idx])))
                except np.linalg.LinAlgError:
                    delta = np.inf
                if delta < best_d:
                    best, best_d, best_idx = c, delta, idx
            keep = np.setdiff1d(np.arange(len(alive_feat)), best_idx)
            S = np.linalg.solve(M[np.ix_(best_idx, best_idx)], M[best_idx][:, keep])
            M = M[np.ix_(keep, keep)] - M[keep][:, best_idx] @ S
            Z = M @ B[alive_feat[keep]]
            alive_feat = alive_feat[keep]
            where = {int(f): i for i, f in enumerate(alive_feat)}
            level = max(level, best_d / energy)
            score[best] = level
            alive.remove(best)
        score[alive[0]] = max(level, 1.0) * 2
        return score

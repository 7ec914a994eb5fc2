"""Statistics gathered on calibration data, accumulated in float64: per-channel activation moments
(for the data criteria) and Gram matrices of weighted layers (for least-squares refit and lsq)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from prunec.graph import Model
from prunec.layers import refit_kind

from .data import CalibData
from .stream import Tapper


@dataclass
class ChannelStats:
    """Streaming per-channel moments of one (tensor, axis)."""

    count: int = 0
    sum: np.ndarray | None = None
    sumsq: np.ndarray | None = None
    abssum: np.ndarray | None = None
    zeros: np.ndarray | None = None

    def update(self, a: np.ndarray, axis: int) -> None:
        a = np.asarray(a)
        axes = tuple(i for i in range(a.ndim) if i != axis % a.ndim)  # reduce in place: no transposed copy
        f64 = np.float64
        parts = (a.sum(axes, dtype=f64), np.square(a).sum(axes, dtype=f64), np.abs(a).sum(axes, dtype=f64),
                 np.count_nonzero(a == 0, axis=axes).astype(f64))
        if self.sum is None:
            self.sum, self.sumsq, self.abssum, self.zeros = parts
        else:
            self.sum += parts[0]
            self.sumsq += parts[1]
            self.abssum += parts[2]
            self.zeros += parts[3]
        self.count += a.size // a.shape[axis]

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)

    @property
    def mean_abs(self) -> np.ndarray:
        return self.abssum / max(self.count, 1)

    @property
    def mean_sq(self) -> np.ndarray:
        return self.sumsq / max(self.count, 1)

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.mean_sq - self.mean ** 2, 0.0)

    @property
    def zero_rate(self) -> np.ndarray:
        return self.zeros / max(self.count, 1)


def collect_stats(model: Model, data: CalibData, keys: list[tuple[str, int]], limit: int | None = None,
                  threads: int | None = None) -> dict[tuple[str, int], ChannelStats]:
    """Per-channel statistics of each (activation tensor, axis) over the calibration samples."""
    stats = {k: ChannelStats() for k in keys}
    tapper = Tapper(model, sorted({t for t, _ in keys}), threads, only_taps=True)

    def update(values: dict) -> None:
        for (t, axis), s in stats.items():
            s.update(values[t], axis)

    tapper.stream(data, update, limit)
    return stats


class GramAccumulator:
    """[X 1]^T [X 1] and [X 1]^T Y of one weighted layer (one pair per conv group), from rows of
    (input patch, output) pairs sampled from every sample (prunec.layers: `rows`)."""

    def __init__(self, node: gs.Node, rows: int, seed: int):
        self.node, self.rows = node, rows
        self.kind = refit_kind(node)
        self.rng = np.random.default_rng(seed)
        w = node.inputs[1].values
        self.groups = self.kind.groups(node)
        self.G = [None] * self.groups
        self.B = [None] * self.groups
        self.w_shape = w.shape
        self._buf: list = []
        self._buffered = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """x: the layer's input for a batch; y: the output to fit (same batch)."""
        xs, ys = [], []
        for i in range(x.shape[0]):  # rows of every sample of the batch, then one Gram update
            patches, targets = self.kind.rows(self.node, x[i], y[i], self.w_shape, self.rows, self.rng)
            xs.append(patches)
            ys.append(targets)
        self._buf.append((np.concatenate(xs), np.concatenate(ys)))
        self._buffered += len(self._buf[-1][0])
        if self._buffered >= self._buf[-1][0][0].size:  # a Gram update costs d^2 whatever the rows: batch them
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        patches = np.concatenate([p for p, _ in self._buf])
        targets = np.concatenate([t for _, t in self._buf])
        self._buf, self._buffered = [], 0
        cig = patches.shape[1] // self.groups
        cog = targets.shape[1] // self.groups
        for j in range(self.groups):
            X = patches[:, j * cig:(j + 1) * cig].reshape(len(patches), -1)
            self._acc(j, X, targets[:, j * cog:(j + 1) * cog])

    def _acc(self, j: int, X: np.ndarray, Y: np.ndarray) -> None:
        # products in float32 over one buffer (thousands of rows), sums across buffers in float64
        X = np.concatenate([X.astype(np.float32), np.ones((len(X), 1), np.float32)], axis=1)
        Y = Y.astype(np.float32)
        G, B = (X.T @ X).astype(np.float64), (X.T @ Y).astype(np.float64)
        if self.G[j] is None:
            self.G[j], self.B[j] = G, B
        else:
            self.G[j] += G
            self.B[j] += B


def collect_grams(model: Model, data: CalibData, jobs: list, rows: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """(G, B) of each job's layer (prunec.criteria.lsq.GramJob: node, x, y) in `model` on `data`."""
    accs = [GramAccumulator(j.node, rows, seed=i) for i, j in enumerate(jobs)]
    if not accs:
        return []
    tap = Tapper(model, sorted({t for j in jobs for t in (j.x, j.y)}), only_taps=True)

    def add(values):
        for j, acc in zip(jobs, accs):
            acc.add(values[j.x], values[j.y])
    tap.stream(data, add)
    for acc in accs:
        acc.flush()
    return [(acc.G[0], acc.B[0]) for acc in accs]

"""Reconstruction: refit the layers that read pruned channels so their outputs match the original's.

For every Conv / Gemm / MatMul whose constant weight lost input channels, solve on calibration data

    min_W  || Y_orig - [X_kept 1] W ||^2 + lam * || W - W_pruned ||^2

where Y_orig is that layer's output in the original model (the channels it still has) and X_kept is its
input in the pruned model. The intercept column refits the bias, which absorbs the mean contribution
of the removed channels. A BatchNorm after the layer keeps valid statistics because its input is what
it was. Ridge towards the pruned weights (not towards 0) keeps a layer near its start with little data.

Only Gram matrices X^T X and X^T Y are accumulated (float64), from a subsample of output positions of
each image (im2col rows for convolutions; grouped convolutions solve one system per group).

mode "sequential": layers are refitted level by level (a level's inputs come from the model with the
levels before it already refitted, so upstream error is corrected too); "local": one pass, every
layer sees the original model's input (cheaper, for deep models).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from prunec.calib import CalibData, Tapper, channel_sq, relative_error
from prunec.dependency import Analysis
from prunec.graph import Model
from prunec.layers import consumers, refit_kind
from prunec.plan import Plan

from .base import PassResult


@dataclass
class Layer:
    name: str  # node name (same in the original and the pruned graph)
    x: str  # data input
    y: str  # output
    in_mask: np.ndarray | None  # kept input channels of the original x (None: all)
    out_mask: np.ndarray | None  # kept output channels of the original y
    level: int = 0


def find_layers(analysis: Analysis, plan: Plan) -> list[Layer]:
    from prunec.passes.shrink import removal_map

    removed = removal_map(analysis, plan)
    by_id = {g.id: g for g in analysis.groups}
    uses: dict[str, int] = {}
    for n in analysis.graph.nodes:
        for t in n.inputs:
            if isinstance(t, gs.Constant):
                uses[t.name] = uses.get(t.name, 0) + 1
    layers: dict[str, Layer] = {}
    for gid in plan.groups:
        for node, x, wm, xm in consumers(analysis, by_id[gid]):
            w = node.inputs[1]
            if node.name in layers or not isinstance(w, gs.Constant) or uses.get(w.name, 0) != 1:
                continue  # a weight shared by several nodes is left as it is
            kind = refit_kind(node)
            if not kind.refittable(node, x, len(analysis.shape(x))):
                continue
            y = node.outputs[0]
            xa = kind.channel_axis(len(analysis.shape(x)))
            ya = kind.channel_axis(len(analysis.shape(y)))
            keep = analysis.spaces.keep_mask
            layers[node.name] = Layer(node.name, x.name, y.name,
                                      keep(analysis.layouts[(x.name, xa)], removed),
                                      keep(analysis.layouts[(y.name, ya)], removed))
    # levels: a layer's level is one more than that of the deepest refitted layer above it
    level_of_tensor: dict[str, int] = {}
    for n in analysis.graph.nodes:  # graph nodes are in topological order
        lvl = max([level_of_tensor.get(t.name, 0) for t in n.inputs] or [0])
        if n.name in layers:
            layers[n.name].level = lvl
            lvl += 1
        for o in n.outputs:
            level_of_tensor[o.name] = lvl
    return sorted(layers.values(), key=lambda l: l.level)


class Refit:
    """Gram accumulators of one layer in the pruned model."""

    def __init__(self, layer: Layer, node: gs.Node, rows: int, seed: int):
        self.layer, self.node, self.rows = layer, node, rows
        self.kind = refit_kind(node)
        self.rng = np.random.default_rng(seed)
        w = node.inputs[1].values
        self.groups = self.kind.groups(node)
        self.G = [None] * self.groups
        self.B = [None] * self.groups
        self.count = 0
        self.w_shape = w.shape
        self._buf: list = []
        self._buffered = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """x: pruned-model input of the layer for a batch; y: original output (kept channels)."""
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
        self.count += len(X) if j == 0 else 0

    # -------------------------------------------------------------- solve and write back
    def solve(self, lam: float) -> bool:
        self.flush()
        W0, b0 = self.kind.matrices(self.node, self.groups)
        if any(G is None for G in self.G):
            return False
        new_W, new_b = np.empty_like(W0), np.empty_like(b0)
        for j in range(self.groups):
            G, B = self.G[j], self.B[j]
            d = G.shape[0] - 1
            reg = lam * (np.trace(G[:d, :d]) / max(d, 1) + 1e-12)
            A = G.copy()
            A[np.arange(d), np.arange(d)] += reg
            rhs = B.copy()
            rhs[:d] += reg * W0[j]
            try:
                sol = np.linalg.solve(A, rhs)
            except np.linalg.LinAlgError:
                sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
            new_W[j], new_b[j] = sol[:d], sol[d]
        if not (np.all(np.isfinite(new_W)) and np.all(np.isfinite(new_b))):
            return False
        self.kind.write(self.node, new_W, new_b, self.w_shape)
        return True


# ----------------------------------------------------------------------------- driver
def _masked(a: np.ndarray, mask: np.ndarray | None, axis: int) -> np.ndarray:
    return a if mask is None else np.compress(mask, a, axis=axis)


def output_error(reference: Model, model: Model, data: CalibData) -> float:
    """Relative squared output error on the calibration samples, averaged over outputs and their
    axis-1 entries (see prunec.calib.relative_error)."""
    ta, tb = Tapper(reference, []), Tapper(model, [])
    num, den = None, None
    size = min(ta.batch, tb.batch) if ta.batched and tb.batched else 1
    for batch in data.batches(size):
        ra, rb = ta.run(batch), tb.run(batch)
        outs = ta.outputs[:ta.n_graph_outputs]
        n = [channel_sq(np.asarray(ra[o], np.float64) - np.asarray(rb[o], np.float64)) for o in outs]
        d = [channel_sq(ra[o]) for o in outs]
        num = n if num is None else [x + y for x, y in zip(num, n)]
        den = d if den is None else [x + y for x, y in zip(den, d)]
    return relative_error(num, den)


class OriginalValues:
    """The original model's tensors on the calibration data, batch by batch, kept in memory: a search
    that refits many candidate plans (prunec.search) reuses the same targets instead of rerunning them."""

    def __init__(self, original: Model, data: CalibData, tensors: list[str]):
        tap = Tapper(original, sorted(set(tensors)))
        self.data, self.size = data, tap.batch if tap.batched else 1
        self.values = [tap.run(b) for b in data.batches(self.size)]

    @staticmethod
    def nbytes(original: Model, data: CalibData, tensors: list[str]) -> int:
        per_sample = sum(int(np.prod(original.shapes[t][1:])) for t in set(tensors) if t in original.shapes)
        return 4 * per_sample * len(data)


def reconstruct(original: Model, analysis: Analysis, plan: Plan, pruned: Model, data: CalibData,
                mode: str = "auto", rows: int = 32, lam: float = 1e-3, max_levels: int = 16,
                log=lambda s: None, cache: OriginalValues | None = None) -> tuple[Model, dict]:
    """Refit the consumers of the pruned groups; returns the new model and what was done.
    `cache`: the original's tensors on `data`, computed once (it must hold every layer's x and y)."""
    t0 = time.perf_counter()
    layers = find_layers(analysis, plan)
    info = {"layers": 0, "mode": mode, "samples": len(data), "rows_per_sample": rows, "lambda": lam}
    if not layers:
        info["time_s"] = time.perf_counter() - t0
        return pruned, info
    levels = sorted({l.level for l in layers})
    if mode == "auto":
        mode = "sequential" if len(levels) <= max_levels else "local"
    info["mode"] = mode
    graph = pruned.graph.copy()
    nodes = {n.name: n for n in graph.nodes}
    layers = [l for l in layers if l.name in nodes and isinstance(nodes[l.name].inputs[1], gs.Constant)]
    refits = {l.name: Refit(l, nodes[l.name], rows, seed=i) for i, l in enumerate(layers)}
    if cache is not None and cache.data is not data:
        cache = None
    done = 0
    if mode == "local":
        def local(values):
            for l in layers:
                x = _masked(values[l.x], l.in_mask, refit_kind(nodes[l.name]).channel_axis(values[l.x].ndim))
                y = _masked(values[l.y], l.out_mask, refit_kind(nodes[l.name]).channel_axis(values[l.y].ndim))
                refits[l.name].add(x, y)
        if cache is not None:
            for values in cache.values:
                local(values)
        else:
            Tapper(original, sorted({t for l in layers for t in (l.x, l.y)})).stream(data, local)
        done = sum(r.solve(lam) for r in refits.values())
        current = pruned.with_graph(graph)
    else:
        current = pruned
        for lvl in levels:
            todo = [l for l in layers if l.level == lvl]
            cur_tap = Tapper(current, sorted({l.x for l in todo}))
            if cache is not None:
                size, cached = cache.size, iter(cache.values)
            else:
                y_tap = Tapper(original, sorted({l.y for l in todo}))
                size = min(cur_tap.batch, y_tap.batch) if cur_tap.batched and y_tap.batched else 1
            for batch in data.batches(size):
                vx = cur_tap.run(batch)
                vy = next(cached) if cache is not None else y_tap.run(batch)
                for l in todo:
                    y = _masked(vy[l.y], l.out_mask, refit_kind(nodes[l.name]).channel_axis(vy[l.y].ndim))
                    refits[l.name].add(vx[l.x], y)
            done += sum(refits[l.name].solve(lam) for l in todo)
            current = pruned.with_graph(graph)  # refits keep writing into `graph`; sessions read `current`
    info.update(layers=int(done), levels=len(levels), time_s=time.perf_counter() - t0)
    log(f"reconstruct: refitted {done} layers ({mode}, {len(levels)} levels) in {info['time_s']:.1f}s")
    return current, info


@dataclass
class ReconstructResult(PassResult):
    layers: int = 0  # layers refitted
    mode: str = ""
    levels: int = 0
    samples: int = 0
    rows_per_sample: int = 0
    lam: float = 0.0

    def report(self) -> dict:
        return {"layers": self.layers, "mode": self.mode, "samples": self.samples,
                "rows_per_sample": self.rows_per_sample, "lambda": self.lam, "levels": self.levels,
                "time_s": self.time_s}


class Reconstruct:
    """The pass: given the pruned model, refit the layers that read pruned channels so their outputs
    match `original`'s on `data` (`analysis` and `plan`: what was pruned, on `original`)."""

    name = "reconstruct"

    def __init__(self, original: Model, analysis: Analysis, plan: Plan, data: CalibData, mode: str = "auto",
                 log=lambda s: None, cache: OriginalValues | None = None, **solver):
        self.original, self.analysis, self.plan, self.data = original, analysis, plan, data
        self.mode, self.log, self.cache, self.solver = mode, log, cache, solver

    def __call__(self, pruned: Model) -> tuple[Model, ReconstructResult]:
        refit, info = reconstruct(self.original, self.analysis, self.plan, pruned, self.data, mode=self.mode,
                                  log=self.log, cache=self.cache, **self.solver)
        return refit, ReconstructResult(layers=info["layers"], mode=info["mode"], levels=info.get("levels", 0),
                                        samples=info["samples"], rows_per_sample=info["rows_per_sample"],
                                        lam=info["lambda"], time_s=info["time_s"])


# ----------------------------------------------------------------------------- Gram matrices for criterion lsq
def collect_grams(model: Model, data: CalibData, jobs: list, rows: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """[X 1]^T [X 1] and [X 1]^T Y of each job's layer (prunec.criteria.lsq.GramJob) in `model` on `data`."""
    refits = [Refit(Layer(j.node.name, j.x, j.y, None, None), j.node, rows, seed=i) for i, j in enumerate(jobs)]
    if not refits:
        return []
    tap = Tapper(model, sorted({t for j in jobs for t in (j.x, j.y)}))

    def add(values):
        for r in refits:
            r.add(values[r.layer.x], values[r.layer.y])
    tap.stream(data, add)
    for r in refits:
        r.flush()
    return [(r.G[0], r.B[0]) for r in refits]

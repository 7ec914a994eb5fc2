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
from prunec.graph import Model, from_proto
from prunec.importance import consumer_inputs
from prunec.plan import Plan


@dataclass
class Layer:
    name: str  # node name (same in the original and the pruned graph)
    op: str
    x: str  # data input
    y: str  # output
    in_mask: np.ndarray | None  # kept input channels of the original x (None: all)
    out_mask: np.ndarray | None  # kept output channels of the original y
    level: int = 0
    G: dict | None = None  # per conv group: Gram accumulators
    B: dict | None = None


def _channel_axis(op: str, rank: int) -> int:
    return rank - 1 if op == "MatMul" else 1


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
        for node, x, wm, xm in consumer_inputs(analysis, by_id[gid]):
            w = node.inputs[1]
            if node.name in layers or not isinstance(w, gs.Constant) or uses.get(w.name, 0) != 1:
                continue  # a weight shared by several nodes is left as it is
            if node.op == "Gemm" and (node.attrs.get("transA", 0) or node.inputs[0] is not x):
                continue
            if node.op == "MatMul" and node.inputs[0] is not x:
                continue
            if node.op == "Conv" and len(analysis.shape(x)) < 3:
                continue
            y = node.outputs[0]
            xa = _channel_axis(node.op, len(analysis.shape(x)))
            ya = _channel_axis(node.op, len(analysis.shape(y)))
            keep = analysis.spaces.keep_mask
            layers[node.name] = Layer(node.name, node.op, x.name, y.name,
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


# ----------------------------------------------------------------------------- design matrices
def _conv_geometry(node: gs.Node, x_shape, w_shape, y_shape):
    nd = len(x_shape) - 2
    k = list(w_shape[2:])
    s = list(node.attrs.get("strides", [1] * nd))
    d = list(node.attrs.get("dilations", [1] * nd))
    pads = list(node.attrs.get("pads", [0] * (2 * nd)))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nd):
            total = max(0, (y_shape[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x_shape[2 + i])
            small, big = total // 2, total - total // 2
            pads[i], pads[nd + i] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    return k, s, d, pads


def _conv_rows(x: np.ndarray, node: gs.Node, w_shape, y: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sample: x [C, *spatial], y [M, *out spatial] -> patches [P, C, K] and targets [P, M]."""
    k, s, d, pads = _conv_geometry(node, (1,) + x.shape, w_shape, (1,) + y.shape)
    nd = len(k)
    xp = np.pad(x, [(0, 0)] + [(pads[i], pads[nd + i]) for i in range(nd)])
    out_sp = y.shape[1:]
    coords = np.unravel_index(pos, out_sp)
    koffs = np.unravel_index(np.arange(int(np.prod(k))), k)
    idx = tuple(coords[i][:, None] * s[i] + koffs[i][None, :] * d[i] for i in range(nd))  # [P, K] each
    patches = xp[(slice(None),) + idx]  # [C, P, K]
    targets = y.reshape(y.shape[0], -1)[:, pos].T
    return patches.transpose(1, 0, 2), targets


class Refit:
    """Gram accumulators of one layer in the pruned model."""

    def __init__(self, layer: Layer, node: gs.Node, rows: int, seed: int):
        self.layer, self.node, self.rows = layer, node, rows
        self.rng = np.random.default_rng(seed)
        w = node.inputs[1].values
        self.groups = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
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
            if self.layer.op == "Conv":
                n_pos = int(np.prod(y.shape[2:]))
                pos = self.rng.choice(n_pos, min(self.rows, n_pos), replace=False)
                patches, targets = _conv_rows(x[i], self.node, self.w_shape, y[i], pos)
            else:
                patches = x[i].reshape(-1, x.shape[-1])[:, :, None]
                targets = y[i].reshape(-1, y.shape[-1])
                if len(patches) > self.rows:
                    pick = self.rng.choice(len(patches), self.rows, replace=False)
                    patches, targets = patches[pick], targets[pick]
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
    def current(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Current weights as [groups, d, cog] plus bias [groups, cog] and the output scale."""
        node, op = self.node, self.layer.op
        w = np.asarray(node.inputs[1].values, np.float64)
        b = node.inputs[2].values if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant) else None
        if op == "Conv":
            m = w.shape[0]
            cog = m // self.groups
            W = w.reshape(self.groups, cog, -1).transpose(0, 2, 1)
            bias = np.zeros(m) if b is None else np.asarray(b, np.float64).reshape(m)
            return W, bias.reshape(self.groups, cog), 1.0
        if op == "Gemm":
            alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
            W = (w.T if node.attrs.get("transB", 0) else w) * alpha
            m = W.shape[1]
            bias = np.zeros(m) if b is None else np.broadcast_to(np.asarray(b, np.float64) * beta, (m,)).copy()
            return W[None], bias[None], alpha
        return w[None], np.zeros((1, w.shape[1])), 1.0

    def solve(self, lam: float) -> bool:
        self.flush()
        W0, b0, _ = self.current()
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
        self._write(new_W, new_b)
        return True

    def _write(self, W: np.ndarray, b: np.ndarray) -> None:
        node, op = self.node, self.layer.op
        w_old = node.inputs[1]
        dtype = w_old.values.dtype
        if op == "Conv":
            w = W.transpose(0, 2, 1).reshape(self.w_shape)
        elif op == "Gemm":
            w = W[0] / float(node.attrs.get("alpha", 1.0))
            w = w.T if node.attrs.get("transB", 0) else w
        else:
            w = W[0]
        # same tensor names: group ids (anchored on weight names) stay stable across --steps rounds
        w_old.values = np.ascontiguousarray(w, dtype=dtype)
        bias = b.reshape(-1)
        if op == "MatMul":
            return  # no bias input: the intercept is dropped (a following Add keeps the original one)
        if op == "Gemm":
            if len(node.inputs) > 2:
                bias = bias / float(node.attrs.get("beta", 1.0))
            else:
                node.attrs["beta"] = 1.0
        if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant) and node.inputs[2].values.size == bias.size:
            node.inputs[2].values = np.ascontiguousarray(bias.reshape(node.inputs[2].values.shape), dtype=dtype)
        else:
            c = gs.Constant(f"{node.name}.refit_bias", np.ascontiguousarray(bias, dtype=dtype))
            if len(node.inputs) > 2:
                node.inputs[2] = c
            else:
                node.inputs.append(c)


# ----------------------------------------------------------------------------- driver
def _rebuild(model: Model, graph: gs.Graph) -> Model:
    proto = model.to_proto(restore_io=False, graph=graph)
    return from_proto(proto, input_shapes=model.input_shapes, source=model.source,
                      io_proto=model.io_proto, notes=list(model.notes))


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
                x = _masked(values[l.x], l.in_mask, _channel_axis(l.op, values[l.x].ndim))
                y = _masked(values[l.y], l.out_mask, _channel_axis(l.op, values[l.y].ndim))
                refits[l.name].add(x, y)
        if cache is not None:
            for values in cache.values:
                local(values)
        else:
            Tapper(original, sorted({t for l in layers for t in (l.x, l.y)})).stream(data, local)
        done = sum(r.solve(lam) for r in refits.values())
        current = _rebuild(pruned, graph)
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
                    y = _masked(vy[l.y], l.out_mask, _channel_axis(l.op, vy[l.y].ndim))
                    refits[l.name].add(vx[l.x], y)
            done += sum(refits[l.name].solve(lam) for l in todo)
            current = _rebuild(pruned, graph)  # refits keep writing into `graph`; sessions read `current`
    info.update(layers=int(done), levels=len(levels), time_s=time.perf_counter() - t0)
    log(f"reconstruct: refitted {done} layers ({mode}, {len(levels)} levels) in {info['time_s']:.1f}s")
    return current, info


# ----------------------------------------------------------------------------- reconstruction-aware selection
def selection_scores(model: Model, analysis: Analysis, data: CalibData, groups=None, rows: int = 64,
                     lam: float = 1e-3) -> dict[str, np.ndarray]:
    """Criterion "lsq": channel scores such that removing the lowest ones first is a greedy backward
    elimination of each consumer's inputs under least-squares refit (ThiNet-like): a channel's score is
    the output energy the refitted consumer loses when it goes (made non-decreasing along the removal
    order), relative to the consumer's output energy, summed over consumers. Gram matrices of the
    consumers' inputs in `model` (im2col rows as in reconstruction); downdates of the inverse keep
    each step O(d^2). Groups without a usable consumer get zeros (ties keep their natural order)."""
    groups = groups if groups is not None else analysis.prunable_groups
    jobs = []  # (group, refit, member positions)
    for i, g in enumerate(groups):
        for node, x, wm, xm in consumer_inputs(analysis, g):
            if node.op == "Conv" and (int(node.attrs.get("group", 1)) != 1 or len(analysis.shape(x)) < 3):
                continue
            if node.op == "Gemm" and (node.attrs.get("transA", 0) or node.inputs[0] is not x):
                continue
            if node.op == "MatMul" and node.inputs[0] is not x:
                continue
            lay = Layer(node.name, node.op, x.name, node.outputs[0].name, None, None)
            jobs.append((g, Refit(lay, node, rows, seed=len(jobs)), np.asarray(xm.positions)))
    out = {g.id: np.zeros(g.size) for g in groups}
    if not jobs:
        return out
    tap = Tapper(model, sorted({t for _, r, _ in jobs for t in (r.layer.x, r.layer.y)}))

    def add(values):
        for _, r, _ in jobs:
            r.add(values[r.layer.x], values[r.layer.y])
    tap.stream(data, add)
    for g, r, pos in jobs:
        r.flush()
        G, B = r.G[0], r.B[0]
        d = G.shape[0] - 1
        cin = r.w_shape[1] if r.layer.op == "Conv" else d
        K = d // cin
        A = G.copy()
        A[np.arange(d), np.arange(d)] += lam * (np.trace(G[:d, :d]) / max(d, 1) + 1e-12)
        try:
            M = np.linalg.inv(A)
        except np.linalg.LinAlgError:
            continue
        Z = M @ B
        energy = max(float(np.sum(B * Z)), 1e-30)
        blocks = [np.concatenate([np.arange(p * K, (p + 1) * K) for p in pos[c]]) for c in range(g.size)]
        alive_feat = np.arange(d + 1)  # positions of the alive features in M's index space
        where = {int(f): i for i, f in enumerate(alive_feat)}
        alive, score, level = list(range(g.size)), np.zeros(g.size), 0.0
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
        rank = np.empty(g.size)
        rank[np.argsort(score, kind="stable")] = np.arange(g.size)
        out[g.id] = out[g.id] + score + 1e-9 * rank
    return out

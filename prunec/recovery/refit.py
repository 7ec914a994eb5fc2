"""Least-squares refit of the layers that read pruned channels so their outputs match the original's.

For every weighted layer whose constant weight lost input channels (the kinds prunec.layers marks
`refit`: Conv, Gemm, MatMul), solve on calibration data

    min_W  || Y_orig - [X_kept 1] W ||^2 + lam * || W - W_pruned ||^2

where Y_orig is that layer's output in the original model (the channels it still has) and X_kept is its
input in the pruned model. The intercept column refits the bias, which absorbs the mean contribution
of the removed channels. A BatchNorm after the layer keeps valid statistics because its input is what
it was. Ridge towards the pruned weights (not towards 0) keeps a layer near its start with little data.

Only Gram matrices X^T X and X^T Y are accumulated (float64), from a subsample of output positions of
each image (im2col rows for convolutions; grouped convolutions solve one system per group).

mode "sequential": layers are refitted level by level (a level's inputs come from the model with the
levels before it already refitted, so upstream error is corrected too); a deep model's levels are
taken in at most `max_levels` passes of consecutive levels (a pass's layers see the model with every
earlier pass refitted). "local": one pass, every layer sees the original model's input (cheapest;
on YOLOv8n at 2x fewer MACs box F1 0.70 against 0.82 sequential, so "auto" is sequential).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from prunec.dependency import Analysis
from prunec.graph import Model
from prunec.layers import consumers, layer_levels, refit_kind
from prunec.macs import node_macs
from prunec.plan import Plan, removal_map

from .data import CalibData
from .statistics import GramAccumulator
from .stream import OriginalValues, Tapper, tap_batch
from .walk import Walk, model_proto, plan_walk

# What the sequential passes keep of the models' tensors between passes (both models together): on
# YOLOv8n at 2x fewer MACs ... (measured below)
WALK_BYTES = 1024 * 2**20
ROWS = 32  # output positions sampled per calibration sample and layer (the default of reconstruct)


@dataclass
class Layer:
    name: str  # node name (same in the original and the pruned graph)
    x: str  # data input
    y: str  # output
    in_mask: np.ndarray | None  # kept input channels of the original x (None: all)
    out_mask: np.ndarray | None  # kept output channels of the original y
    level: int = 0


def find_layers(analysis: Analysis, plan: Plan) -> list[Layer]:
    """The layers to refit: every refittable consumer of a pruned group whose weight is its own."""
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
    for name, lvl in layer_levels(analysis.graph, layers).items():
        layers[name].level = lvl
    return sorted(layers.values(), key=lambda l: l.level)


def solve(acc: GramAccumulator, lam: float) -> bool:
    """Solve the layer's ridge-regularized least squares (towards its current weights) and write the
    new weights and bias into its node; False (nothing written) without data or with a non-finite solution."""
    acc.flush()
    W0, b0 = acc.kind.matrices(acc.node, acc.groups)
    if any(G is None for G in acc.G):
        return False
    new_W, new_b = np.empty_like(W0), np.empty_like(b0)
    for j in range(acc.groups):
        G, B = acc.G[j], acc.B[j]
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
    acc.kind.write(acc.node, new_W, new_b, acc.w_shape)
    return True


def _masked(a: np.ndarray, mask: np.ndarray | None, axis: int) -> np.ndarray:
    return a if mask is None else np.compress(mask, a, axis=axis)


def _add(todo: list[Layer], first: int, nodes: dict, refits: dict, vx: dict, vy: dict) -> None:
    """One batch into the Grams of a pass's layers: the first level's inputs from the current model
    (vx), the other levels' inputs and every target from the original (vy)."""
    for l in todo:
        kind = refit_kind(nodes[l.name])
        y = _masked(vy[l.y], l.out_mask, kind.channel_axis(vy[l.y].ndim))
        x = vx[l.x] if l.level == first else _masked(vy[l.x], l.in_mask, kind.channel_axis(vy[l.x].ndim))
        refits[l.name].add(x, y)


def _sequential(original: Model, pruned: Model, graph, nodes: dict, layers: list[Layer], passes: list[list[int]],
                refits: dict, data: CalibData, cache: OriginalValues | None, lam: float, walk_bytes: int):
    """The passes of consecutive levels, each refitted on the model with the earlier passes refitted
    (see the module doc). Returns (model, layers refitted, how the models were run)."""
    todos = [[l for l in layers if l.level in chunk] for chunk in passes]
    # what each pass reads: the first level's inputs from the current model; the targets, and the later
    # levels' inputs (as in local mode: their inputs are being refitted towards those), from the original
    xs = [sorted({l.x for l in todo if l.level == chunk[0]}) for todo, chunk in zip(todos, passes)]
    ys = [sorted({l.y for l in todo} | {l.x for l in todo if l.level != chunk[0]})
          for todo, chunk in zip(todos, passes)]
    walks = _walks(original, pruned, xs, ys, [{l.y for l in todo} for todo in todos], data, cache, walk_bytes)
    done, current = 0, pruned
    for k, (todo, chunk) in enumerate(zip(todos, passes)):
        if walks is not None:
            cur, orig, _ = walks
            vxs = cur.step(k, current)
            vys = iter(cache.values) if orig is None else orig.step(k, original)
        else:
            cur_tap = Tapper(current, xs[k], only_taps=True)
            if cache is not None:
                size, vys = cache.size, iter(cache.values)
            else:
                y_tap = Tapper(original, ys[k], only_taps=True)
                size = min(cur_tap.batch, y_tap.batch) if cur_tap.batched and y_tap.batched else 1
            batches = list(data.batches(size))
            vxs = map(cur_tap.run, batches)
            if cache is None:
                vys = map(y_tap.run, batches)
        for vx, vy in zip(vxs, vys):
            _add(todo, chunk[0], nodes, refits, vx, vy)
        done += sum(solve(refits[l.name], lam) for l in todo)
        current = pruned.with_graph(graph)  # refits keep writing into `graph`; sessions read `current`
    if walks is None:
        return current, done, {"segments": [len(passes), 0 if cache is not None else len(passes)], "kept_bytes": 0}
    cur, orig, peak = walks
    fallbacks = cur.fallbacks + (orig.fallbacks if orig else 0)
    return current, done, {"segments": [cur.segments, orig.segments if orig else 0], "kept_bytes": int(peak),
                           **({"part_fallbacks": fallbacks} if fallbacks else {})}


def _walks(original: Model, pruned: Model, xs, ys, changes, data: CalibData, cache, walk_bytes: int):
    """(walk of the current model, walk of the original or None with a cache), or None where walking
    saves no run (no segment spans two passes: the plain passes run the same). The budget is split
    between the two walks where the fewest MACs run."""
    # Parts run with a Tapper's basic graph optimizations: the same kernels, so the same tensors and
    # the same refit to the bit (with all fusions, the solves of ill-posed layers amplify the rounding
    # differences: YOLOv8n 2x weights up to 1.3e-3 of their scale apart, box F1 and output error equal).
    if walk_bytes <= 0 or len(xs) < 2:
        return None
    if cache is not None:
        size = cache.size
    else:  # one batch size for every pass: the smallest a pass's runs would take alone
        size = min(min(tap_batch(pruned, x), tap_batch(original, y)) for x, y in zip(xs, ys))
    cur = _Planner(pruned, xs, data, changes)
    if cache is not None:
        steps, peak = cur.plan(walk_bytes)
        walk = Walk(steps, data, size, proto=(pruned, cur.proto))
        return (walk, None, peak) if walk.segments < len(xs) else None
    orig = _Planner(original, ys, data)
    plans = [(cur.plan(walk_bytes * share // 4), orig.plan(walk_bytes - walk_bytes * share // 4)) for share in range(5)]
    (csteps, cpeak), (osteps, opeak) = min(plans, key=lambda p: cur.macs(p[0][0]) + orig.macs(p[1][0]))
    if sum(s.start for s in csteps + osteps) == 2 * len(xs):
        return None
    return (Walk(csteps, data, size, proto=(pruned, cur.proto)), Walk(osteps, data, size, proto=(original, orig.proto)),
            cpeak + opeak)


class _Planner:
    """Walk plans of one model's pass targets at any budget, and the MACs a plan runs."""

    def __init__(self, model: Model, targets, data: CalibData, changes=None):
        self.model, self.targets, self.data, self.changes = model, targets, data, changes
        self.proto = model_proto(model)
        self.node_macs = {n.outputs[0].name: node_macs(n, model.shapes) for n in model.graph.nodes if n.outputs}

    def plan(self, budget: int):
        return plan_walk(self.proto, self.targets, lambda names: OriginalValues.nbytes(self.model, self.data, names),
                         budget, self.changes)

    def macs(self, steps) -> int:
        return sum(self.node_macs.get(n, 0) for s in steps for n in s.nodes)


def reconstruct(original: Model, analysis: Analysis, plan: Plan, pruned: Model, data: CalibData,
                mode: str = "auto", rows: int = ROWS, lam: float = 1e-3, max_levels: int = 16,
                log=lambda s: None, cache: OriginalValues | None = None,
                walk_bytes: int = WALK_BYTES) -> tuple[Model, dict]:
    """Refit the consumers of the pruned groups; returns the new model and what was done.
    `cache`: the original's tensors on `data`, computed once (it must hold every layer's x and y).
    `walk_bytes`: what the sequential passes may keep of the two models' tensors between passes
    (walk.py; 0: every pass runs both models from the input)."""
    t0 = time.perf_counter()
    layers = find_layers(analysis, plan)
    info = {"layers": 0, "mode": mode, "samples": len(data), "rows_per_sample": rows, "lambda": lam}
    if not layers:
        info["time_s"] = time.perf_counter() - t0
        return pruned, info
    levels = sorted({l.level for l in layers})
    if mode == "auto":
        mode = "sequential"
    passes = [list(c) for c in np.array_split(levels, min(len(levels), max(1, max_levels)))]
    info["mode"] = mode
    graph = pruned.graph.copy()
    nodes = {n.name: n for n in graph.nodes}
    layers = [l for l in layers if l.name in nodes and isinstance(nodes[l.name].inputs[1], gs.Constant)]
    refits = {l.name: GramAccumulator(nodes[l.name], rows, seed=i) for i, l in enumerate(layers)}
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
            Tapper(original, sorted({t for l in layers for t in (l.x, l.y)}), only_taps=True).stream(data, local)
        done = sum(solve(r, lam) for r in refits.values())
        current = pruned.with_graph(graph)
    else:
        current, done, walked = _sequential(original, pruned, graph, nodes, layers, passes, refits, data, cache,
                                            lam, walk_bytes)
        info["walk"] = walked
    info.update(layers=int(done), levels=len(levels), time_s=time.perf_counter() - t0)
    if mode == "sequential":
        info["passes"] = len(passes)
    log(f"reconstruct: refitted {done} layers ({mode}, {len(levels)} levels"
        f"{f' in {len(passes)} passes' if mode == 'sequential' else ''}) in {info['time_s']:.1f}s")
    return current, info

"""Sparsify: zero individual weights of Conv / Gemm / MatMul in a pattern (unstructured, N:M, block).

Takes a Model, returns a new Model (same graph, zeros in the weights, the annotation in its
metadata: see prunec.sparsity) and a SparsityResult record of what was done per layer.

Criteria: `magnitude` (|W|, data-free) and `wanda` (|W| x the RMS of the input feature it multiplies,
measured on calibration data with prunec.recovery's streaming statistics). With calibration data and
`reconstruct`, each layer's mask is chosen and its remaining weights updated by OBS row updates
(passes/sparse_obs.py) on the Gram matrix of its inputs, level by level: a layer's inputs come from
the model with the layers above already sparsified, its targets from the original model, so errors
made upstream are corrected too.
"""
from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from prunec.recovery.data import CalibData
from prunec.recovery.statistics import GramAccumulator, collect_stats
from prunec.recovery.stream import Tapper
from prunec.errors import PrunecError
from prunec.graph import Model
from prunec.layers import layer_levels, refit_kind
from prunec.sparsity import (ANNOTATION_NAME, LAYOUTS, Pattern, conv_view_order, from_matrix_view, make_mask,
                             matrix_view, merged_annotation, pattern_violations, unit_scores)

from .base import PassResult

CRITERIA = ("auto", "magnitude", "wanda")


@dataclass
class SparsityOptions:
    sparsity: float = 0.5  # share of zeros per layer (N:M patterns fix their own)
    pattern: str = "unstructured"
    criterion: str = "auto"  # auto: wanda with calibration data, magnitude without
    global_ranking: bool = False  # one threshold over all layers instead of the same share in each
    exclude: list[str] = field(default_factory=list)  # globs on node or weight names
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # glob -> share, first match wins
    reconstruct: bool | None = None  # OBS updates; default: on with calibration data
    rows: int = 128  # im2col rows sampled per calibration image for the Gram matrices
    damp: float = 0.01  # ridge towards the dense weights, relative to the mean diagonal of X^T X


@dataclass
class SparsityResult(PassResult):
    pattern: str = ""
    criterion: str = ""
    reconstructed: bool = False
    layers: list[dict] = field(default_factory=list)  # per sparsified layer: target, measured share, ...
    skipped: list[dict] = field(default_factory=list)  # layers left dense, with the reason
    zeros: int = 0
    weights: int = 0

    def report(self) -> dict:
        return {"pattern": self.pattern, "criterion": self.criterion, "reconstructed": self.reconstructed,
                "sparsity": self.zeros / self.weights if self.weights else 0.0,
                "zeros": self.zeros, "weights": self.weights, "layers": self.layers,
                "skipped": self.skipped, "notes": self.notes, "time_s": self.time_s}

    to_dict = report


@dataclass(eq=False)
class _Layer:
    node: gs.Node
    op: str
    x: str  # data input
    y: str
    trans_b: bool
    target: float = 0.0
    level: int = 0
    loss: float | None = None  # relative output energy lost (reconstructed layers)

    @property
    def weight(self) -> gs.Constant:
        return self.node.inputs[1]

    def view(self) -> np.ndarray:
        return matrix_view(self.op, np.asarray(self.weight.values), self.trans_b)

    def write_view(self, mat: np.ndarray) -> None:
        w = self.weight.values
        self.weight.values = from_matrix_view(self.op, mat, w.shape, self.trans_b).astype(w.dtype)

    def reconstructable(self, model: Model, pattern: Pattern) -> bool:
        kind = refit_kind(self.node)
        if kind is None or not kind.refit:
            return False
        if pattern.kind == "block" and (self.weight.values.shape[0] // kind.groups(self.node)) % pattern.rows:
            return False  # masks are chosen per conv group: tiles must not straddle two groups
        return kind.refittable(self.node, self.node.inputs[0], len(model.shapes.get(self.x, ())))


def _matches(globs: list[str], *names: str) -> str | None:
    return next((g for g in globs for n in names if fnmatch.fnmatchcase(n, g)), None)


def _find_layers(model: Model, graph: gs.Graph, opts: SparsityOptions, pattern: Pattern,
                 skipped: list[dict]) -> list[_Layer]:
    uses: dict[str, int] = {}
    for n in graph.nodes:
        for t in n.inputs:
            if isinstance(t, gs.Constant):
                uses[t.name] = uses.get(t.name, 0) + 1
    layers = []
    for n in graph.nodes:
        if n.op not in ("Conv", "Gemm", "MatMul") or len(n.inputs) < 2:
            continue
        w, x = n.inputs[1], n.inputs[0]
        name = n.name or n.outputs[0].name

        def skip(why):
            skipped.append({"node": name, "weight": w.name, "reason": why})

        if not isinstance(w, gs.Constant) or isinstance(x, gs.Constant):
            continue  # activation x activation: nothing to sparsify
        if (glob := _matches(opts.exclude, name, w.name)) is not None:
            skip(f"excluded by {glob!r}")
            continue
        if uses.get(w.name, 0) != 1:
            skip(f"weight shared by {uses[w.name]} nodes")
            continue
        if n.op == "MatMul" and w.values.ndim != 2:
            skip(f"batched MatMul weight of rank {w.values.ndim}")
            continue
        if w.values.dtype.kind != "f":
            skip(f"weight dtype {w.values.dtype} is not float")
            continue
        layer = _Layer(n, n.op, x.name, n.outputs[0].name, bool(n.attrs.get("transB", 0)))
        why = pattern.unfit(layer.view().shape)
        if why:
            skip(why)
            continue
        glob = _matches(list(opts.layer_sparsity), name, w.name)
        layer.target = pattern.fixed_sparsity if pattern.fixed_sparsity is not None else \
            opts.layer_sparsity[glob] if glob is not None else opts.sparsity
        layers.append(layer)
    return layers


# --------------------------------------------------------------------------- scores
def _input_norms(model: Model, layers: list[_Layer], data: CalibData) -> dict[str, np.ndarray]:
    """RMS of every input feature of each layer's data input (one value per channel)."""
    keys = {}
    for l in layers:
        rank = len(model.shapes[l.x])
        axis = rank - 1 if l.op == "MatMul" else (0 if l.op == "Gemm" and l.node.attrs.get("transA", 0) else 1)
        keys[l.x] = axis
    stats = collect_stats(model, data, sorted(keys.items()))
    return {t: np.sqrt(stats[(t, a)].mean_sq) for t, a in keys.items()}


def _column_norms(layer: _Layer, norms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-entry input RMS of the matrix view [rows, cols] (grouped convs: each row its group's channels)."""
    if layer.op != "Conv":
        return np.broadcast_to(norms[None, :], shape)
    w = layer.weight.values
    groups = int(layer.node.attrs.get("group", 1))
    cg, taps, rows_per_group = w.shape[1], int(np.prod(w.shape[2:])), w.shape[0] // groups
    per_group = norms.reshape(groups, cg)
    cols = np.tile(per_group, (1, taps))  # [groups, taps * cg], channels innermost
    return np.repeat(cols, rows_per_group, axis=0)


def _scores(layer: _Layer, criterion: str, norms: dict | None) -> np.ndarray:
    mat = np.abs(layer.view().astype(np.float64))
    if criterion == "wanda":
        mat = mat * _column_norms(layer, norms[layer.x], mat.shape)
    return mat


def _global_targets(layers: list[_Layer], scores: dict[str, np.ndarray], pattern: Pattern, share: float) -> None:
    """One score threshold over every layer's units; each layer's target becomes its share below it."""
    units = [unit_scores(scores[l.node.name], pattern).ravel() for l in layers]
    allu = np.sort(np.concatenate(units))
    k = int(round(share * len(allu)))
    threshold = allu[k - 1] if k else -np.inf
    for l, u in zip(layers, units):
        l.target = float(np.mean(u <= threshold)) if k else 0.0


# --------------------------------------------------------------------------- reconstruction
def _obs_layer(layer: _Layer, refit, pattern: Pattern, damp: float) -> float:
    """OBS-prune one layer from its Gram accumulators; writes weights and bias. Returns the share
    of the layer's output energy the sparse weights lose on the calibration rows (relative)."""
    from .sparse_obs import obs_prune

    refit.flush()
    W0, b0 = refit.kind.matrices(refit.node, refit.groups)  # [groups, d, cog], [groups, cog]
    groups, d, cog = W0.shape
    with_bias = layer.op != "MatMul"  # MatMul has no bias input to absorb an intercept
    order = conv_view_order((cog,) + tuple(refit.w_shape[1:])) if layer.op == "Conv" else np.arange(d)
    new_W, new_b = np.empty_like(W0), np.array(b0)
    lost, energy = 0.0, 0.0
    for j in range(groups):
        G, B = refit.G[j], refit.B[j]
        if not with_bias:
            G, B = G[:d, :d], B[:d]
        n = len(G)
        reg = damp * (np.trace(G[:d, :d]) / max(d, 1) + 1e-12)
        A = G.copy()
        A[np.arange(d), np.arange(d)] += reg
        start = np.vstack([W0[j], b0[j][None]]) if with_bias else W0[j]
        rhs = B.copy()
        rhs[:d] += reg * W0[j]
        W_star = np.linalg.solve(A, rhs)  # dense least-squares optimum on these inputs (ridge to W0)
        perm = np.concatenate([order, np.arange(d, n)])
        W_sparse, _ = obs_prune(W_star[perm].T, A[np.ix_(perm, perm)], pattern, layer.target, frozen=n - d)
        W_sparse = W_sparse.T
        sol = np.empty_like(W_sparse)
        sol[perm] = W_sparse
        new_W[j] = sol[:d]
        if with_bias:
            new_b[j] = sol[d]
        delta = sol - W_star
        lost += float(np.sum(delta * (A @ delta)))
        energy += float(np.sum(start * (A @ start)))
        del start
    refit.kind.write(refit.node, new_W, new_b, refit.w_shape)
    return lost / max(energy, 1e-30)


def _reconstruct(model: Model, graph: gs.Graph, layers: list[_Layer], data: CalibData, pattern: Pattern,
                 opts: SparsityOptions, log) -> None:
    by_name = {l.node.name: l for l in layers}
    for name, lvl in layer_levels(graph, by_name).items():
        by_name[name].level = lvl
    current = model
    for lvl in sorted({l.level for l in layers}):
        todo = [l for l in layers if l.level == lvl]
        refits = {l.node.name: GramAccumulator(l.node, opts.rows, seed=i)
                  for i, l in enumerate(todo)}
        x_tap = Tapper(current, sorted({l.x for l in todo}), only_taps=True)
        y_tap = Tapper(model, sorted({l.y for l in todo}), only_taps=True)
        size = min(x_tap.batch, y_tap.batch) if x_tap.batched and y_tap.batched else 1
        for batch in data.batches(size):
            vx, vy = x_tap.run(batch), y_tap.run(batch)
            for l in todo:
                refits[l.node.name].add(vx[l.x], vy[l.y])
        for l in todo:
            l.loss = _obs_layer(l, refits[l.node.name], pattern, opts.damp)
        current = model.with_graph(graph)
        log(f"sparsify: level {lvl}: {len(todo)} layers reconstructed")


# --------------------------------------------------------------------------- the pass
def sparsify(model: Model, opts: SparsityOptions, data: CalibData | None = None,
             log=lambda s: None) -> tuple[Model, SparsityResult]:
    t0 = time.perf_counter()
    pattern = Pattern.parse(opts.pattern)
    shares = [opts.sparsity] + list(opts.layer_sparsity.values())
    if pattern.kind != "nm" and not all(0.0 <= s < 1.0 for s in shares):
        raise PrunecError(f"--sparsity {max(shares)}: must be in [0, 1)")
    if opts.criterion not in CRITERIA:
        raise PrunecError(f"--sparsity-criterion {opts.criterion!r}: expected one of {', '.join(CRITERIA)}")
    if pattern.kind == "nm" and opts.global_ranking:
        raise PrunecError(f"--sparsity-global with --pattern {pattern}: N:M fixes the share of zeros in every "
                          "group; drop --sparsity-global")
    criterion = opts.criterion if opts.criterion != "auto" else ("wanda" if data is not None else "magnitude")
    if criterion == "wanda" and data is None:
        raise PrunecError("--sparsity-criterion wanda needs calibration data: give --calib FILE.npz or an image folder")
    recon = (data is not None) if opts.reconstruct is None else opts.reconstruct
    if recon and data is None:
        raise PrunecError("sparse reconstruction needs calibration data: give --calib, or --no-reconstruct")
    graph = model.graph.copy()
    skipped: list[dict] = []
    layers = _find_layers(model, graph, opts, pattern, skipped)
    notes = []
    norms = _input_norms(model, layers, data) if criterion == "wanda" and layers else None
    scores = {l.node.name: _scores(l, criterion, norms) for l in layers}
    if opts.global_ranking and layers:
        _global_targets(layers, scores, pattern, opts.sparsity)
    to_rebuild = [l for l in layers if recon and l.reconstructable(model, pattern)]
    for l in layers:
        if l in to_rebuild:
            continue
        # global ranking set l.target to the layer's share under the global threshold: same mask
        per_row = criterion == "wanda" and not opts.global_ranking
        mat = l.view()
        keep = make_mask(scores[l.node.name], pattern, l.target, per_row)
        l.write_view(np.where(keep, mat, 0).astype(mat.dtype))
        if recon:
            notes.append(f"{l.node.name}: mask only, no reconstruction (input layout, or blocks across conv groups)")
    if to_rebuild:
        _reconstruct(model, graph, to_rebuild, data, pattern, opts, log)
    out = model.with_graph(graph)
    result = SparsityResult(pattern=str(pattern), criterion=criterion, reconstructed=bool(to_rebuild),
                            skipped=skipped, notes=notes)
    annotation = {}
    for l in layers:
        mat = l.view()
        zeros = int(np.count_nonzero(mat == 0))
        bad = pattern_violations(mat, pattern)
        if bad:  # a bug, not bad input: the pass must never write a broken pattern
            raise AssertionError(f"sparsify: {l.node.name}: {bad} units break {pattern}")
        entry = {"node": l.node.name, "op": l.op, "pattern": str(pattern), "sparsity": zeros / mat.size,
                 "criterion": criterion, "reconstructed": l in to_rebuild, "matrix": list(mat.shape),
                 "layout": LAYOUTS[l.op]}
        annotation[l.weight.name] = entry
        row = dict(entry, weight=l.weight.name, target=l.target)
        if l.loss is not None:
            row["layer_error"] = l.loss
        result.layers.append(row)
        result.zeros += zeros
        result.weights += mat.size
    out = out.with_annotations(**{ANNOTATION_NAME: merged_annotation(out.annotations, annotation)})
    result.time_s = time.perf_counter() - t0
    log(f"sparsify: {len(layers)} layers, {result.zeros:,} of {result.weights:,} weights zero "
        f"({pattern}, {criterion}{', reconstructed' if to_rebuild else ''}) in {result.time_s:.1f}s")
    return out, result


class Sparsify:
    """The pass: `Sparsify(opts, data)(model) -> (model with zeros and annotation, SparsityResult)`."""

    name = "sparsify"

    def __init__(self, opts: SparsityOptions, data: CalibData | None = None, log=lambda s: None):
        self.opts, self.data, self.log = opts, data, log

    def __call__(self, model: Model) -> tuple[Model, SparsityResult]:
        return sparsify(model, self.opts, self.data, self.log)

"""Low-rank factorization of large linear layers, fitted to the calibration data.

Channel pruning cannot shrink a layer's output when the output is the model's (a text recognizer's
8210-class CTC layer, a language model's vocabulary projection): there, removing a channel changes
what the model means. Such a layer can still be cheaper. Its outputs on real inputs live close to a
low-dimensional subspace, so W (out x in) is replaced by Q (out x r) times Q^T W (r x in), where the
columns of Q span the top-r directions of the layer's outputs on the calibration inputs (reduced-rank
regression: of all rank-r layers it keeps the most of those outputs). The rank is the smallest
multiple of 8 whose error on the held-out calibration split stays within `tol` of the outputs'
variance; a layer is rewritten only when that saves at least `min_saving` of its MACs.

Gemm(X, W, B) becomes Gemm(X, Q^T W) -> Gemm(., Q, B); MatMul(X, W) becomes two MatMuls. The r
channels between them are an ordinary channel group for the pruning that follows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from prunec.graph import Model
from prunec.recovery.data import CalibData
from prunec.recovery.stream import Tapper

from .base import PassResult

TOL = 2e-3  # held-out squared error allowed, as a share of the layer outputs' variance
MIN_SAVING = 0.3  # rewrite a layer only when it gets at least this much cheaper
MIN_WEIGHTS = 1 << 18  # smaller layers are not worth a second node
BASE_MACS = "factorize_base_macs"  # annotation: the MACs before factorizing (the Prune pass's basis)


@dataclass
class FactorizeResult(PassResult):
    layers: list[dict] = field(default_factory=list)  # name, in, out, rank, held-out error, MACs share kept
    tol: float = TOL

    def report(self) -> dict:
        return {"layers": self.layers, "tol": self.tol, "time_s": self.time_s, "notes": self.notes}


@dataclass
class _Linear:
    node: gs.Node
    w: np.ndarray  # [out, in]
    x: str  # the input tensor's name


def candidates(model: Model) -> list[_Linear]:
    """Gemm (alpha 1, no transA) and MatMul layers with a constant 2-D float weight large enough to
    matter, for which the smallest rank (8) would save at least MIN_SAVING of their MACs."""
    found = []
    for node in model.graph.nodes:
        if node.op not in ("Gemm", "MatMul") or len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
            continue
        w = np.asarray(node.inputs[1].values)
        if w.ndim != 2 or w.size < MIN_WEIGHTS or not np.issubdtype(w.dtype, np.floating):
            continue
        if node.op == "Gemm":
            if float(node.attrs.get("alpha", 1.0)) != 1.0 or node.attrs.get("transA", 0):
                continue
            w = w if node.attrs.get("transB", 0) else w.T
        else:
            w = w.T  # MatMul's weight is [in, out]
        out, inp = w.shape
        if 1.0 - 8 * (out + inp) / (out * inp) < MIN_SAVING:
            continue
        found.append(_Linear(node, w.astype(np.float64), node.inputs[0].name))
    return found


def _rows(values: np.ndarray, width: int) -> np.ndarray:
    return values.reshape(-1, width).astype(np.float64)


def choose_rank(w: np.ndarray, fit_gram: np.ndarray, check_x: np.ndarray, tol: float, max_rank: int):
    """(rank, Q, held-out error share) of the smallest rank (a multiple of 8, at most max_rank)
    within tol; None when no such rank. Q: the top directions of W X^T over the fit rows, from the
    SVD of W L where L L^T is their Gram matrix (out x in instead of out x out)."""
    ev, vec = np.linalg.eigh(fit_gram)
    root = vec * np.sqrt(np.clip(ev, 0.0, None))  # G = root root^T
    u, _, _ = np.linalg.svd(w @ root, full_matrices=False)
    y = check_x @ w.T
    var = float(np.square(y - y.mean(0)).sum()) or 1.0
    proj = y @ u  # the held-out outputs in the basis of directions
    total = float(np.square(y).sum())
    kept = np.cumsum(np.square(proj).sum(0))  # energy kept by the first r directions
    for r in range(8, max_rank + 1, 8):
        err = (total - float(kept[r - 1])) / var
        if err <= tol:
            return r, u[:, :r], err
    return None


class Factorize:
    """The pass: `Factorize(fit, check)(model) -> (model with low-rank layers, FactorizeResult)`."""

    name = "factorize"

    def __init__(self, fit: CalibData, check: CalibData, tol: float = TOL, log=lambda s: None):
        self.fit, self.check, self.tol, self.log = fit, check, tol, log

    def __call__(self, model: Model) -> tuple[Model, FactorizeResult]:
        from prunec.macs import graph_macs

        t0 = time.perf_counter()
        result = FactorizeResult(name=self.name, tol=self.tol)
        found = candidates(model)
        if not found or len(self.check) == 0:
            return model, result
        grams = {c.node.name: np.zeros((c.w.shape[1],) * 2) for c in found}
        tap = Tapper(model, sorted({c.x for c in found}), only_taps=True)

        held = {c.node.name: [] for c in found}

        def add(values):  # fit split: Gram matrices of the inputs
            for c in found:
                x = _rows(values[c.x], c.w.shape[1])
                grams[c.node.name] += x.T @ x

        def keep(values):  # held-out split: the input rows themselves (the rank is chosen on them)
            for c in found:
                held[c.node.name].append(_rows(values[c.x], c.w.shape[1]))
        tap.stream(self.fit, add)
        tap.stream(self.check, keep)
        graph = model.graph.copy()
        nodes = {n.name: n for n in graph.nodes}
        for c in found:
            out, inp = c.w.shape
            max_rank = int(out * inp * (1 - MIN_SAVING) / (out + inp)) // 8 * 8
            chosen = choose_rank(c.w, grams[c.node.name], np.concatenate(held[c.node.name]), self.tol, max_rank)
            if chosen is None:
                continue
            r, q, err = chosen
            _rewrite(graph, nodes[c.node.name], (q.T @ c.w).astype(np.float32), q.astype(np.float32))
            result.layers.append({"name": c.node.name, "in": inp, "out": out, "rank": r,
                                  "held_out_error": round(err, 6), "macs_kept": round(r * (out + inp) / (out * inp), 4)})
            self.log(f"factorize: {c.node.name} {out}x{inp} -> rank {r} (held-out error {err:.2e})")
        result.time_s = time.perf_counter() - t0
        if not result.layers:
            return model, result
        graph.toposort()
        base = model.annotations.get(BASE_MACS) or graph_macs(model.graph, model.shapes)
        return model.with_graph(graph).with_annotations(**{BASE_MACS: int(base)}), result


def _rewrite(graph: gs.Graph, node: gs.Node, first_w: np.ndarray, second_w: np.ndarray) -> None:
    """node(X, W[, B]) -> node'(X, first) -> node(., second[, B]); first_w [r, in], second_w [out, r]."""
    x = node.inputs[0]
    mid = gs.Variable(f"{node.name}__lowrank", dtype=x.dtype)
    if node.op == "Gemm":
        first = gs.Node("Gemm", f"{node.name}__lowrank_in", attrs={"transB": 1},
                        inputs=[x, gs.Constant(f"{node.name}__lowrank_w1", first_w)], outputs=[mid])
        node.inputs[1] = gs.Constant(f"{node.name}__lowrank_w2", second_w)
        node.attrs["transB"] = 1
    else:
        first = gs.Node("MatMul", f"{node.name}__lowrank_in",
                        inputs=[x, gs.Constant(f"{node.name}__lowrank_w1", np.ascontiguousarray(first_w.T))],
                        outputs=[mid])
        node.inputs[1] = gs.Constant(f"{node.name}__lowrank_w2", np.ascontiguousarray(second_w.T))
    node.inputs[0] = mid
    graph.nodes.append(first)

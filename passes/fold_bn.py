"""Fold BatchNormalization into the Conv that feeds it (inference graphs)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from prunec.graph import Model

from .base import PassResult


@dataclass
class FoldResult(PassResult):
    folded: int = 0  # BatchNormalization nodes folded away


def _foldable(bn: gs.Node, graph_outputs: set[str]) -> gs.Node | None:
    x = bn.inputs[0]
    if len(x.inputs) != 1 or len(x.outputs) != 1 or x.name in graph_outputs:
        return None
    prev = x.inputs[0]
    if prev.op != "Conv" or not isinstance(prev.inputs[1], gs.Constant):
        return None
    if len(prev.inputs) > 2 and prev.inputs[2].name and not isinstance(prev.inputs[2], gs.Constant):
        return None
    if not all(isinstance(t, gs.Constant) for t in bn.inputs[1:5]) or len(bn.outputs) != 1:
        return None
    return prev


class FoldBatchNorm:
    """Each BatchNormalization whose input comes only from a Conv with constant weights is folded
    into that Conv's weight and bias."""

    name = "fold_bn"

    def __call__(self, model: Model) -> tuple[Model, FoldResult]:
        graph = model.graph.copy()
        outputs = {t.name for t in graph.outputs}
        folded = 0
        for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
            conv = _foldable(bn, outputs)
            if conv is None:
                continue
            gamma, beta, mean, var = (np.asarray(t.values, dtype=np.float64) for t in bn.inputs[1:5])
            eps = float(bn.attrs.get("epsilon", 1e-5))
            scale = gamma / np.sqrt(var + eps)
            w = conv.inputs[1]
            wv = np.asarray(w.values, dtype=np.float64)
            bias = (np.asarray(conv.inputs[2].values, dtype=np.float64)
                    if len(conv.inputs) > 2 and conv.inputs[2].name else np.zeros(wv.shape[0]))
            new_w = wv * scale.reshape(-1, *([1] * (wv.ndim - 1)))
            new_b = (bias - mean) * scale + beta
            dtype = w.values.dtype
            new_inputs = [conv.inputs[0], gs.Constant(f"{w.name}__bnfold", new_w.astype(dtype)),
                          gs.Constant(f"{conv.name}__bnfold_bias", new_b.astype(dtype))]
            conv.inputs.clear()
            conv.inputs.extend(new_inputs)
            y = bn.outputs[0]
            conv.outputs[0].outputs.clear()  # old conv output (fed only the BN) is dropped
            conv.outputs.clear()
            conv.outputs.append(y)
            bn.outputs.clear()
            bn.inputs.clear()
            folded += 1
        graph.cleanup()
        notes = [f"folded {folded} BatchNormalization nodes into convolutions"]
        return model.with_graph(graph), FoldResult(folded=folded, notes=notes)

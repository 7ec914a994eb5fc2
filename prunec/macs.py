"""Multiply-accumulate counts and parameter counts from static shapes."""
from __future__ import annotations

from math import prod

import numpy as np
import onnx_graphsurgeon as gs


def _shape(t: gs.Tensor, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    if isinstance(t, gs.Constant):
        return tuple(t.shape)
    return shapes.get(t.name)


def node_macs(node: gs.Node, shapes: dict[str, tuple[int, ...]]) -> int:
    """MACs of Conv, ConvTranspose, Gemm and MatMul; 0 for everything else."""
    ins = [_shape(t, shapes) if t.name else None for t in node.inputs]
    outs = [_shape(t, shapes) for t in node.outputs]
    if node.op in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1] and outs[0] and ins[0]:
        w = ins[1]
        if node.op == "Conv":  # every output element reads Cin/g * kernel inputs
            return prod(outs[0]) * prod(w[1:])
        return prod(ins[0]) * prod(w[1:])  # every input element is scattered into Cout/g * kernel outputs
    if node.op == "Gemm" and ins[0] and ins[1] and outs[0]:
        k = ins[0][0] if node.attrs.get("transA", 0) else ins[0][-1]
        return prod(outs[0]) * k
    if node.op == "MatMul" and ins[0] and ins[1] and outs[0]:
        k = ins[0][-1] if len(ins[0]) > 1 else ins[0][0]
        return prod(outs[0]) * k
    return 0


def graph_macs(graph: gs.Graph, shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(node_macs(n, shapes) for n in graph.nodes)


def graph_params(graph: gs.Graph) -> int:
    """Elements of floating-point constants (weights), counted once each."""
    total = 0
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant) and np.issubdtype(np.dtype(t.dtype), np.floating):
            total += int(prod(t.shape))
    return total

"""Multiply-accumulate counts and parameter counts from static shapes."""
from __future__ import annotations

from math import prod

import numpy as np
import onnx_graphsurgeon as gs

from .layers import kind_of
from .subgraphs import all_nodes, all_tensors


def _shape(t: gs.Tensor, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    if isinstance(t, gs.Constant):
        return tuple(t.shape)
    return shapes.get(t.name)


def node_macs(node: gs.Node, shapes: dict[str, tuple[int, ...]]) -> int:
    """MACs of a weighted layer (prunec.layers: Conv, ConvTranspose, Gemm, MatMul, recurrent and
    quantized ops); 0 for everything else."""
    kind = kind_of(node)
    if kind is None:
        return 0
    ins = [_shape(t, shapes) if t.name else None for t in node.inputs]
    outs = [_shape(t, shapes) for t in node.outputs]
    return kind.macs(node, ins, outs)


def graph_macs(graph: gs.Graph, shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(node_macs(n, shapes) for n in all_nodes(graph))  # a body counted once


def graph_params(graph: gs.Graph) -> int:
    """Elements of weights (floating-point and 8-bit quantized constants), counted once each."""
    total = 0
    for t in all_tensors(graph).values():
        if isinstance(t, gs.Constant) and (np.issubdtype(np.dtype(t.dtype), np.floating)
                                           or np.dtype(t.dtype) in (np.int8, np.uint8)):
            total += int(prod(t.shape))
    return total

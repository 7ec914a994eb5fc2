"""Small helpers shared by the rules."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def present(t: gs.Tensor | None) -> bool:
    return t is not None and bool(t.name)


def input_at(node: gs.Node, i: int) -> gs.Tensor | None:
    return node.inputs[i] if len(node.inputs) > i and present(node.inputs[i]) else None


def passthrough(node: gs.Node, ctx, x: gs.Tensor | None = None, y: gs.Tensor | None = None) -> None:
    """Every axis of the output is the same space as the same axis of the input."""
    x = x or node.inputs[0]
    y = y or node.outputs[0]
    for i in range(ctx.rank(y)):
        ctx.set_axis(y, i, ctx.axis(x, i))


def int_list(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def axes_of(node: gs.Node, ctx, input_index: int, rank: int, attr: str = "axes") -> list[int] | None:
    """Axes from an attribute (older opsets) or a constant input (newer); None if computed at run time."""
    if attr in node.attrs:
        return [a % rank for a in node.attrs[attr]]
    t = input_at(node, input_index)
    if t is None:
        return []
    values = ctx.const(t)
    if values is None:
        return None
    return [a % rank for a in int_list(values)]

"""If, Loop and Scan: bodies are subgraphs that read tensors of the enclosing graph by name.

Such a read is invisible in the node's inputs, so without this rule a channel used inside a body
would look free to prune and the pruned body would no longer match. Every tensor the node touches,
its inputs, its outputs and whatever its bodies read from outside, keeps all its channels.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from . import rule


def outer_reads(node: gs.Node) -> list[gs.Tensor]:
    """Tensors of enclosing graphs read inside the node's bodies (nested bodies included)."""
    found: dict[str, gs.Tensor] = {}
    for value in node.attrs.values():
        for body in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(body, gs.Graph):
                _body_reads(body, found)
    return list(found.values())


def _body_reads(body: gs.Graph, found: dict[str, gs.Tensor]) -> None:
    local = {t.name for t in body.inputs}
    for n in body.nodes:
        local.update(t.name for t in n.outputs)
    for n in body.nodes:
        for t in n.inputs:
            if t.name and t.name not in local:
                found.setdefault(t.name, t)
        nested = []
        for value in n.attrs.values():
            nested += [g for g in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(g, gs.Graph)]
        for g in nested:
            inner: dict[str, gs.Tensor] = {}
            _body_reads(g, inner)
            for name, t in inner.items():
                if name not in local:
                    found.setdefault(name, t)


@rule("If", "Loop", "Scan")
def control_flow(node, ctx):
    where = ctx.where()
    touched = [t for t in list(node.inputs) + list(node.outputs) if t.name]
    for t in touched:
        if isinstance(t, gs.Constant) or t.name in ctx.model.shapes:
            ctx.block_tensor(t, f"{where} is not pruned through (control flow)")
    for t in outer_reads(node):
        if isinstance(t, gs.Constant) or t.name in ctx.model.shapes:
            ctx.block_tensor(t, f"read inside the body of {where}")

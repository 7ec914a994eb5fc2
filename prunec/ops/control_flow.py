"""If, Loop and Scan: channels flow through their bodies.

A body is analysed like the main graph, by the same rules, as part of the one dependency graph:
its inputs and outputs are unified axis by axis with the node's (If: both branches' outputs with
the node's outputs; Loop/Scan: initial state = body state in = body state out = final state; a
scanned input's slice and a scan output's slice with the stacked tensor minus its scan axis).
Tensors of the enclosing graph a body reads by name are the same tensors there, so a group used
in a body in a way no rule can follow stays blocked. When a body's shapes are not all known
statically (a loop state that changes size), every tensor the node touches keeps all its channels.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..subgraphs import all_tensors, subgraphs
from . import rule


def outer_reads(node: gs.Node) -> list[gs.Tensor]:
    """Tensors of enclosing graphs read inside the node's bodies (nested bodies included)."""
    found: dict[str, gs.Tensor] = {}
    for body in subgraphs(node):
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
        for g in subgraphs(n):
            inner: dict[str, gs.Tensor] = {}
            _body_reads(g, inner)
            for name, t in inner.items():
                if name not in local:
                    found.setdefault(name, t)


def _known(t: gs.Tensor, ctx) -> bool:
    return isinstance(t, gs.Constant) or t.name in ctx.model.shapes


def _fully_shaped(node: gs.Node, ctx) -> bool:
    outs = [t for t in node.outputs if t.name]
    inner = [t for body in subgraphs(node) for t in all_tensors(body).values()]
    return all(_known(t, ctx) for t in outs + inner)


def _block_all(node, ctx, why: str) -> None:
    where = ctx.where()
    for t in [t for t in list(node.inputs) + list(node.outputs) if t.name]:
        if _known(t, ctx):
            ctx.block_tensor(t, f"{where} is not pruned through ({why})")
    for t in outer_reads(node):
        if _known(t, ctx):
            ctx.block_tensor(t, f"read inside the body of {where} ({why})")


def _same(ctx, tensors: list[gs.Tensor]) -> None:
    """Tensors that are one value seen from both sides of a body boundary: the same space per axis
    (the first one's, created if none has one yet). Different shapes: all blocked."""
    tensors = [t for t in tensors if t is not None and t.name]
    shapes = {ctx.shape(t) for t in tensors}
    if len(shapes) != 1:
        for t in tensors:
            ctx.block_tensor(t, f"{ctx.where()}: the value changes shape across the body boundary")
        return
    for i in range(len(shapes.pop())):
        known = [t for t in tensors if (t.name, i) in ctx.layouts or isinstance(t, gs.Constant)]
        space = ctx.axis(known[0], i) if known else ctx.new(ctx.shape(tensors[0])[i])
        for t in tensors:
            ctx.set_axis(t, i, space)


def _stacked(ctx, x: gs.Tensor, scan_axis: int, inner: gs.Tensor) -> None:
    """x is `inner` stacked along scan_axis (one slice per iteration): the other axes are shared."""
    r = ctx.rank(x)
    scan_axis %= r
    if ctx.rank(inner) != r - 1:
        ctx.block_tensor(x, f"{ctx.where()}: scanned tensor and its slice disagree in rank")
        return
    for i in range(r):
        if i == scan_axis:
            continue
        j = i - (i > scan_axis)
        if (inner.name, j) in ctx.layouts or isinstance(inner, gs.Constant):
            ctx.set_axis(x, i, ctx.axis(inner, j))
        else:
            ctx.set_axis(inner, j, ctx.axis(x, i))


def _if(node, ctx):
    branches = [node.attrs["then_branch"], node.attrs["else_branch"]]
    for body in branches:
        ctx.walk(body.nodes)
    for k, y in enumerate(node.outputs):
        _same(ctx, [body.outputs[k] for body in branches] + [y])


def _loop(node, ctx):
    body = node.attrs["body"]
    states = node.inputs[2:]
    n = len(states)
    for k, v in enumerate(states):  # before the walk: body nodes see the state's spaces
        _same(ctx, [v, body.inputs[2 + k]])
    ctx.walk(body.nodes)
    for k in range(n):
        _same(ctx, [body.inputs[2 + k], body.outputs[1 + k], node.outputs[k]])
    for j, y in enumerate(node.outputs[n:]):  # scan outputs: iterations stacked on axis 0
        if y.name:
            _stacked(ctx, y, 0, body.outputs[1 + n + j])


def _scan(node, ctx):
    body = node.attrs["body"]
    m = int(node.attrs["num_scan_inputs"])
    n = len(node.inputs) - m
    in_axes = list(node.attrs.get("scan_input_axes", [0] * m))
    out_axes = list(node.attrs.get("scan_output_axes", [0] * (len(node.outputs) - n)))
    for k in range(n):
        _same(ctx, [node.inputs[k], body.inputs[k]])
    for j in range(m):
        x = node.inputs[n + j]
        _stacked(ctx, x, in_axes[j], body.inputs[n + j])
        ctx.accept(ctx.axis(x, in_axes[j]))  # the time axis is iterated over, not pruned
    ctx.walk(body.nodes)
    for k in range(n):
        _same(ctx, [body.inputs[k], body.outputs[k], node.outputs[k]])
    for j, y in enumerate(node.outputs[n:]):
        if y.name:
            _stacked(ctx, y, out_axes[j], body.outputs[n + j])


@rule("If", "Loop", "Scan")
def control_flow(node, ctx):
    if node.op == "Scan" and ctx.model.opset < 9:
        _block_all(node, ctx, "Scan before opset 9 has a batch axis")
        return
    if not _fully_shaped(node, ctx):
        _block_all(node, ctx, "its body's shapes are not all static")
        return
    {"If": _if, "Loop": _loop, "Scan": _scan}[node.op](node, ctx)
    # What the body does with an input's channels was checked there, node by node.
    for t in node.inputs:
        if t.name and _known(t, ctx):
            for i in range(ctx.rank(t)):
                ctx.accept(ctx.axis(t, i))

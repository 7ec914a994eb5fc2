"""Ops that touch channels in one specific way each: softmax, shape queries, expand, tile."""
from __future__ import annotations

from . import rule
from .common import input_at, int_list, passthrough


@rule("Softmax", "LogSoftmax", "Hardmax")
def softmax(node, ctx):
    x = node.inputs[0]
    r = ctx.rank(x)
    axis = int(node.attrs.get("axis", -1 if ctx.model.opset >= 13 else 1)) % r
    axes = [axis] if ctx.model.opset >= 13 else list(range(axis, r))
    for a in axes:
        if ctx.shape(x)[a] > 1:
            ctx.block(ctx.axis(x, a), f"normalized over by {ctx.where()}")
    passthrough(node, ctx)


@rule("Shape", "Size", "Range", "Constant", "RandomNormalLike", "RandomUniformLike",
      "EyeLike")
def shape_query(node, ctx):
    # Outputs are shape values or fresh tensors; the input's values are not read.
    for t in node.inputs:
        if t.name and t.name in ctx.model.shapes:
            for i in range(ctx.rank(t)):
                ctx.accept(ctx.axis(t, i))


def _rewrite_expand(node, rw):
    t = node.inputs[1]
    values = rw.const(t)
    if values is None:
        return
    values = int_list(values)
    old, new = rw.shape(node.outputs[0]), rw.new_shape(node.outputs[0])
    r = len(old)
    out = list(values)
    for j in range(len(values)):
        i = r - len(values) + j
        if values[j] == old[i] and new[i] != old[i]:
            out[j] = new[i]
    if out != values:
        rw.set_const_input(node, 1, out)


@rule("Expand", rewrite=_rewrite_expand)
def expand(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = ctx.shape(x), ctx.shape(y)
    shape_is_const = ctx.const(node.inputs[1]) is not None
    for j, n in enumerate(xs):
        i = len(ys) - len(xs) + j
        if n == ys[i] and n > 1:
            if not shape_is_const:
                ctx.block(ctx.axis(x, j), f"{ctx.where()} target shape is computed at run time")
            ctx.set_axis(y, i, ctx.axis(x, j))


@rule("Tile")
def tile(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    reps = ctx.const(input_at(node, 1))
    if reps is None:
        ctx.block_tensor(x, f"{ctx.where()} repeats are computed at run time")
        return
    for i, r in enumerate(int_list(reps)):
        s = ctx.axis(x, i)
        if r == 1:
            ctx.set_axis(y, i, s)
        else:  # tiled index = repeat * n + channel
            ctx.set_axis(y, i, ctx.spaces.product([ctx.spaces.new(r, blocked="tile repeat"), s]))

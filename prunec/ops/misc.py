"""Ops that touch channels in one specific way each: softmax, shape queries, expand, tile."""
from __future__ import annotations

from . import rule
from .common import input_at, int_list, passthrough
from .shapes import bind, trace


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
    if not shape_is_const and _expand_traced(node, ctx, x, y, xs, ys):
        return
    for j, n in enumerate(xs):
        i = len(ys) - len(xs) + j
        if n == ys[i] and n > 1:
            if not shape_is_const:
                ctx.block(ctx.axis(x, j), f"{ctx.where()} target shape is computed at run time")
            ctx.set_axis(y, i, ctx.axis(x, j))
    if shape_is_const:  # a broadcast axis: its constant size is rewritten if it is pruned with others
        for i, n in enumerate(ys):
            if (y.name, i) not in ctx.layouts:
                ctx.set_axis(y, i, ctx.new(n))


def _expand_traced(node, ctx, x, y, xs, ys) -> bool:
    """A target computed as the shape of another tensor (torch's expand_as: F.normalize divides q by
    its norm expanded to q's shape): each output axis is the axis its size is read from, and x's
    axis where x is not broadcast. False when the target cannot be traced (the caller blocks)."""
    elems = trace(node.inputs[1], ctx)
    if elems is None or len(elems) != len(ys) or len(xs) > len(ys):
        return False
    for i, (n, e) in enumerate(zip(ys, elems)):
        j = i - (len(ys) - len(xs))
        passes = j >= 0 and xs[j] == n and n > 1
        if e is not None and e.value is None:
            space = ctx.axis(x, j) if passes else ctx.new(n)
            if not bind(ctx, e, space, n):
                ctx.block(space, f"{ctx.where()} target size {i} cannot follow pruning")
        elif e is not None and (e.value == 1 or not passes):  # x's own size kept, or a fixed size
            space = ctx.axis(x, j) if passes else ctx.spaces.new(n, blocked=f"axis {i} of {ctx.where()} output: fixed size")
        else:
            space = ctx.axis(x, j) if passes else ctx.new(n)
            ctx.block(space, f"{ctx.where()} target size {i} is not traced")
        ctx.set_axis(y, i, space)
    return True


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

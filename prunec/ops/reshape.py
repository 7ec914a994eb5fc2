"""Reshape-like ops and Transpose.

A reshape keeps the flat index, so the input is the product of its axis spaces and the output is
the product of its own: unifying the two products aligns them, factoring a channel space when an
axis is split (D -> heads x head_dim, C -> groups x C/G) and merging when axes are joined
(C x H x W -> features of a Gemm, where channel c owns a block of H*W features).
"""
from __future__ import annotations

from . import rule
from .shapes import bind, rewrite_constants, trace_input


def segments(xs, ys) -> list[tuple[int, int, int, int]]:
    """Runs of input axes [i0, i1) and output axes [j0, j1) with equal products, as short as they
    go. A reshape keeps the flat index, so it acts on each run alone: (B, H, W, C) -> (B, H/7, 7,
    W/7, 7, C) is B -> B, H -> (H/7, 7), W -> (W/7, 7), C -> C, and a layout that cannot follow
    one run (H rolled by a shift, split unevenly) leaves the others, the channels among them, free."""
    out, i, j = [], 0, 0
    while i < len(xs) or j < len(ys):
        i0, j0, px, py = i, j, 1, 1
        if i < len(xs):
            px, i = xs[i], i + 1
        if j < len(ys):
            py, j = ys[j], j + 1
        while px != py:
            if px < py and i < len(xs):
                px, i = px * xs[i], i + 1
            elif py < px and j < len(ys):
                py, j = py * ys[j], j + 1
            else:
                return [(0, len(xs), 0, len(ys))]  # sizes that never meet: one run
        out.append((i0, i, j0, j))
    return out


def _reshape_like(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    outs = [ctx.new(n) for n in ctx.shape(y)]
    ins = [ctx.axis(x, i) for i in range(ctx.rank(x))]
    for i0, i1, j0, j1 in segments(list(ctx.shape(x)), list(ctx.shape(y))):
        if i1 > i0 and j1 > j0:
            ctx.unify(ctx.spaces.product(ins[i0:i1]), ctx.spaces.product(outs[j0:j1]))
    for i, s in enumerate(outs):
        ctx.set_axis(y, i, s)


@rule("Flatten", "Squeeze", "Unsqueeze")
def flatten(node, ctx):
    _reshape_like(node, ctx)


def _rewrite_reshape(node, rw):
    elems = trace_input(node, 1, rw)
    if elems is None:
        return
    new_shape = rw.new_shape(node.outputs[0])
    new = [e.value if e is not None and e.value in (0, -1) else n for e, n in zip(elems, new_shape)]
    rewrite_constants(rw, elems, new)


@rule("Reshape", rewrite=_rewrite_reshape)
def reshape(node, ctx):
    """Target shapes are constants (rewritten), or computed from tensor shapes at run time: an
    element that reads the axis it sizes follows pruning by itself (ops/shapes.py)."""
    _reshape_like(node, ctx)
    y = node.outputs[0]
    out_shape = ctx.shape(y)
    elems = trace_input(node, 1, ctx)
    if elems is not None and len(elems) != len(out_shape):
        elems = None
    for i, n in enumerate(out_shape):
        if n <= 1:
            continue
        e = elems[i] if elems is not None else None
        if e is not None and e.value is not None:
            if e.value not in (0, -1) and e.slot is None:
                ctx.block(ctx.axis(y, i), f"{ctx.where()} target shape is a computed constant")
        elif not bind(ctx, e, ctx.axis(y, i), n):
            ctx.block(ctx.axis(y, i), f"{ctx.where()} target shape is computed at run time")


@rule("Transpose")
def transpose(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    r = ctx.rank(x)
    perm = node.attrs.get("perm", list(range(r))[::-1])
    for i, p in enumerate(perm):
        ctx.set_axis(y, i, ctx.axis(x, p))

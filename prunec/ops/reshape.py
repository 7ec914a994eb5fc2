"""Reshape-like ops and Transpose.

A reshape keeps the flat index, so the input is the product of its axis spaces and the output is
the product of its own: unifying the two products aligns them, factoring a channel space when an
axis is split (D -> heads x head_dim, C -> groups x C/G) and merging when axes are joined
(C x H x W -> features of a Gemm, where channel c owns a block of H*W features).
"""
from __future__ import annotations

from . import rule
from .shapes import bind, rewrite_constants, trace_input


def _reshape_like(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    outs = [ctx.new(n) for n in ctx.shape(y)]
    ins = [ctx.axis(x, i) for i in range(ctx.rank(x))]
    ctx.unify(ctx.spaces.product(ins), ctx.spaces.product(outs))
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

"""Reshape-like ops and Transpose.

A reshape keeps the flat index, so the input is the product of its axis spaces and the output is
the product of its own: unifying the two products aligns them, factoring a channel space when an
axis is split (D -> heads x head_dim, C -> groups x C/G) and merging when axes are joined
(C x H x W -> features of a Gemm, where channel c owns a block of H*W features).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from . import rule
from .common import int_list


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


def _shape_pieces(node, ctx):
    """The target-shape values and, for each, whether it can be rewritten.

    A constant shape is rewritable; so is a Concat of small constants (dynamic-batch exports);
    values computed at run time are not.
    """
    t = node.inputs[1]
    if isinstance(t, gs.Constant):
        return int_list(t.values), None
    if t.inputs and t.inputs[0].op == "Concat" and int(t.inputs[0].attrs.get("axis", 0)) == 0:
        values, consts = [], []
        for piece in t.inputs[0].inputs:
            if isinstance(piece, gs.Constant):
                vals = int_list(piece.values)
                values += vals
                consts += [True] * len(vals)
            else:
                n = ctx.shape(piece)[0] if piece.name in ctx.model.shapes else 1
                values += [None] * n
                consts += [False] * n
        return values, consts
    return None, None


def _rewrite_reshape(node, rw):
    values, consts = _shape_pieces(node, rw)
    new_shape = rw.new_shape(node.outputs[0])
    if values is None:
        return
    new = [v if v in (0, -1) or v is None else n for v, n in zip(values, new_shape)]
    if new == values:
        return
    if consts is None:
        rw.set_const_input(node, 1, new)
        return
    concat = node.inputs[1].inputs[0]
    k = 0
    for idx, piece in enumerate(list(concat.inputs)):
        n = len(int_list(piece.values)) if isinstance(piece, gs.Constant) else (
            rw.shape(piece)[0] if piece.name in rw.model.shapes else 1)
        if isinstance(piece, gs.Constant) and new[k:k + n] != values[k:k + n]:
            rw.set_const_input(concat, idx, new[k:k + n])
        k += n


@rule("Reshape", rewrite=_rewrite_reshape)
def reshape(node, ctx):
    _reshape_like(node, ctx)
    values, consts = _shape_pieces(node, ctx)
    y = node.outputs[0]
    for i in range(ctx.rank(y)):
        fixed = values is None or (consts is not None and not consts[i] and ctx.shape(y)[i] > 1)
        if fixed and ctx.shape(y)[i] > 1:
            ctx.block(ctx.axis(y, i), f"{ctx.where()} target shape is computed at run time")


@rule("Transpose")
def transpose(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    r = ctx.rank(x)
    perm = node.attrs.get("perm", list(range(r))[::-1])
    for i, p in enumerate(perm):
        ctx.set_axis(y, i, ctx.axis(x, p))

"""Gemm and MatMul: the contracted axis consumes a space, the output axis produces one.

MatMul works on 2D and batched (token-major [B,T,D], or heads [B,H,T,hd]) tensors; batch axes
follow numpy broadcasting, which is how attention couples Q, K and V head by head.
"""
from __future__ import annotations

from . import rule
from .common import input_at


@rule("Gemm")
def gemm(node, ctx):
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    ctx.unify(ctx.axis(a, 0 if ta else 1, "in"), ctx.axis(b, 1 if tb else 0, "in"))
    ctx.set_axis(y, 0, ctx.axis(a, 1 if ta else 0, "out"))
    ctx.set_axis(y, 1, ctx.axis(b, 0 if tb else 1, "out"))
    c = input_at(node, 2)
    if c is not None:
        out_shape = ctx.shape(y)
        shape = ctx.shape(c)
        for j, n in enumerate(shape):
            i = 2 - len(shape) + j
            if n == out_shape[i] and n > 1:
                ctx.unify(ctx.axis(c, j, "bias"), ctx.axis(y, i))


@rule("MatMul")
def matmul(node, ctx):
    matmul_spaces(ctx, node.inputs[0], node.inputs[1], node.outputs[0])


def matmul_spaces(ctx, a, b, y):
    """MatMul's channel relations for any operand positions (MatMulInteger, QLinearMatMul)."""
    ra, rb, ry = ctx.rank(a), ctx.rank(b), ctx.rank(y)
    ctx.unify(ctx.axis(a, -1, "in"), ctx.axis(b, -2 if rb >= 2 else 0, "in"))
    if rb >= 2:
        ctx.set_axis(y, -1, ctx.axis(b, -1, "out"))
    if ra >= 2:
        ctx.set_axis(y, -2 if rb >= 2 else -1, ctx.axis(a, -2, "out"))
    # batch axes: everything left of the matrix axes, broadcast from the right
    batch = ry - (2 if ra >= 2 and rb >= 2 else 1)
    for i in range(batch):
        spaces = []
        for t, r in ((a, ra), (b, rb)):
            j = (r - 2) - (batch - i)
            if r >= 2 and j >= 0 and ctx.shape(t)[j] == ctx.shape(y)[i]:
                spaces.append(ctx.axis(t, j))
        for s in spaces[1:]:
            ctx.unify(spaces[0], s)
        if spaces:
            ctx.set_axis(y, i, spaces[0])


@rule("Einsum")
def einsum(node, ctx):
    """Explicit equations over letters ("bij,bjk->bik", "bhqd,bhkd->bhqk", "nchw,oc->nohw"): a letter
    in the output and inputs is one space (outputs of a constant operand: "out"); a letter summed
    over in several inputs is contracted (constant operand: "in"); one summed in a single input, an
    ellipsis or an implicit output are not followed."""
    eq = node.attrs["equation"]
    eq = (eq.decode() if isinstance(eq, bytes) else eq).replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    xs = [t for t in node.inputs]
    y = node.outputs[0]
    if not arrow or "." in eq or len(terms) != len(xs) or any(len(t) != ctx.rank(x) for t, x in zip(terms, xs)):
        for t in xs:
            ctx.block_tensor(t, f"{ctx.where()} equation {eq!r} is not followed")
        return
    for letter in dict.fromkeys("".join(terms)):
        uses = [(x, t.index(letter)) for t, x in zip(terms, xs) if letter in t]
        role = "out" if letter in out else "in"
        spaces = [ctx.axis(x, i, role) for x, i in uses]
        if letter not in out and len(uses) == 1:
            if ctx.shape(uses[0][0])[uses[0][1]] > 1:
                ctx.block(spaces[0], f"summed over by {ctx.where()}")
            continue
        for s in spaces[1:]:
            ctx.unify(spaces[0], s)
        if letter in out:
            ctx.set_axis(y, out.index(letter), spaces[0])

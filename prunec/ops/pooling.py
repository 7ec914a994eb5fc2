"""Pooling, reductions, resizing and padding: channels pass, spatial axes change."""
from __future__ import annotations

from . import rule
from .common import axes_of, input_at, int_list
from .shapes import trace


@rule("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def pool(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    for i in (0, 1):
        ctx.set_axis(y, i, ctx.axis(x, i))


REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")


# A removed channel that is zero adds nothing to these (Swin-V2 normalizes q and k by ReduceL2 over
# the head dims): pruning through them is exact. A mean, max, min or product would change.
ZERO_BLIND = ("ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare")
# A mean over channels is a statistic, as LayerNorm's are: exports that spell LayerNorm out
# (Paddle2ONNX, TensorFlow, torch before opset 17: ReduceMean, Sub, Pow, ReduceMean, Sqrt, Div)
# take it over the hidden axis. Pruning makes it the mean over the kept channels, which is what
# pruning a LayerNormalization node does: approximate (recorded, repaired by calibration), not
# blocked.
STATISTIC = ("ReduceMean",)


@rule(*REDUCE)
def reduce(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    r = ctx.rank(x)
    if node.op in ("ArgMax", "ArgMin"):
        axes = [int(node.attrs.get("axis", 0)) % r]
    else:
        axes = axes_of(node, ctx, 1, r)
        if axes is None:
            ctx.block_tensor(x, f"{ctx.where()} reduces over axes computed at run time")
            return
        if not axes and not node.attrs.get("noop_with_empty_axes", 0):
            axes = list(range(r))
    keep = int(node.attrs.get("keepdims", 1))
    j = 0
    for i in range(r):
        if i in axes:
            if node.op in ZERO_BLIND:
                ctx.accept(ctx.axis(x, i))
            elif node.op in STATISTIC and ctx.shape(x)[i] > 1:
                ctx.spaces.mark_inexact(ctx.axis(x, i), f"{ctx.where()} takes a mean over this axis")
                ctx.accept(ctx.axis(x, i))
            elif ctx.shape(x)[i] > 1:
                ctx.block(ctx.axis(x, i), f"reduced over by {ctx.where()}")
            j += keep
            continue
        ctx.set_axis(y, j, ctx.axis(x, i))
        j += 1


def _same_sized_axes(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = ctx.shape(x), ctx.shape(y)
    for i, (a, b) in enumerate(zip(xs, ys)):
        if a == b:
            ctx.set_axis(y, i, ctx.axis(x, i))


def _rewrite_resize(node, rw):
    sizes = input_at(node, 3)
    if sizes is not None and rw.const(sizes) is not None:
        rw.set_const_input(node, 3, list(rw.new_shape(node.outputs[0])))


@rule("Resize", "Upsample", rewrite=_rewrite_resize)
def resize(node, ctx):
    _same_sized_axes(node, ctx)
    sizes = input_at(node, 3)
    if sizes is not None and ctx.const(sizes) is None:
        x = node.inputs[0]
        ctx.block_tensor(x, f"{ctx.where()} output sizes are computed at run time")


@rule("Pad")
def pad(node, ctx):
    x = node.inputs[0]
    r = ctx.rank(x)
    pads_t = input_at(node, 1)
    pads = node.attrs.get("pads") if pads_t is None else ctx.const(pads_t)
    axes = axes_of(node, ctx, 3, r) if input_at(node, 3) is not None else list(range(r))
    if axes is None:
        ctx.block_tensor(x, f"{ctx.where()} axes are computed at run time")
        return
    n = len(axes)
    if pads is None:  # computed (window attention pads H and W up to a multiple of the window)
        elems = trace(pads_t, ctx) if pads_t is not None else None
        if elems is None or len(elems) != 2 * n:
            ctx.block_tensor(x, f"{ctx.where()} pads are computed at run time")
            return
        # an axis whose two pads are constant zeros is never padded; any other may be, at some size
        padded = {a for k, a in enumerate(axes)
                  if not all(e is not None and e.value == 0 for e in (elems[k], elems[k + n]))}
    else:
        pads = int_list(pads)
        padded = {a for k, a in enumerate(axes) if pads[k] or pads[k + n]}
    for a in padded:
        if ctx.shape(x)[a] > 1:
            ctx.block(ctx.axis(x, a), f"padded by {ctx.where()}")
    _same_sized_axes(node, ctx)

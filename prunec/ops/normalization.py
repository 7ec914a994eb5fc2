"""Normalizations: per-channel parameters join the channel space; statistics taken over an axis
make that axis fragile (LayerNorm: pruning is approximate; InstanceNorm/GroupNorm inner: blocked)."""
from __future__ import annotations

from . import rule
from .common import input_at, passthrough


@rule("BatchNormalization")
def batch_norm(node, ctx):
    x = node.inputs[0]
    c = ctx.axis(x, 1)
    for t, role in zip(node.inputs[1:5], ("norm", "shift", "stat", "stat")):
        if t.name:
            ctx.unify(ctx.axis(t, 0, role), c)
    passthrough(node, ctx)


@rule("InstanceNormalization")
def instance_norm(node, ctx):
    x = node.inputs[0]
    c = ctx.axis(x, 1)
    for t, role in zip(node.inputs[1:3], ("norm", "shift")):
        ctx.unify(ctx.axis(t, 0, role), c)
    for i in range(2, ctx.rank(x)):  # statistics over these axes (the GroupNorm-by-reshape pattern)
        if ctx.shape(x)[i] > 1:
            ctx.block(ctx.axis(x, i), f"normalized over by {ctx.where()}")
    passthrough(node, ctx)


@rule("LayerNormalization")
def layer_norm(node, ctx):
    x = node.inputs[0]
    r = ctx.rank(x)
    first = int(node.attrs.get("axis", -1)) % r
    for i in range(first, r):
        if ctx.shape(x)[i] > 1:
            ctx.spaces.mark_inexact(ctx.axis(x, i), f"{ctx.where()} takes statistics over this axis")
    for t, role in ((input_at(node, 1), "norm"), (input_at(node, 2), "shift")):
        if t is None:
            continue
        shape = ctx.shape(t)
        for j in range(len(shape)):
            i = r - len(shape) + j
            if i >= 0 and shape[j] == ctx.shape(x)[i] and shape[j] > 1:
                ctx.unify(ctx.axis(t, j, role), ctx.axis(x, i))
    passthrough(node, ctx, x, node.outputs[0])


def _rewrite_groups(node, rw):
    groups = rw.state(node).get("groups")
    if groups is not None:
        node.attrs["num_groups"] = rw.kept(groups)


@rule("GroupNormalization", rewrite=_rewrite_groups)
def group_norm(node, ctx):
    x = node.inputs[0]
    n_groups = int(node.attrs["num_groups"])
    channels = ctx.shape(x)[1]
    groups, inner = ctx.new(n_groups), ctx.new(channels // n_groups)
    ctx.state()["groups"] = groups
    if inner.size > 1:
        ctx.block(inner, f"channels inside one group of {ctx.where()} share statistics")
    c = ctx.axis(x, 1)
    ctx.unify(c, ctx.spaces.product([groups, inner]))
    for t, role in zip(node.inputs[1:3], ("norm", "shift")):
        # opset 18 has one scale per group, opset 21 one per channel
        ctx.unify(ctx.axis(t, 0, role), c if ctx.shape(t)[0] == channels else groups)
    passthrough(node, ctx)


@rule("LRN")
def local_response_norm(node, ctx):
    """Each channel is divided by the energy of its `size` neighbours: after pruning the
    neighbours differ, so like LayerNorm the result is approximate (recorded, not blocked)."""
    x = node.inputs[0]
    if ctx.shape(x)[1] > 1:
        ctx.spaces.mark_inexact(ctx.axis(x, 1), f"{ctx.where()} normalizes each channel by its neighbours")
    passthrough(node, ctx)


@rule("LpNormalization")
def cross_channel_norm(node, ctx):
    x = node.inputs[0]
    axis = int(node.attrs.get("axis", -1)) if node.op == "LpNormalization" else 1
    ctx.block(ctx.axis(x, axis), f"{ctx.where()} mixes values across this axis")
    passthrough(node, ctx)

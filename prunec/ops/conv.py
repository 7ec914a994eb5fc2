"""Conv and ConvTranspose (1D/2D/3D, grouped, depthwise).

With `group` g > 1 the channel axis is a product (group, channel-in-group): whole groups can be
removed (the `group` attribute shrinks) and so can the same in-group channel of every group.
Depthwise convs are the case channel-in-group = 1: input and output channels are one space.
"""
from __future__ import annotations

from . import rule
from .common import input_at


def _bias(node, ctx, space, index=2):
    b = input_at(node, index)
    if b is not None:
        ctx.unify(ctx.axis(b, 0, "bias"), space)


def _rewrite_group(node, rw):
    groups = rw.state(node).get("groups")
    if groups is not None:
        node.attrs["group"] = rw.kept(groups)


def conv(node, ctx):
    conv_spaces(node, ctx, node.inputs[0], node.inputs[1], node.outputs[0], bias_index=2)


def conv_spaces(node, ctx, x, w, y, bias_index=None):
    """Conv's channel relations for any operand positions (ConvInteger, QLinearConv reuse them);
    returns the output channel space."""
    g = int(node.attrs.get("group", 1))
    ctx.set_axis(y, 0, ctx.axis(x, 0))
    w_out, w_in = ctx.axis(w, 0, "out"), ctx.axis(w, 1, "in")
    if g == 1:
        ctx.unify(ctx.axis(x, 1), w_in)
    else:
        groups = ctx.new(g)
        ctx.state()["groups"] = groups
        ctx.unify(ctx.axis(x, 1), ctx.spaces.product([groups, w_in]))
        ctx.unify(w_out, ctx.spaces.product([groups, ctx.new(ctx.shape(w)[0] // g)]))
    ctx.set_axis(y, 1, w_out)
    if bias_index is not None:
        _bias(node, ctx, w_out, bias_index)
    return w_out


def conv_transpose(node, ctx):
    # weight layout is [Cin, Cout/g, k...]
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    g = int(node.attrs.get("group", 1))
    ctx.set_axis(y, 0, ctx.axis(x, 0))
    w_in, w_out = ctx.axis(w, 0, "in"), ctx.axis(w, 1, "out")
    ctx.unify(ctx.axis(x, 1), w_in)
    if g == 1:
        out = w_out
    else:
        groups = ctx.new(g)
        ctx.state()["groups"] = groups
        ctx.unify(w_in, ctx.spaces.product([groups, ctx.new(ctx.shape(w)[0] // g)]))
        out = ctx.spaces.product([groups, w_out])
    ctx.set_axis(y, 1, out)
    _bias(node, ctx, out)


rule("Conv", rewrite=_rewrite_group)(conv)
rule("ConvTranspose", rewrite=_rewrite_group)(conv_transpose)

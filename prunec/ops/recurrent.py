"""LSTM, GRU and RNN: the hidden size is one channel space shared by every gate and direction.

W is [dirs, gates*H, I], R is [dirs, gates*H, H], B is [dirs, 2*gates*H], P (LSTM peepholes)
[dirs, 3*H]; gates are stacked outermost, so each of these axes is a product (gates x H). Hidden
unit k of direction 0 and of direction 1 are one channel: the `hidden_size` attribute is shared,
so both directions must keep the same count. W's input axis consumes the features before the op;
Y [seq, dirs, batch, H] (layout 1: [batch, seq, dirs, H]), Y_h and Y_c produce H for what follows.

Zeroing a hidden unit's rows of W, R and B (and its column of R) with zero initial states keeps
that unit at exactly zero through every step (all three cells map a zero pre-activation and a zero
state to a zero state), which is the exactness property.
"""
from __future__ import annotations

from . import rule
from .common import input_at

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
NOT_CHANNELS = "not a channel axis"


def _rewrite_hidden(node, rw):
    hidden = rw.state(node).get("hidden")
    if hidden is not None:
        node.attrs["hidden_size"] = rw.kept(hidden)


@rule("LSTM", "GRU", "RNN", rewrite=_rewrite_hidden)
def recurrent(node, ctx):
    recurrent_spaces(node, ctx, GATES[node.op])


@rule("com.microsoft.DynamicQuantizeLSTM", rewrite=_rewrite_hidden)
def dynamic_quantize_lstm(node, ctx):
    """ONNX Runtime's int8 LSTM: W [dirs, I, 4H] and R [dirs, H, 4H] (transposed), with one scale
    and zero point per direction (inputs 8-11)."""
    dirs = recurrent_spaces(node, ctx, 4, transposed=True)
    for i in range(8, 12):
        t = input_at(node, i)
        if t is not None and ctx.rank(t) == 1:
            ctx.unify(ctx.axis(t, 0), dirs)


def recurrent_spaces(node, ctx, gates, transposed=False):
    """The channel relations of a recurrent op; returns the direction space."""
    x, w, r = node.inputs[0], node.inputs[1], node.inputs[2]
    gate_ax, in_ax = (2, 1) if transposed else (1, 2)
    hidden_size = int(node.attrs.get("hidden_size", ctx.shape(r)[in_ax]))
    batch_major = int(node.attrs.get("layout", 0)) == 1
    seq_ax, batch_ax = (1, 0) if batch_major else (0, 1)
    where = ctx.where()
    hidden = ctx.new(hidden_size)
    ctx.state()["hidden"] = hidden
    dirs = ctx.axis(w, 0)
    ctx.block(dirs, f"direction axis of {where}: {NOT_CHANNELS}")

    def gated(t, axis, n_gates, role):
        stack = ctx.new(n_gates)
        ctx.block(stack, f"gate axis of {where}: {NOT_CHANNELS}")
        ctx.unify(ctx.axis(t, axis, role), ctx.spaces.product([stack, hidden]))

    # weights: directions and gate-stacked hidden units
    for t in (w, r):
        ctx.unify(ctx.axis(t, 0), dirs)
        gated(t, gate_ax, gates, "out")
    ctx.unify(ctx.axis(x, 2), ctx.axis(w, in_ax, "in"))  # the features before the op
    ctx.unify(ctx.axis(r, in_ax, "in"), hidden)
    b = input_at(node, 3)
    if b is not None:
        ctx.unify(ctx.axis(b, 0), dirs)
        gated(b, 1, 2 * gates, "bias")
    seq_lens = input_at(node, 4)
    if seq_lens is not None:
        ctx.unify(ctx.axis(seq_lens, 0), ctx.axis(x, batch_ax))
    # initial states [dirs, batch, H] (layout 1: [batch, dirs, H]); constants are zeroed like biases
    lstm = node.op.endswith("LSTM")
    states = [input_at(node, 5)] + ([input_at(node, 6)] if lstm else [])
    for s in states:
        if s is not None:
            _state_axes(ctx, s, batch_major, dirs, ctx.axis(x, batch_ax), hidden, "shift")
    p = input_at(node, 7) if lstm else None
    if p is not None:
        ctx.unify(ctx.axis(p, 0), dirs)
        gated(p, 1, 3, "const")
    # outputs
    outs = list(node.outputs)
    y = outs[0] if outs and outs[0].name and outs[0].name in ctx.model.shapes else None
    if y is not None:
        ctx.set_axis(y, seq_ax, ctx.axis(x, seq_ax))
        ctx.set_axis(y, batch_ax if batch_major else 2, ctx.axis(x, batch_ax))
        ctx.set_axis(y, 2 if batch_major else 1, dirs)
        ctx.set_axis(y, 3, hidden)
    for t in outs[1:]:
        if t.name and t.name in ctx.model.shapes:
            _state_axes(ctx, t, batch_major, dirs, ctx.axis(x, batch_ax), hidden, None)
    return dirs


def _state_axes(ctx, t, batch_major, dirs, batch, hidden, role):
    d_ax, b_ax = (1, 0) if batch_major else (0, 1)
    ctx.set_axis(t, d_ax, dirs)
    ctx.set_axis(t, b_ax, batch)
    if role:
        ctx.unify(ctx.axis(t, 2, role), hidden)
    else:
        ctx.set_axis(t, 2, hidden)

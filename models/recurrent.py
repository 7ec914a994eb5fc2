"""Recurrent models: ONNX LSTM/GRU/RNN ops, and an LSTM exported unrolled (one Gemm per step).

``rnn_audio``: a Conv1d stem on mel frames, a bidirectional LSTM (peepholes, zero initial states
built at run time from the input's shape, as PyTorch exports them), a GRU and an RNN, then a
per-frame classifier (a CTC head). ``crnn_unrolled``: a conv stem over a text line, then a
bidirectional LSTM written out step by step (Gemm -> Split into 4 gates -> Sigmoid/Tanh), the
two directions concatenated per step, and a per-step Gemm head.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from .common import DEFAULT_OPSET, Builder


def _recurrent_weights(b: Builder, op: str, dirs: int, hidden: int, n_in: int, peepholes: bool = False):
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    w = b.const(b.he([dirs, gates * hidden, n_in], n_in, 1.0), f"{op.lower()}.W")
    r = b.const(b.he([dirs, gates * hidden, hidden], hidden, 1.0), f"{op.lower()}.R")
    bias = b.const(b.small([dirs, 2 * gates * hidden], 0.1), f"{op.lower()}.B")
    p = b.const(b.small([dirs, 3 * hidden], 0.1), f"{op.lower()}.P") if peepholes else None
    return w, r, bias, p


def _zero_state(b: Builder, x: str, dirs: int, hidden: int, batch_axis: int = 1) -> str:
    """[dirs, batch, hidden] zeros, the batch read from x's shape at run time (PyTorch's export)."""
    batch = b.node("Gather", [b.node("Shape", [x]), b.i64([batch_axis], "batch_axis")], axis=0)
    shape = b.concat([b.i64([dirs], "dirs"), batch, b.i64([hidden], "hidden")], axis=0)
    return b.node("ConstantOfShape", [shape], value=onnx.helper.make_tensor("zero", 1, [1], [0.0]))


def rnn_audio(frames: int = 50, mels: int = 40, num_classes: int = 12, seed: int = 0,
              opset: int = DEFAULT_OPSET, layout: int = 0) -> onnx.ModelProto:
    """Input [1, mels, frames]; output [frames, 1, classes] (layout=1: batch-major RNN tensors)."""
    if layout and opset < 14:
        raise ValueError("layout=1 needs opset >= 14")
    b = Builder("rnn_audio", seed, opset)
    x = b.conv_bn_act(b.input([1, mels, frames]), mels, 64, 3, dims=1)          # [1, 64, T]
    x = b.transpose(x, [0, 2, 1] if layout else [2, 0, 1])                      # [1, T, 64] / [T, 1, 64]
    batch_axis = 0 if layout else 1
    extra = {"layout": 1} if layout else {}

    h = 48
    w, r, bias, p = _recurrent_weights(b, "LSTM", 2, h, 64, peepholes=True)
    if layout:
        state = b.transpose(_zero_state(b, x, 2, h, batch_axis), [1, 0, 2])    # [1, dirs, H]
    else:
        state = _zero_state(b, x, 2, h, batch_axis)
    y = b.node("LSTM", [x, w, r, bias, "", state, state, p], n_out=3, prefix="lstm",
               hidden_size=h, direction="bidirectional", **extra)[0]
    # [T, 2, 1, H] -> [T, 1, 2H]   (layout 1: [1, T, 2, H] -> [1, T, 2H])
    y = b.reshape(y, [0, 0, -1]) if layout else b.reshape(b.transpose(y, [0, 2, 1, 3]), [0, 0, -1])

    g = 32
    w, r, bias, _ = _recurrent_weights(b, "GRU", 1, g, 2 * h)
    y = b.node("GRU", [y, w, r, bias], n_out=2, prefix="gru", hidden_size=g, linear_before_reset=1,
               **extra)[0]
    y = b.node("Squeeze", [y, b.i64([2 if layout else 1], "squeeze_axes")])      # [T, 1, G] / [1, T, G]

    n = 24
    w, r, bias, _ = _recurrent_weights(b, "RNN", 1, n, g)
    y = b.node("RNN", [y, w, r, bias], n_out=2, prefix="rnn", hidden_size=n, **extra)[0]
    y = b.node("Squeeze", [y, b.i64([2 if layout else 1], "squeeze_axes")])      # [T, 1, N]
    y = b.linear(y, n, num_classes, "head")
    return b.build([y], ["output"])


def _lstm_cell(b: Builder, x: str, h: str, c: str, w_ih: str, w_hh: str, bias: str, hidden: int):
    gates = b.add(b.node("Gemm", [x, w_ih, bias], transB=1), b.node("Gemm", [h, w_hh], transB=1))
    i, f, g, o = b.split(gates, [hidden] * 4, axis=1)
    i, f, o = (b.node("Sigmoid", [t]) for t in (i, f, o))
    c = b.add(b.mul(f, c), b.mul(i, b.node("Tanh", [g])))
    return b.mul(o, b.node("Tanh", [c])), c


def crnn_unrolled(width: int = 32, height: int = 16, hidden: int = 32, num_classes: int = 20,
                  seed: int = 0, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Input [1, 1, height, width]; output [steps, 1, classes] with steps = width / 4."""
    b = Builder("crnn_unrolled", seed, opset)
    x = b.maxpool(b.conv_bn_act(b.input([1, 1, height, width]), 1, 16, 3), 2, 2)
    x = b.maxpool(b.conv_bn_act(x, 16, 32, 3), 2, 2)                           # [1, 32, H/4, W/4]
    feat, steps = 32 * (height // 4), width // 4
    x = b.reshape(b.transpose(x, [3, 0, 1, 2]), [steps, -1, feat])            # [T, 1, C*H]
    xs = b.split(x, [1] * steps, axis=0)
    xs = [b.node("Squeeze", [t, b.i64([0], "axes")]) for t in xs]              # T x [1, feat]
    outs = {}
    for direction, order in (("fwd", range(steps)), ("bwd", reversed(range(steps)))):
        scale = 1.0 / math.sqrt(feat)
        w_ih = b.const((b.rng.standard_normal([4 * hidden, feat]) * scale).astype(np.float32), f"{direction}.w_ih")
        w_hh = b.const(b.he([4 * hidden, hidden], hidden, 1.0), f"{direction}.w_hh")
        bias = b.const(b.small([4 * hidden], 0.1), f"{direction}.b")
        h = c = b.const(np.zeros([1, hidden], np.float32), f"{direction}.h0")
        for t in order:
            h, c = _lstm_cell(b, xs[t], h, c, w_ih, w_hh, bias, hidden)
            outs[(direction, t)] = h
    per_step = [b.concat([outs[("fwd", t)], outs[("bwd", t)]], axis=1) for t in range(steps)]
    y = b.concat([b.node("Unsqueeze", [t, b.i64([0], "axes")]) for t in per_step], axis=0)  # [T, 1, 2H]
    y = b.linear(y, 2 * hidden, num_classes, "head")
    return b.build([y], ["output"])

"""LSTM, GRU, RNN (and ONNX Runtime's int8 DynamicQuantizeLSTM): W [dirs, gates*H, I] and
R [dirs, gates*H, H] applied at every step of every direction. Not refitted."""
from __future__ import annotations

from math import prod

from . import LayerKind, register


class Recurrent(LayerKind):
    transposed = False  # DynamicQuantizeLSTM stores W [dirs, I, 4H] and R [dirs, H, 4H]

    def macs(self, node, ins, outs) -> int:
        if len(ins) < 3 or not ins[0] or not ins[1] or not ins[2]:
            return 0
        if self.transposed:
            (dirs, n_in, rows), hidden = ins[1], ins[2][1]
        else:
            (dirs, rows, n_in), hidden = ins[1], ins[2][2]
        # every step and batch item: gates*H outputs from I inputs (W) and H state values (R)
        return prod(ins[0][:2]) * dirs * rows * (n_in + hidden)

    def channel_axis(self, rank: int) -> int:
        return rank - 1


@register
class LSTM(Recurrent):
    op = "LSTM"


@register
class GRU(Recurrent):
    op = "GRU"


@register
class RNN(Recurrent):
    op = "RNN"


@register
class DynamicQuantizeLSTM(Recurrent):
    op = "DynamicQuantizeLSTM"
    transposed = True

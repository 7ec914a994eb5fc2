"""Quantized Conv and MatMul: the float op's arithmetic on other operand positions
(ConvInteger/MatMulInteger: x, w, zero points; QLinearConv/QLinearMatMul: x, scale, zero point,
w, ...). Not refitted: their weights are integers."""
from __future__ import annotations

from . import LayerKind, register
from .conv import Conv
from .linear import MatMul


class Quantized(LayerKind):
    float_kind: LayerKind

    def macs(self, node, ins, outs) -> int:
        w = self.weight_input
        return self.float_kind.macs(node, [ins[0], ins[w]] if len(ins) > w else [None, None], outs)

    def channel_axis(self, rank: int) -> int:
        return self.float_kind.channel_axis(rank)


@register
class ConvInteger(Quantized):
    op, float_kind = "ConvInteger", Conv()


@register
class QLinearConv(Quantized):
    op, float_kind, weight_input = "QLinearConv", Conv(), 3


@register
class MatMulInteger(Quantized):
    op, float_kind = "MatMulInteger", MatMul()


@register
class QLinearMatMul(Quantized):
    op, float_kind, weight_input = "QLinearMatMul", MatMul(), 3

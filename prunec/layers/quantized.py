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


# op -> (the float kind whose arithmetic it computes, the input holding its weight)
QUANTIZED = {
    "ConvInteger": (Conv, 1),
    "QLinearConv": (Conv, 3),
    "MatMulInteger": (MatMul, 1),
    "QLinearMatMul": (MatMul, 3),
}
for _op, (_float_kind, _weight_input) in QUANTIZED.items():
    register(type(_op, (Quantized,), {"op": _op, "float_kind": _float_kind(), "weight_input": _weight_input}))

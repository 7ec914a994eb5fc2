"""Elementwise ops: unary ops keep every axis; n-ary ops unify axes under numpy broadcasting."""
from __future__ import annotations

from . import rule
from .common import passthrough

UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "Erf", "Gelu", "Mish", "Clip", "Neg", "Abs", "Sqrt", "Exp", "Log",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Not", "IsNaN", "IsInf",
    "Identity", "Dropout", "Cast", "CastLike",
)
# Constants in these ops shift a channel (the exactness property zeroes shifts); others scale.
SHIFT_OPS = ("Add", "Sub")
BROADCAST = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu",
             "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod",
             "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor")


@rule(*UNARY)
def unary(node, ctx):
    for y in node.outputs:
        if y.name:
            passthrough(node, ctx, node.inputs[0], y)


@rule(*BROADCAST)
def broadcast(node, ctx):
    """Align shapes from the right; axes of equal (non-1) size are the same space."""
    y = node.outputs[0]
    out_shape = ctx.shape(y)
    r = len(out_shape)
    role = "shift" if node.op in SHIFT_OPS else "const"
    for i in range(r):
        spaces = []
        for x in node.inputs:
            if not x.name:
                continue
            shape = ctx.shape(x)
            j = len(shape) - (r - i)
            if j >= 0 and shape[j] == out_shape[i]:
                spaces.append(ctx.axis(x, j, role))
        if spaces:
            for s in spaces[1:]:
                ctx.unify(spaces[0], s)
            ctx.set_axis(y, i, spaces[0])

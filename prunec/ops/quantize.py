"""Quantized graphs: QDQ (QuantizeLinear/DequantizeLinear), QLinearConv/QLinearMatMul, and the
dynamic kind (DynamicQuantizeLinear -> ConvInteger/MatMulInteger).

Scales and zero points are either one value per tensor (nothing to do) or one per channel along
`axis`: then they are members of that channel's group and shrink with it, so every kept channel
keeps its own quantization parameters. A DequantizeLinear of a stored weight makes the float
tensor a view of the integers: the consumer's roles (out/in) land on the integers.

DynamicQuantizeLinear takes its scale from the tensor's min/max, which always includes zero:
removing channels whose values are zero does not change it, so the exactness property holds.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from . import rule
from .common import input_at, passthrough
from .conv import _rewrite_group, conv_spaces
from .linear import matmul_spaces


def _per_axis(ctx, t, space, role="const"):
    """A scale or zero point: per tensor (nothing to do) or one per position of `space`."""
    if t is None or not ctx.rank(t) or int(np.prod(ctx.shape(t))) == 1:
        return
    if ctx.rank(t) == 1 and ctx.shape(t)[0] == space.size:
        ctx.unify(ctx.axis(t, 0, role), space)
    else:  # blocked quantization (opset 21 block_size): groups of positions share a scale
        ctx.block(space, f"{ctx.where()} quantizes in blocks along this axis")


@rule("QuantizeLinear", "DequantizeLinear")
def quantize_linear(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    passthrough(node, ctx)
    if ctx.rank(x):
        axis = int(node.attrs.get("axis", 1)) % ctx.rank(x)
        for t in (input_at(node, 1), input_at(node, 2)):
            _per_axis(ctx, t, ctx.axis(x, axis))
    if node.op == "DequantizeLinear" and isinstance(x, gs.Constant):
        ctx.weight_views[y.name] = x.name


@rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(node, ctx):
    passthrough(node, ctx)  # scale and zero point are scalars


@rule("ConvInteger", rewrite=_rewrite_group)
def conv_integer(node, ctx):
    out = conv_spaces(node, ctx, node.inputs[0], node.inputs[1], node.outputs[0])
    _per_axis(ctx, input_at(node, 3), out)  # weight zero point per output channel


@rule("QLinearConv", rewrite=_rewrite_group)
def qlinear_conv(node, ctx):
    # x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B
    out = conv_spaces(node, ctx, node.inputs[0], node.inputs[3], node.outputs[0], bias_index=8)
    for i in (4, 5):
        _per_axis(ctx, input_at(node, i), out)


def _columns(ctx, b):
    return ctx.axis(b, -1) if ctx.rank(b) >= 2 else None


@rule("MatMulInteger")
def matmul_integer(node, ctx):
    a, b = node.inputs[0], node.inputs[1]
    matmul_spaces(ctx, a, b, node.outputs[0])
    if _columns(ctx, b) is not None:
        _per_axis(ctx, input_at(node, 3), _columns(ctx, b))
    if ctx.rank(a) >= 2:
        _per_axis(ctx, input_at(node, 2), ctx.axis(a, -2))


@rule("QLinearMatMul")
def qlinear_matmul(node, ctx):
    # a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp
    a, b = node.inputs[0], node.inputs[3]
    matmul_spaces(ctx, a, b, node.outputs[0])
    if _columns(ctx, b) is not None:
        for i in (4, 5):
            _per_axis(ctx, input_at(node, i), _columns(ctx, b))


# ----------------------------------------------------------------------------- for importance
# integer weight input -> (scale input, zero point input, axis of a per-channel scale) per op
_WEIGHT_PARAMS = {
    "DequantizeLinear": {0: (1, 2, None)},
    "ConvInteger": {1: (None, 3, 0)},
    "MatMulInteger": {1: (None, 3, -1)},
    "QLinearConv": {3: (4, 5, 0)},
    "QLinearMatMul": {3: (4, 5, -1)},
    "DynamicQuantizeLSTM": {1: (8, 9, 0), 2: (10, 11, 0)},
}


def quant_params(graph: gs.Graph, t: gs.Constant) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, zero point) of a stored integer weight, each broadcastable to its shape, from the
    op that reads it; None when no reader says how it is quantized."""
    ndim = len(t.shape)
    for node in t.outputs:
        spec = next((s for i, s in _WEIGHT_PARAMS.get(node.op, {}).items()
                     if i < len(node.inputs) and node.inputs[i] is t), None)
        if spec is None:
            continue
        scale_i, zp_i, axis = spec
        if axis is None:
            axis = int(node.attrs.get("axis", 1))
        axis %= max(ndim, 1)
        params = []
        for i, default in ((scale_i, 1.0), (zp_i, 0.0)):
            p = node.inputs[i] if i is not None and i < len(node.inputs) else None
            v = np.asarray(p.values, np.float64) if isinstance(p, gs.Constant) else np.asarray(default)
            if v.size > 1:  # per channel along `axis`
                v = v.reshape([-1 if k == axis else 1 for k in range(ndim)])
            params.append(v.reshape(()) if v.size == 1 else v)
        return params[0], params[1]
    return None


def real_values(graph: gs.Graph, t: gs.Constant) -> np.ndarray:
    """A stored weight as the real numbers it stands for: (q - zero point) * scale for quantized
    integers (per tensor or per channel), the values themselves otherwise."""
    values = np.asarray(t.values)
    params = quant_params(graph, t) if np.issubdtype(values.dtype, np.integer) else None
    if params is None:
        return values
    scale, zero = params
    return (values.astype(np.float64) - zero) * scale

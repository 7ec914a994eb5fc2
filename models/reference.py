"""A small float64 numpy evaluator for the ops the builders emit.

The Builder runs it alongside graph construction on a fixed probe batch, so each
BatchNormalization can be given the running mean/var its input really has (as after
training) instead of made-up statistics: activations then stay O(1) through deep nets
whatever the activation function, without an ONNX Runtime dependency in the builders.
float64 keeps the stored float32 statistics identical across machines.

Only the semantics the builders use are covered (e.g. Resize: nearest, integer scales).
"""

from __future__ import annotations

import math

import numpy as np


def _pad_spatial(x: np.ndarray, pads: list[int], value: float = 0.0) -> np.ndarray:
    d = x.ndim - 2
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + d]) for i in range(d)]
    return np.pad(x, widths, constant_values=value)


def _windows(x: np.ndarray, ks: list[int], strides: list[int], dil: list[int]) -> np.ndarray:
    """[N, C, *out, *k] view of the (already padded) input."""
    d = len(ks)
    span = [dil[i] * (ks[i] - 1) + 1 for i in range(d)]
    w = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + d)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) \
        + tuple(slice(None, None, dl) for dl in dil)
    return w[sl]


def conv(x, w, b=None, *, kernel_shape=None, strides=None, pads=None, dilations=None, group=1):
    d = x.ndim - 2
    ks = list(w.shape[2:])
    strides = strides or [1] * d
    dil = dilations or [1] * d
    win = _windows(_pad_spatial(x, pads or [0] * 2 * d), ks, strides, dil)  # [N,C,*o,*k]
    n, c = x.shape[:2]
    out_sp = win.shape[2:2 + d]
    cout = w.shape[0]
    if group == 1:  # im2col + one matmul: much faster than einsum for the dense convs
        nsp = len(out_sp)
        cols = win.transpose(0, *range(2, 2 + nsp), 1, *range(2 + nsp, 2 + 2 * nsp))
        y = cols.reshape(-1, c * int(np.prod(ks))) @ w.reshape(cout, -1).T   # [N*out, cout]
        y = np.moveaxis(y.reshape(n, *out_sp, cout), -1, 1)
    else:
        win = win.reshape(n, group, c // group, *out_sp, *ks)
        wg = w.reshape(group, cout // group, c // group, *ks)
        sp = "hw"[:d]
        kk = "ij"[:d]
        y = np.einsum(f"ngc{sp}{kk},goc{kk}->ngo{sp}", win, wg, optimize=True)
    y = y.reshape(n, cout, *out_sp)
    if b is not None:
        y = y + b.reshape(1, -1, *[1] * d)
    return y


def maxpool(x, *, kernel_shape, strides=None, pads=None, dilations=None):
    d = x.ndim - 2
    win = _windows(_pad_spatial(x, pads or [0] * 2 * d, -np.inf), kernel_shape,
                   strides or [1] * d, dilations or [1] * d)
    return win.max(axis=tuple(range(-d, 0)))


def _bcast_c(v, x):
    return v.reshape(1, -1, *[1] * (x.ndim - 2))


def batchnorm(x, g, b, m, v, *, epsilon=1e-5, momentum=None):
    return _bcast_c(g, x) * (x - _bcast_c(m, x)) / np.sqrt(_bcast_c(v, x) + epsilon) + _bcast_c(b, x)


def split(x, s=None, *, axis=0, split=None, num_outputs=None):
    sizes = list(s if s is not None else split)
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def resize(x, roi=None, scales=None, *, mode="nearest", **_):
    assert mode == "nearest"
    for ax, s in enumerate(scales):
        if s != 1:
            x = np.repeat(x, int(s), axis=ax)  # integer scale, asymmetric/floor == repeat
    return x


def reshape(x, shape):
    shape = [int(s) for s in shape]
    # The graphs hard-code batch 1 in their shapes; the probe batch may be larger.
    if shape and shape[0] == 1 and x.shape[0] != 1:
        shape[0] = x.shape[0]
    return x.reshape(shape)


def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.T if transA else a
    b = b.T if transB else b
    y = alpha * a @ b
    return y if c is None else y + beta * c


def softmax(x, *, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layernorm(x, g, b=None, *, axis=-1, epsilon=1e-5):
    axes = tuple(range(axis % x.ndim, x.ndim))
    y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + epsilon) * g
    return y if b is None else y + b


def groupnorm(x, g, b, *, num_groups, epsilon=1e-5, **_):
    n, c = x.shape[:2]
    r = x.reshape(n, num_groups, -1)
    r = (r - r.mean(-1, keepdims=True)) / np.sqrt(r.var(-1, keepdims=True) + epsilon)
    y = r.reshape(x.shape)
    if g.shape[0] != c:  # opset-18 form: one scale per group
        g, b = np.repeat(g, c // num_groups), np.repeat(b, c // num_groups)
    return y * _bcast_c(g, x) + _bcast_c(b, x)


def instancenorm(x, g, b, *, epsilon=1e-5):
    axes = tuple(range(2, x.ndim))
    y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + epsilon)
    return y * _bcast_c(g, x) + _bcast_c(b, x)


def reduce_mean(x, axes_in=None, *, axes=None, keepdims=1):
    ax = tuple(int(a) for a in (axes_in if axes_in is not None else axes))
    return x.mean(axis=ax, keepdims=bool(keepdims))


def clip(x, lo=None, hi=None, *, min=None, max=None):  # noqa: A002 - ONNX attribute names
    lo = lo if lo is not None else min
    hi = hi if hi is not None else max
    return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


_erf = np.vectorize(math.erf, otypes=[np.float64])

OPS = {
    "Conv": conv,
    "MaxPool": maxpool,
    "BatchNormalization": batchnorm,
    "Relu": lambda x: np.maximum(x, 0),
    "Clip": clip,
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "HardSigmoid": lambda x, *, alpha=0.2, beta=0.5: np.clip(alpha * x + beta, 0, 1),
    "HardSwish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "Erf": _erf,
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
    "MatMul": np.matmul,
    "GlobalAveragePool": lambda x: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True),
    "Flatten": lambda x, *, axis=1: x.reshape(int(np.prod(x.shape[:axis])), -1),
    "Concat": lambda *xs, axis: np.concatenate(xs, axis=axis),
    "Split": split,
    "Resize": resize,
    "Reshape": reshape,
    "Transpose": lambda x, *, perm: np.transpose(x, perm),
    "Gemm": gemm,
    "Softmax": softmax,
    "LayerNormalization": layernorm,
    "GroupNormalization": groupnorm,
    "InstanceNormalization": instancenorm,
    "ReduceMean": reduce_mean,
}


def evaluate(op: str, inputs: list, attrs: dict):
    """Outputs of one node as a list, or None when the op (or an input) is not covered."""
    fn = OPS.get(op)
    if fn is None or any(i is None for i in inputs[:1]):
        return None
    while inputs and inputs[-1] is None:  # trailing optional inputs
        inputs = inputs[:-1]
    out = fn(*inputs, **attrs)
    return list(out) if isinstance(out, list) else [out]


def run_model(m, feeds: dict[str, np.ndarray], keep_all: bool = False) -> dict[str, np.ndarray]:
    """Evaluate a whole ModelProto (topologically ordered, covered ops only) in float64."""
    from onnx import helper, numpy_helper

    vals = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    vals = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in vals.items()}
    vals.update({k: np.asarray(v, np.float64) for k, v in feeds.items()})
    for node in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if node.op_type == "Constant":
            vals[node.output[0]] = numpy_helper.to_array(attrs["value"]).astype(np.float64) \
                if attrs["value"].data_type == 1 else numpy_helper.to_array(attrs["value"])
            continue
        res = evaluate(node.op_type, [vals[i] if i else None for i in node.input], attrs)
        if res is None:
            raise NotImplementedError(node.op_type)
        vals.update(zip(node.output, res))
    return vals if keep_all else {o.name: vals[o.name] for o in m.graph.output}

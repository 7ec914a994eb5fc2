"""An ONNX graph as a differentiable JAX function, for distillation.

The graph is run node by node with jax.numpy; the float weights of the layers (Conv, Gemm, MatMul,
LSTM/GRU/RNN, normalization scale/bias, PRelu) are the function's parameters, everything else is a
constant. Values that depend on constants only (shape arithmetic: Shape -> Gather -> Concat ->
Reshape) are computed with numpy while tracing, so they stay static and `jax.jit` sees fixed
shapes. Trained parameters are written back into the same graph: structure, names and metadata of
the model are unchanged, only initializer values move.

jax is an optional dependency (`pip install 'prunec[distill]'`); this module imports it lazily.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import PrunecError

# (op type, input slot) holding a trainable float tensor when it is a constant.
TRAINABLE_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3), "RNN": (1, 2, 3),
    "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2), "PRelu": (1,),
}


def require_jax():
    try:
        import jax  # noqa: F401
    except ImportError:
        raise PrunecError("distillation needs jax: pip install 'prunec[distill]' (or pip install jax), "
                          "or use --recover refit") from None
    import jax
    jax.config.update("jax_enable_x64", False)
    return jax


class JaxGraph:
    """`params()` gives the trainable initializers; `run(params, inputs, names)` evaluates tensors."""

    def __init__(self, proto: onnx.ModelProto):
        self.jax = require_jax()
        self.proto = proto
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        self.nodes = list(proto.graph.node)
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx") or node.op_type not in _OPS:
                raise PrunecError(f"distillation: op {node.domain + '.' if node.domain else ''}{node.op_type} "
                                  f"(node {node.name!r}) is not supported; use --recover refit")
        trainable = set()
        for node in self.nodes:
            for slot in TRAINABLE_SLOTS.get(node.op_type, ()):
                if slot < len(node.input) and node.input[slot] in self.consts:
                    if self.consts[node.input[slot]].dtype == np.float32:
                        trainable.add(node.input[slot])
        self.trainable = sorted(trainable)
        self.inputs = [i.name for i in proto.graph.input if i.name not in self.consts]
        self.outputs = [o.name for o in proto.graph.output]

    def params(self) -> dict[str, np.ndarray]:
        return {k: self.consts[k] for k in self.trainable}

    def run(self, params: dict, inputs: dict, names: list[str] | None = None) -> list:
        jnp = self.jax.numpy
        env: dict = dict(self.consts)
        env.update(params)
        env.update({k: jnp.asarray(v) for k, v in inputs.items()})
        names = names or self.outputs
        needed = _needed(self.nodes, names)
        for node in self.nodes:
            if not needed[id(node)]:
                continue
            args = [env[n] if n else None for n in node.input]
            outs = _OPS[node.op_type](_Ctx(node, self.opset, self.jax), *args)
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for name, value in zip(node.output, outs):
                if name:
                    env[name] = value
        return [env[n] for n in names]

    def write_back(self, params: dict) -> onnx.ModelProto:
        """A copy of the proto with the trained values in its initializers."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        for init in proto.graph.initializer:
            if init.name in params:
                value = np.asarray(params[init.name], dtype=np.float32)
                init.CopyFrom(numpy_helper.from_array(value, init.name))
        return proto


def _needed(nodes, names) -> dict[int, bool]:
    """Nodes on a path to the requested tensors (the rest is skipped)."""
    want, needed = set(names), {}
    for node in reversed(nodes):
        hit = any(o in want for o in node.output)
        needed[id(node)] = hit
        if hit:
            want.update(i for i in node.input if i)
    return needed


class _Ctx:
    def __init__(self, node, opset, jax):
        self.node, self.opset, self.jax = node, opset, jax
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def get(self, name, default=None):
        v = self.attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else v

    def xp(self, *values):
        """numpy when every value is a constant (stays static while tracing), else jax.numpy."""
        if all(v is None or isinstance(v, (np.ndarray, np.generic, int, float)) for v in values):
            return np
        return self.jax.numpy


def _static(value, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception:  # a traced value: the graph computes a shape from data
        raise PrunecError(f"distillation: {what} depends on the data at run time; use --recover refit") from None


_OPS = {}


def _op(*names):
    def register(fn):
        for n in names:
            _OPS[n] = fn
        return fn
    return register


# ---- elementwise ---------------------------------------------------------------------------------

def _unary(fn_np, fn_j=None):
    def apply(c, x):
        return (fn_np if c.xp(x) is np else (fn_j or fn_np))(x)
    return apply


def _binary(name):
    def apply(c, a, b):
        return getattr(c.xp(a, b), name)(a, b)
    return apply


for _name, _fn in {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Pow": "power", "Equal": "equal",
                   "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal",
                   "GreaterOrEqual": "greater_equal", "And": "logical_and", "Or": "logical_or"}.items():
    _OPS[_name] = _binary(_fn)


@_op("Div")
def _div(c, a, b):
    xp = c.xp(a, b)
    if np.issubdtype(np.asarray(a).dtype if xp is np else a.dtype, np.integer):
        return (a // b).astype(a.dtype)
    return xp.divide(a, b)


@_op("Max", "Min", "Sum", "Mean")
def _variadic(c, *xs):
    xp = c.xp(*xs)
    fn = {"Max": xp.maximum, "Min": xp.minimum, "Sum": xp.add, "Mean": xp.add}[c.node.op_type]
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out / len(xs) if c.node.op_type == "Mean" else out


@_op("Where")
def _where(c, cond, a, b):
    return c.xp(cond, a, b).where(cond, a, b)


@_op("Not")
def _not(c, x):
    return c.xp(x).logical_not(x)


def _jnn(c):
    return c.jax.nn


@_op("Relu")
def _relu(c, x):
    return c.xp(x).maximum(x, 0)


@_op("Sigmoid")
def _sigmoid(c, x):
    return _jnn(c).sigmoid(x)


@_op("Tanh")
def _tanh(c, x):
    return c.xp(x).tanh(x)


@_op("Exp", "Log", "Sqrt", "Abs", "Neg", "Floor", "Ceil", "Sign", "Round", "Reciprocal", "Sin", "Cos")
def _simple(c, x):
    xp = c.xp(x)
    name = {"Neg": "negative", "Reciprocal": "reciprocal"}.get(c.node.op_type, c.node.op_type.lower())
    if name == "reciprocal":
        return 1.0 / x
    return getattr(xp, name)(x)


@_op("Erf")
def _erf(c, x):
    return c.jax.scipy.special.erf(x)


@_op("LeakyRelu")
def _leaky(c, x):
    return c.jax.numpy.where(x >= 0, x, x * c.get("alpha", 0.01))


@_op("Elu")
def _elu(c, x):
    a = c.get("alpha", 1.0)
    return c.jax.numpy.where(x > 0, x, a * (c.jax.numpy.exp(x) - 1))


@_op("Selu")
def _selu(c, x):
    a, g = c.get("alpha", 1.67326319217681884765625), c.get("gamma", 1.05070102214813232421875)
    jnp = c.jax.numpy
    return g * jnp.where(x > 0, x, a * (jnp.exp(x) - 1))


@_op("Softplus")
def _softplus(c, x):
    return _jnn(c).softplus(x)


@_op("Softsign")
def _softsign(c, x):
    return x / (1 + c.jax.numpy.abs(x))


@_op("Mish")
def _mish(c, x):
    return x * c.jax.numpy.tanh(_jnn(c).softplus(x))


@_op("HardSigmoid")
def _hsig(c, x):
    return c.jax.numpy.clip(c.get("alpha", 0.2) * x + c.get("beta", 0.5), 0, 1)


@_op("HardSwish")
def _hswish(c, x):
    return x * c.jax.numpy.clip(x / 6 + 0.5, 0, 1)


@_op("Gelu")
def _gelu(c, x):
    return _jnn(c).gelu(x, approximate=c.get("approximate", "none") == "tanh")


@_op("Clip")
def _clip(c, x, lo=None, hi=None):
    if c.opset < 11:
        lo, hi = c.get("min"), c.get("max")
    xp = c.xp(x)
    if lo is not None:
        x = xp.maximum(x, lo)
    if hi is not None:
        x = xp.minimum(x, hi)
    return x


@_op("PRelu")
def _prelu(c, x, slope):
    return c.jax.numpy.where(x >= 0, x, x * slope)


@_op("Identity", "Dropout")
def _identity(c, x, *rest):
    return x


@_op("Cast")
def _cast(c, x):
    dtype = helper.tensor_dtype_to_np_dtype(c.get("to"))
    return x.astype(dtype)


# ---- shapes and data movement -----------------------------------------------------------------

@_op("Shape")
def _shape(c, x):
    s = np.array(np.shape(x), dtype=np.int64)
    start, end = c.get("start", 0), c.get("end")
    return s[start:end]


@_op("Size")
def _size(c, x):
    return np.array(np.size(x), dtype=np.int64)


@_op("Constant")
def _constant(c):
    for a in c.node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
    v = c.attrs
    if "value_float" in v:
        return np.array(v["value_float"], np.float32)
    if "value_floats" in v:
        return np.array(v["value_floats"], np.float32)
    if "value_int" in v:
        return np.array(v["value_int"], np.int64)
    if "value_ints" in v:
        return np.array(v["value_ints"], np.int64)
    raise PrunecError(f"distillation: Constant node {c.node.name!r} has an unsupported value")


@_op("ConstantOfShape")
def _const_of_shape(c, shape):
    value = np.zeros(1, np.float32)
    for a in c.node.attribute:
        if a.name == "value":
            value = numpy_helper.to_array(a.t)
    return np.full(tuple(_static(shape, "ConstantOfShape's shape").tolist()), value.reshape(-1)[0], value.dtype)


@_op("Range")
def _range(c, start, limit, delta):
    s, l, d = (_static(v, "Range") for v in (start, limit, delta))
    return np.arange(s, l, d, dtype=s.dtype)


@_op("Reshape")
def _reshape(c, x, shape):
    shape = [int(v) for v in _static(shape, "a Reshape target").tolist()]
    if not c.get("allowzero", 0):
        shape = [np.shape(x)[i] if v == 0 else v for i, v in enumerate(shape)]
    return c.xp(x).reshape(x, shape)


@_op("Flatten")
def _flatten(c, x):
    axis = c.get("axis", 1)
    s = np.shape(x)
    axis = axis % len(s) if s else 0
    return c.xp(x).reshape(x, (int(np.prod(s[:axis])), int(np.prod(s[axis:]))))


@_op("Transpose")
def _transpose(c, x):
    perm = c.get("perm") or list(range(np.ndim(x)))[::-1]
    return c.xp(x).transpose(x, perm)


def _axes(c, axes_input, attr="axes"):
    if axes_input is not None:
        return [int(a) for a in _static(axes_input, "axes").reshape(-1).tolist()]
    a = c.get(attr)
    return None if a is None else list(a)


@_op("Squeeze")
def _squeeze(c, x, axes=None):
    axes = _axes(c, axes)
    xp = c.xp(x)
    if axes is None:
        return xp.squeeze(x)
    return xp.squeeze(x, axis=tuple(a % np.ndim(x) for a in axes))


@_op("Unsqueeze")
def _unsqueeze(c, x, axes=None):
    axes = _axes(c, axes)
    rank = np.ndim(x) + len(axes)
    out = x
    for a in sorted(a % rank for a in axes):
        out = c.xp(x).expand_dims(out, a)
    return out


@_op("Concat")
def _concat(c, *xs):
    xs = [x for x in xs if x is not None]
    return c.xp(*xs).concatenate(xs, axis=c.get("axis"))


@_op("Split")
def _split(c, x, split=None):
    axis = c.get("axis", 0) % np.ndim(x)
    n_out = len(c.node.output)
    if split is None:
        split = c.get("split")
    if split is None:
        total = np.shape(x)[axis]
        size = -(-total // n_out)
        split = [size] * (n_out - 1) + [total - size * (n_out - 1)]
    split = [int(s) for s in np.asarray(split).reshape(-1).tolist()]
    return c.xp(x).split(x, np.cumsum(split)[:-1].tolist(), axis=axis)


@_op("Slice")
def _slice(c, x, starts=None, ends=None, axes=None, steps=None):
    if c.opset < 10:
        starts, ends, axes = c.get("starts"), c.get("ends"), c.get("axes")
    starts = _static(starts, "Slice starts").reshape(-1).tolist()
    ends = _static(ends, "Slice ends").reshape(-1).tolist()
    axes = list(range(len(starts))) if axes is None else _static(axes, "Slice axes").reshape(-1).tolist()
    steps = [1] * len(starts) if steps is None else _static(steps, "Slice steps").reshape(-1).tolist()
    index = [slice(None)] * np.ndim(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = np.shape(x)[a]
        s, e, st = int(s), int(e), int(st)
        index[a] = slice(*slice(s, e, st).indices(dim))
    return x[tuple(index)]


@_op("Gather")
def _gather(c, x, idx):
    axis = c.get("axis", 0)
    xp = c.xp(x, idx)
    return xp.take(x, _static(idx, "Gather indices") if xp is not np else idx, axis=axis)


@_op("Expand")
def _expand(c, x, shape):
    shape = tuple(int(v) for v in _static(shape, "Expand's shape").tolist())
    out = np.broadcast_shapes(np.shape(x), shape)
    return c.xp(x).broadcast_to(x, out)


@_op("Tile")
def _tile(c, x, reps):
    return c.xp(x).tile(x, tuple(_static(reps, "Tile repeats").tolist()))


@_op("Pad")
def _pad(c, x, pads=None, value=None, axes=None):
    if c.opset < 11:
        pads, value = c.get("pads"), c.get("value", 0.0)
    pads = [int(p) for p in _static(pads, "Pad's pads").reshape(-1).tolist()]
    rank = np.ndim(x)
    ax = list(range(rank)) if axes is None else [int(a) % rank for a in _static(axes, "axes").tolist()]
    width = [(0, 0)] * rank
    for i, a in enumerate(ax):
        width[a] = (pads[i], pads[i + len(ax)])
    mode = c.get("mode", "constant")
    xp = c.xp(x)
    if mode == "constant":
        v = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0]) if np.size(value) else 0.0
        return xp.pad(x, width, constant_values=v)
    return xp.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


@_op("DepthToSpace")
def _d2s(c, x):
    b, ch, h, w = np.shape(x)
    r = c.get("blocksize")
    jnp = c.jax.numpy
    if c.get("mode", "DCR") == "DCR":
        y = jnp.reshape(x, (b, r, r, ch // r // r, h, w)).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = jnp.reshape(x, (b, ch // r // r, r, r, h, w)).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(b, ch // r // r, h * r, w * r)


@_op("SpaceToDepth")
def _s2d(c, x):
    b, ch, h, w = np.shape(x)
    r = c.get("blocksize")
    y = c.jax.numpy.reshape(x, (b, ch, h // r, r, w // r, r)).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(b, ch * r * r, h // r, w // r)


# ---- reductions, normalization, softmax ------------------------------------------------------------

@_op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1",
     "ReduceSumSquare")
def _reduce(c, x, axes=None):
    op = c.node.op_type
    takes_input = op == "ReduceSum" and c.opset >= 13 or c.opset >= 18
    axes = _axes(c, axes if takes_input else None)
    if axes is None or (not axes and c.get("noop_with_empty_axes", 0) == 0):
        axes = list(range(np.ndim(x)))
    elif not axes:
        return x
    keep = bool(c.get("keepdims", 1))
    xp = c.xp(x)
    ax = tuple(a % np.ndim(x) for a in axes)
    if op == "ReduceL2":
        return xp.sqrt(xp.sum(x * x, axis=ax, keepdims=keep))
    if op == "ReduceL1":
        return xp.sum(xp.abs(x), axis=ax, keepdims=keep)
    if op == "ReduceSumSquare":
        return xp.sum(x * x, axis=ax, keepdims=keep)
    fn = {"ReduceMean": xp.mean, "ReduceSum": xp.sum, "ReduceMax": xp.max, "ReduceMin": xp.min,
          "ReduceProd": xp.prod}[op]
    return fn(x, axis=ax, keepdims=keep)


@_op("ArgMax", "ArgMin")
def _argmax(c, x):
    xp = c.xp(x)
    fn = xp.argmax if c.node.op_type == "ArgMax" else xp.argmin
    out = fn(x, axis=c.get("axis", 0))
    if c.get("keepdims", 1):
        out = xp.expand_dims(out, c.get("axis", 0))
    return out.astype(np.int64)


def _softmax_like(c, x, log: bool):
    jnn = _jnn(c)
    fn = jnn.log_softmax if log else jnn.softmax
    if c.opset >= 13:
        return fn(x, axis=c.get("axis", -1))
    axis = c.get("axis", 1) % np.ndim(x)  # opset < 13: over the flattened trailing axes
    s = np.shape(x)
    flat = c.jax.numpy.reshape(x, (int(np.prod(s[:axis])), int(np.prod(s[axis:]))))
    return fn(flat, axis=-1).reshape(s)


@_op("Softmax")
def _softmax(c, x):
    return _softmax_like(c, x, False)


@_op("LogSoftmax")
def _log_softmax(c, x):
    return _softmax_like(c, x, True)


def _per_channel(v, rank):
    return v.reshape((1, -1) + (1,) * (rank - 2))


@_op("BatchNormalization")
def _batchnorm(c, x, scale, bias, mean, var, *rest):
    jnp = c.jax.numpy
    r = np.ndim(x)
    inv = scale / jnp.sqrt(var + c.get("epsilon", 1e-5))
    return x * _per_channel(inv, r) + _per_channel(bias - mean * inv, r)


@_op("InstanceNormalization")
def _instancenorm(c, x, scale, bias):
    jnp = c.jax.numpy
    ax = tuple(range(2, np.ndim(x)))
    mu = jnp.mean(x, axis=ax, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=ax, keepdims=True)
    y = (x - mu) / jnp.sqrt(var + c.get("epsilon", 1e-5))
    return y * _per_channel(scale, np.ndim(x)) + _per_channel(bias, np.ndim(x))


@_op("LayerNormalization")
def _layernorm(c, x, scale, bias=None):
    jnp = c.jax.numpy
    axis = c.get("axis", -1) % np.ndim(x)
    ax = tuple(range(axis, np.ndim(x)))
    mu = jnp.mean(x, axis=ax, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=ax, keepdims=True)
    y = (x - mu) / jnp.sqrt(var + c.get("epsilon", 1e-5)) * scale
    return y + bias if bias is not None else y


@_op("GroupNormalization")
def _groupnorm(c, x, scale, bias):
    jnp = c.jax.numpy
    s = np.shape(x)
    g = c.get("num_groups")
    y = jnp.reshape(x, (s[0], g, -1))
    mu = jnp.mean(y, axis=-1, keepdims=True)
    var = jnp.mean((y - mu) ** 2, axis=-1, keepdims=True)
    y = ((y - mu) / jnp.sqrt(var + c.get("epsilon", 1e-5))).reshape(s)
    if np.size(scale) == g:  # opset 18: one scale per group
        scale, bias = jnp.repeat(scale, s[1] // g), jnp.repeat(bias, s[1] // g)
    return y * _per_channel(scale, len(s)) + _per_channel(bias, len(s))


# ---- linear layers ---------------------------------------------------------------------------------

@_op("MatMul")
def _matmul(c, a, b):
    return c.xp(a, b).matmul(a, b)


@_op("Gemm")
def _gemm(c, a, b, bias=None):
    xp = c.xp(a, b, bias)
    if c.get("transA", 0):
        a = a.T
    if c.get("transB", 0):
        b = b.T
    y = c.get("alpha", 1.0) * xp.matmul(a, b)
    return y + c.get("beta", 1.0) * bias if bias is not None else y


def _conv_pads(c, x_shape, k_shape, strides, dilations):
    nsp = len(k_shape)
    auto = c.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i in range(nsp):
            out = -(-x_shape[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (k_shape[i] - 1) * dilations[i] + 1 - x_shape[i])
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
        return pads
    if auto == "VALID":
        return [(0, 0)] * nsp
    p = c.get("pads") or [0] * (2 * nsp)
    return [(p[i], p[i + nsp]) for i in range(nsp)]


def _dims(rank):
    sp = "DHW"[3 - (rank - 2):]
    return ("NC" + sp, "OI" + sp, "NC" + sp)


@_op("Conv")
def _conv(c, x, w, b=None):
    lax = c.jax.lax
    nsp = np.ndim(w) - 2
    strides = c.get("strides") or [1] * nsp
    dil = c.get("dilations") or [1] * nsp
    pads = _conv_pads(c, np.shape(x)[2:], np.shape(w)[2:], strides, dil)
    y = lax.conv_general_dilated(x, w, window_strides=strides, padding=pads, rhs_dilation=dil,
                                 dimension_numbers=_dims(np.ndim(x)), feature_group_count=c.get("group", 1))
    return y + _per_channel(b, np.ndim(y)) if b is not None else y


@_op("ConvTranspose")
def _conv_transpose(c, x, w, b=None):
    jnp, lax = c.jax.numpy, c.jax.lax
    nsp = np.ndim(w) - 2
    g = c.get("group", 1)
    strides = c.get("strides") or [1] * nsp
    dil = c.get("dilations") or [1] * nsp
    k = np.shape(w)[2:]
    if c.get("output_shape") or c.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise PrunecError(f"distillation: ConvTranspose {c.node.name!r} with output_shape/auto_pad is not supported")
    p = c.get("pads") or [0] * (2 * nsp)
    op = c.get("output_padding") or [0] * nsp
    cin, coutg = np.shape(w)[0], np.shape(w)[1]
    # [Cin, Cout/g, k] -> [Cout, Cin/g, k], flipped: a transposed conv is a conv over the dilated input
    wt = jnp.reshape(w, (g, cin // g, coutg) + tuple(k)).transpose((0, 2, 1) + tuple(range(3, 3 + nsp)))
    wt = jnp.reshape(wt, (g * coutg, cin // g) + tuple(k))
    wt = jnp.flip(wt, axis=tuple(range(2, 2 + nsp)))
    pads = [(dil[i] * (k[i] - 1) - p[i], dil[i] * (k[i] - 1) - p[i + nsp] + op[i]) for i in range(nsp)]
    y = lax.conv_general_dilated(x, wt, window_strides=[1] * nsp, padding=pads, lhs_dilation=strides,
                                 rhs_dilation=dil, dimension_numbers=_dims(np.ndim(x)), feature_group_count=g)
    return y + _per_channel(b, np.ndim(y)) if b is not None else y


# ---- pooling -------------------------------------------------------------------------------------

def _pool_geometry(c, x):
    nsp = np.ndim(x) - 2
    k = c.get("kernel_shape")
    strides = c.get("strides") or [1] * nsp
    dil = c.get("dilations") or [1] * nsp
    pads = _conv_pads(c, np.shape(x)[2:], k, strides, dil)
    if c.get("ceil_mode", 0):  # extra end padding so the last partial window is produced
        fixed = []
        for i, (lo, hi) in enumerate(pads):
            size = np.shape(x)[2 + i] + lo + hi
            eff = (k[i] - 1) * dil[i] + 1
            out = -(-(size - eff) // strides[i]) + 1
            if (out - 1) * strides[i] >= np.shape(x)[2 + i] + lo:
                out -= 1
            fixed.append((lo, max(hi, (out - 1) * strides[i] + eff - np.shape(x)[2 + i] - lo)))
        pads = fixed
    return k, strides, dil, pads


@_op("MaxPool")
def _maxpool(c, x):
    lax = c.jax.lax
    k, strides, dil, pads = _pool_geometry(c, x)
    return lax.reduce_window(x, -np.inf, lax.max, (1, 1) + tuple(k), (1, 1) + tuple(strides),
                             [(0, 0), (0, 0)] + pads, window_dilation=(1, 1) + tuple(dil))


@_op("AveragePool")
def _avgpool(c, x):
    jnp, lax = c.jax.numpy, c.jax.lax
    k, strides, dil, pads = _pool_geometry(c, x)
    win, st, pd = (1, 1) + tuple(k), (1, 1) + tuple(strides), [(0, 0), (0, 0)] + pads
    total = lax.reduce_window(x, 0.0, lax.add, win, st, pd)
    if c.get("count_include_pad", 0):
        # padding counts, the ceil_mode overhang beyond the declared pads does not
        declared = _conv_pads(c, np.shape(x)[2:], k, strides, dil)
        ones = jnp.pad(jnp.ones(np.shape(x)[2:], x.dtype), declared, constant_values=1.0)
        overhang = [(0, hi - d[1]) for (lo, hi), d in zip(pads, declared)]
        count = lax.reduce_window(ones, 0.0, lax.add, tuple(k), tuple(strides), overhang)
    else:
        count = lax.reduce_window(jnp.ones(np.shape(x)[2:], x.dtype), 0.0, lax.add, tuple(k), tuple(strides), pads)
    return total / count


@_op("GlobalAveragePool")
def _gap(c, x):
    return c.jax.numpy.mean(x, axis=tuple(range(2, np.ndim(x))), keepdims=True)


@_op("GlobalMaxPool")
def _gmp(c, x):
    return c.jax.numpy.max(x, axis=tuple(range(2, np.ndim(x))), keepdims=True)


# ---- resize --------------------------------------------------------------------------------------

@_op("Resize", "Upsample")
def _resize(c, x, roi=None, scales=None, sizes=None):
    jnp = c.jax.numpy
    if c.node.op_type == "Upsample":
        scales, roi = roi, None
    shape = np.shape(x)
    if sizes is not None and np.size(sizes):
        out = [int(v) for v in _static(sizes, "Resize sizes").tolist()]
        sc = [o / i for o, i in zip(out, shape)]
    else:
        sc = [float(v) for v in _static(scales, "Resize scales").tolist()]
        out = [int(math.floor(i * s)) for i, s in zip(shape, sc)]
    mode = c.get("mode", "nearest")
    ctm = c.get("coordinate_transformation_mode", "half_pixel" if c.opset >= 11 else "asymmetric")
    if c.node.op_type == "Upsample":
        ctm = "asymmetric"
    nearest = c.get("nearest_mode", "round_prefer_floor")
    y = x
    for axis, (n_in, n_out, s) in enumerate(zip(shape, out, sc)):
        if n_in == n_out:
            continue
        o = np.arange(n_out, dtype=np.float64)
        if ctm == "half_pixel":
            src = (o + 0.5) / s - 0.5
        elif ctm == "pytorch_half_pixel":
            src = (o + 0.5) / s - 0.5 if n_out > 1 else np.zeros_like(o)
        elif ctm == "align_corners":
            src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o)
        elif ctm == "asymmetric":
            src = o / s
        else:
            raise PrunecError(f"distillation: Resize coordinate mode {ctm!r} is not supported")
        if mode == "nearest":
            if nearest == "floor":
                idx = np.floor(src)
            elif nearest == "ceil":
                idx = np.ceil(src)
            elif nearest == "round_prefer_ceil":
                idx = np.floor(src + 0.5)
            else:
                idx = np.ceil(src - 0.5)
            y = jnp.take(y, np.clip(idx, 0, n_in - 1).astype(np.int64), axis=axis)
        elif mode == "linear":
            src = np.clip(src, 0, n_in - 1)
            lo = np.floor(src).astype(np.int64)
            hi = np.minimum(lo + 1, n_in - 1)
            frac = (src - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(len(shape))])
            y = jnp.take(y, lo, axis=axis) * (1 - frac) + jnp.take(y, hi, axis=axis) * frac
        else:
            raise PrunecError(f"distillation: Resize mode {mode!r} is not supported")
    return y


# ---- recurrent -----------------------------------------------------------------------------------

_ACT = {"sigmoid": lambda j, x: j.nn.sigmoid(x), "tanh": lambda j, x: j.numpy.tanh(x),
        "relu": lambda j, x: j.numpy.maximum(x, 0)}


def _activations(c, defaults):
    names = [a.decode().lower() if isinstance(a, bytes) else a.lower() for a in (c.get("activations") or [])]
    names = names or defaults * (2 if c.get("direction", "forward") == "bidirectional" else 1)
    for n in names:
        if n not in _ACT:
            raise PrunecError(f"distillation: {c.node.op_type} activation {n!r} is not supported")
    return names


def _recurrence(c, x, w, r, b, h0, cell0, step, gates, defaults):
    """Shared driver of LSTM/GRU/RNN: per direction, scan `step` over the sequence."""
    jax = c.jax
    jnp = jax.numpy
    if c.get("layout", 0):
        raise PrunecError(f"distillation: {c.node.op_type} with layout=1 is not supported")
    hidden = c.get("hidden_size")
    ndir = np.shape(w)[0]
    batch = np.shape(x)[1]
    acts = _activations(c, defaults)
    per_dir = len(acts) // ndir
    ys, hs, cs = [], [], []
    for d in range(ndir):
        rb = b[d][gates * hidden:] if b is not None else jnp.zeros(gates * hidden)
        wbias = b[d][:gates * hidden] if b is not None else jnp.zeros(gates * hidden)
        h = h0[d] if h0 is not None else jnp.zeros((batch, hidden), x.dtype)
        cc = cell0[d] if cell0 is not None else jnp.zeros((batch, hidden), x.dtype)
        xs = x[::-1] if (c.get("direction", "forward") == "reverse" or d == 1) else x
        xw = jnp.einsum("tbi,gi->tbg", xs, w[d]) + wbias
        fns = [(lambda v, n=n: _ACT[n](jax, v)) for n in acts[d * per_dir:(d + 1) * per_dir]]

        def body(carry, xt, d=d, fns=fns, rb=rb):
            h, cc = carry
            h, cc = step(xt, h, cc, r[d], rb, fns, d)
            return (h, cc), h

        (h, cc), y = jax.lax.scan(body, (h, cc), xw)
        if xs is not x:
            y = y[::-1]
        ys.append(y)
        hs.append(h)
        cs.append(cc)
    y = jnp.stack(ys, axis=1)  # [seq, dirs, batch, hidden]
    return y, jnp.stack(hs), jnp.stack(cs)


@_op("LSTM")
def _lstm(c, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    if c.get("input_forget", 0) or c.get("clip") is not None:
        raise PrunecError(f"distillation: LSTM {c.node.name!r} with input_forget/clip is not supported")
    _full_lengths(seq_lens, x)
    H = c.get("hidden_size")

    def step(xt, h, cc, rd, rb, fns, d):
        g = xt + h @ rd.T + rb
        i, o, f, cand = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        if p is not None:
            i = i + p[d][:H] * cc
            f = f + p[d][2 * H:] * cc
        i, f = fns[0](i), fns[0](f)
        cand = fns[1](cand)
        cc = f * cc + i * cand
        if p is not None:
            o = o + p[d][H:2 * H] * cc
        h = fns[0](o) * fns[2](cc)
        return h, cc

    return _recurrence(c, x, w, r, b, h0, c0, step, 4, ["sigmoid", "tanh", "tanh"])


@_op("GRU")
def _gru(c, x, w, r, b=None, seq_lens=None, h0=None):
    _full_lengths(seq_lens, x)
    H = c.get("hidden_size")
    lbr = c.get("linear_before_reset", 0)

    def step(xt, h, cc, rd, rb, fns, d):
        hr = h @ rd[:2 * H].T + rb[:2 * H]
        z = fns[0](xt[:, :H] + hr[:, :H])
        rr = fns[0](xt[:, H:2 * H] + hr[:, H:])
        if lbr:
            hh = fns[1](xt[:, 2 * H:] + rr * (h @ rd[2 * H:].T + rb[2 * H:]))
        else:
            hh = fns[1](xt[:, 2 * H:] + (rr * h) @ rd[2 * H:].T + rb[2 * H:])
        return (1 - z) * hh + z * h, cc

    y, hs, _ = _recurrence(c, x, w, r, b, h0, None, step, 3, ["sigmoid", "tanh"])
    return y, hs


@_op("RNN")
def _rnn(c, x, w, r, b=None, seq_lens=None, h0=None):
    _full_lengths(seq_lens, x)

    def step(xt, h, cc, rd, rb, fns, d):
        return fns[0](xt + h @ rd.T + rb), cc

    y, hs, _ = _recurrence(c, x, w, r, b, h0, None, step, 1, ["tanh"])
    return y, hs


def _full_lengths(seq_lens, x):
    if seq_lens is None:
        return
    lens = _static(seq_lens, "sequence_lens")
    if np.any(lens != np.shape(x)[0]):
        raise PrunecError("distillation: recurrent layers with per-sample sequence lengths are not supported")


@_op("Einsum")
def _einsum(c, *xs):
    return c.xp(*xs).einsum(c.get("equation"), *xs)

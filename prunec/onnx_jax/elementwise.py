"""Elementwise ops and activations."""
from __future__ import annotations

import numpy as np
from onnx import helper

from .registry import OPS, jnn, register


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
    OPS[_name] = _binary(_fn)


@register("Div")
def _div(c, a, b):
    xp = c.xp(a, b)
    if np.issubdtype(np.asarray(a).dtype if xp is np else a.dtype, np.integer):
        return (a // b).astype(a.dtype)
    return xp.divide(a, b)


@register("Max", "Min", "Sum", "Mean")
def _variadic(c, *xs):
    xp = c.xp(*xs)
    fn = {"Max": xp.maximum, "Min": xp.minimum, "Sum": xp.add, "Mean": xp.add}[c.node.op_type]
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out / len(xs) if c.node.op_type == "Mean" else out


@register("Where")
def _where(c, cond, a, b):
    return c.xp(cond, a, b).where(cond, a, b)


@register("Not")
def _not(c, x):
    return c.xp(x).logical_not(x)


@register("Relu")
def _relu(c, x):
    return c.xp(x).maximum(x, 0)


@register("Sigmoid")
def _sigmoid(c, x):
    return jnn(c).sigmoid(x)


@register("Tanh")
def _tanh(c, x):
    return c.xp(x).tanh(x)


@register("Exp", "Log", "Sqrt", "Abs", "Neg", "Floor", "Ceil", "Sign", "Round", "Reciprocal", "Sin", "Cos")
def _simple(c, x):
    xp = c.xp(x)
    name = {"Neg": "negative", "Reciprocal": "reciprocal"}.get(c.node.op_type, c.node.op_type.lower())
    if name == "reciprocal":
        return 1.0 / x
    return getattr(xp, name)(x)


@register("Erf")
def _erf(c, x):
    return c.jax.scipy.special.erf(x)


@register("LeakyRelu")
def _leaky(c, x):
    return c.jax.numpy.where(x >= 0, x, x * c.get("alpha", 0.01))


@register("Elu")
def _elu(c, x):
    a = c.get("alpha", 1.0)
    return c.jax.numpy.where(x > 0, x, a * (c.jax.numpy.exp(x) - 1))


@register("Selu")
def _selu(c, x):
    a, g = c.get("alpha", 1.67326319217681884765625), c.get("gamma", 1.05070102214813232421875)
    jnp = c.jax.numpy
    return g * jnp.where(x > 0, x, a * (jnp.exp(x) - 1))


@register("Softplus")
def _softplus(c, x):
    return jnn(c).softplus(x)


@register("Softsign")
def _softsign(c, x):
    return x / (1 + c.jax.numpy.abs(x))


@register("Mish")
def _mish(c, x):
    return x * c.jax.numpy.tanh(jnn(c).softplus(x))


@register("HardSigmoid")
def _hsig(c, x):
    return c.jax.numpy.clip(c.get("alpha", 0.2) * x + c.get("beta", 0.5), 0, 1)


@register("HardSwish")
def _hswish(c, x):
    return x * c.jax.numpy.clip(x / 6 + 0.5, 0, 1)


@register("Gelu")
def _gelu(c, x):
    return jnn(c).gelu(x, approximate=c.get("approximate", "none") == "tanh")


@register("Clip")
def _clip(c, x, lo=None, hi=None):
    if c.opset < 11:
        lo, hi = c.get("min"), c.get("max")
    xp = c.xp(x)
    if lo is not None:
        x = xp.maximum(x, lo)
    if hi is not None:
        x = xp.minimum(x, hi)
    return x


@register("PRelu")
def _prelu(c, x, slope):
    return c.jax.numpy.where(x >= 0, x, x * slope)


@register("Identity", "Dropout")
def _identity(c, x, *rest):
    return x


@register("Cast")
def _cast(c, x):
    dtype = helper.tensor_dtype_to_np_dtype(c.get("to"))
    return x.astype(dtype)



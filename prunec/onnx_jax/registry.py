"""The op registry of the JAX interpreter: `@register("Name")` registers how an ONNX op is computed."""
from __future__ import annotations

import numpy as np
from onnx import helper

from prunec.errors import PrunecError

class Ctx:
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


def static_value(value, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception:  # a traced value: the graph computes a shape from data
        raise PrunecError(f"distillation: {what} depends on the data at run time; use --recover refit") from None


OPS = {}


def register(*names):
    def register(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return register




def jnn(c):
    return c.jax.nn


def axes_of(c, axes_input, attr="axes"):
    if axes_input is not None:
        return [int(a) for a in static_value(axes_input, "axes").reshape(-1).tolist()]
    a = c.get(attr)
    return None if a is None else list(a)

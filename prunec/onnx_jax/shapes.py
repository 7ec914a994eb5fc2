"""Shape arithmetic and data movement (static with numpy where every input is a constant)."""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from prunec.errors import PrunecError

from .registry import axes_of, register, static_value


@register("Shape")
def _shape(c, x):
    s = np.array(np.shape(x), dtype=np.int64)
    start, end = c.get("start", 0), c.get("end")
    return s[start:end]


@register("Size")
def _size(c, x):
    return np.array(np.size(x), dtype=np.int64)


@register("Constant")
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


@register("ConstantOfShape")
def _const_of_shape(c, shape):
    value = np.zeros(1, np.float32)
    for a in c.node.attribute:
        if a.name == "value":
            value = numpy_helper.to_array(a.t)
    return np.full(tuple(static_value(shape, "ConstantOfShape's shape").tolist()), value.reshape(-1)[0], value.dtype)


@register("Range")
def _range(c, start, limit, delta):
    s, l, d = (static_value(v, "Range") for v in (start, limit, delta))
    return np.arange(s, l, d, dtype=s.dtype)


@register("Reshape")
def _reshape(c, x, shape):
    shape = [int(v) for v in static_value(shape, "a Reshape target").tolist()]
    if not c.get("allowzero", 0):
        shape = [np.shape(x)[i] if v == 0 else v for i, v in enumerate(shape)]
    return c.xp(x).reshape(x, shape)


@register("Flatten")
def _flatten(c, x):
    axis = c.get("axis", 1)
    s = np.shape(x)
    axis = axis % len(s) if s else 0
    return c.xp(x).reshape(x, (int(np.prod(s[:axis])), int(np.prod(s[axis:]))))


@register("Transpose")
def _transpose(c, x):
    perm = c.get("perm") or list(range(np.ndim(x)))[::-1]
    return c.xp(x).transpose(x, perm)


@register("Squeeze")
def _squeeze(c, x, axes=None):
    axes = axes_of(c, axes)
    xp = c.xp(x)
    if axes is None:
        return xp.squeeze(x)
    return xp.squeeze(x, axis=tuple(a % np.ndim(x) for a in axes))


@register("Unsqueeze")
def _unsqueeze(c, x, axes=None):
    axes = axes_of(c, axes)
    rank = np.ndim(x) + len(axes)
    out = x
    for a in sorted(a % rank for a in axes):
        out = c.xp(x).expand_dims(out, a)
    return out


@register("Concat")
def _concat(c, *xs):
    xs = [x for x in xs if x is not None]
    return c.xp(*xs).concatenate(xs, axis=c.get("axis"))


@register("Split")
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


@register("Slice")
def _slice(c, x, starts=None, ends=None, axes=None, steps=None):
    if c.opset < 10:
        starts, ends, axes = c.get("starts"), c.get("ends"), c.get("axes")
    starts = static_value(starts, "Slice starts").reshape(-1).tolist()
    ends = static_value(ends, "Slice ends").reshape(-1).tolist()
    axes = list(range(len(starts))) if axes is None else static_value(axes, "Slice axes").reshape(-1).tolist()
    steps = [1] * len(starts) if steps is None else static_value(steps, "Slice steps").reshape(-1).tolist()
    index = [slice(None)] * np.ndim(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = np.shape(x)[a]
        s, e, st = int(s), int(e), int(st)
        index[a] = slice(*slice(s, e, st).indices(dim))
    return x[tuple(index)]


@register("Gather")
def _gather(c, x, idx):
    axis = c.get("axis", 0)
    xp = c.xp(x, idx)
    return xp.take(x, static_value(idx, "Gather indices") if xp is not np else idx, axis=axis)


@register("Expand")
def _expand(c, x, shape):
    shape = tuple(int(v) for v in static_value(shape, "Expand's shape").tolist())
    out = np.broadcast_shapes(np.shape(x), shape)
    return c.xp(x).broadcast_to(x, out)


@register("Tile")
def _tile(c, x, reps):
    return c.xp(x).tile(x, tuple(static_value(reps, "Tile repeats").tolist()))


@register("Pad")
def _pad(c, x, pads=None, value=None, axes=None):
    if c.opset < 11:
        pads, value = c.get("pads"), c.get("value", 0.0)
    pads = [int(p) for p in static_value(pads, "Pad's pads").reshape(-1).tolist()]
    rank = np.ndim(x)
    ax = list(range(rank)) if axes is None else [int(a) % rank for a in static_value(axes, "axes").tolist()]
    width = [(0, 0)] * rank
    for i, a in enumerate(ax):
        width[a] = (pads[i], pads[i + len(ax)])
    mode = c.get("mode", "constant")
    xp = c.xp(x)
    if mode == "constant":
        v = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0]) if np.size(value) else 0.0
        return xp.pad(x, width, constant_values=v)
    return xp.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


@register("DepthToSpace")
def _d2s(c, x):
    b, ch, h, w = np.shape(x)
    r = c.get("blocksize")
    jnp = c.jax.numpy
    if c.get("mode", "DCR") == "DCR":
        y = jnp.reshape(x, (b, r, r, ch // r // r, h, w)).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = jnp.reshape(x, (b, ch // r // r, r, r, h, w)).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(b, ch // r // r, h * r, w * r)


@register("SpaceToDepth")
def _s2d(c, x):
    b, ch, h, w = np.shape(x)
    r = c.get("blocksize")
    y = c.jax.numpy.reshape(x, (b, ch, h // r, r, w // r, r)).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(b, ch * r * r, h // r, w // r)



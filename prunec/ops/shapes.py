"""Shape vectors computed in the graph (Shape -> Gather -> Mul/Div -> Unsqueeze -> Concat).

Exporters compute Reshape targets and state shapes from the run-time shape of a tensor, so the
model runs at any size. Each element of such a vector is traced back to a constant, or to
`num/den * prod(dims)` where each dim is an axis of some tensor read by a Shape node. Elements
that name an axis stay right after pruning by themselves (the axis shrinks with its channels),
provided the output axis they size is the same channel space: the rules unify the two. Constant
elements are rewritten. Anything else (an element the tracer cannot follow) is unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import onnx_graphsurgeon as gs

from . import rule
from .common import int_list

NOT_CHANNELS = "not a channel axis"
MAX_DEPTH = 32


@dataclass(frozen=True, eq=False)
class Elem:
    """One element of a shape vector: `value` when constant, else num/den * prod(dims)."""
    value: int | None = None
    dims: tuple[tuple[gs.Tensor, int], ...] = ()
    num: int = 1
    den: int = 1
    slot: tuple | None = None  # (consumer node, input index, flat index) of a rewritable constant
    offset: int = 0  # + offset, pending a floor division by more than it (a ceil division: (C + 2) / 3)


def _producer(t: gs.Tensor):
    return t.inputs[0] if t.inputs else None


def trace(t: gs.Tensor, ctx, depth: int = 0) -> list[Elem | None] | None:
    """The elements of the 1-D (or 0-D) int tensor t, or None when its length is unknown."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(t, gs.Constant):
        return [Elem(value=v) for v in int_list(t.values)]
    node = _producer(t)
    if node is None or t.name not in ctx.model.shapes:
        return None
    n_out = int(prod(ctx.shape(t)))
    op = node.op
    if op == "Shape":
        src = node.inputs[0]
        r = len(ctx.shape(src))
        start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
        axes = list(range(r))[slice(start, None if end is None else int(end))]
        if r == 1 and _fixed_length(src, ctx):  # the length of a shape vector, not of a tensor axis
            return [Elem(value=ctx.shape(src)[0]) for _ in axes]
        return [Elem(dims=((src, a),)) for a in axes]
    if op == "ConstantOfShape":  # a vector of fills (zero pads), as long as a constant says
        count = trace(node.inputs[0], ctx, depth + 1)
        if count is None or any(e is None or e.value is None for e in count):
            return [None] * n_out
        fill = node.attrs.get("value")
        fill = int(np.asarray(fill.values).reshape(-1)[0]) if fill is not None else 0
        return [Elem(value=fill) for _ in range(n_out)]
    if op in ("Transpose", "Slice") and _rank(node.inputs[0], ctx) not in (0, 1, None):
        return _nd(node, ctx, depth)
    if op in ("Unsqueeze", "Squeeze", "Identity", "Cast", "Reshape", "Flatten"):
        return _with_slots(node, 0, trace(node.inputs[0], ctx, depth + 1))
    flat = bool(node.inputs) and _rank(node.inputs[0], ctx) in (0, 1)
    if op == "Concat" and (int(node.attrs.get("axis", 0)) == 0 or flat):  # row-major order: axis 0 is flat
        out: list[Elem | None] = []
        for i, piece in enumerate(node.inputs):
            elems = _with_slots(node, i, trace(piece, ctx, depth + 1))
            if elems is None:
                return None
            out += elems
        return out if len(out) == n_out else None
    if op == "Gather" and int(node.attrs.get("axis", 0)) == 0 and flat:  # rows of a 2-D vector are not elements
        src, idx = trace(node.inputs[0], ctx, depth + 1), _const(node.inputs[1])
        if src is None or idx is None:
            return [None] * n_out
        return [src[i] for i in int_list(idx)]
    if op == "Slice" and flat:
        src = trace(node.inputs[0], ctx, depth + 1)
        bounds = [_const(node.inputs[i]) if len(node.inputs) > i else None for i in (1, 2)]
        steps = _const(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4].name else [1]
        if src is None or any(b is None for b in bounds) or steps is None:
            return [None] * n_out
        return src[slice(int_list(bounds[0])[0], int_list(bounds[1])[0], int_list(steps)[0])]
    if op in ("Add", "Sub"):
        a, b = (trace(x, ctx, depth + 1) for x in node.inputs[:2])
        a, b = (_broadcast(v, n_out) if v is not None else None for v in (a, b))
        if a is None or b is None:
            return [None] * n_out
        return [_add(x, y, op == "Sub") for x, y in zip(a, b)]
    if op in ("Mul", "Div"):
        a, b = (trace(x, ctx, depth + 1) for x in node.inputs[:2])
        if a is None or b is None:
            return [None] * n_out
        a, b = _broadcast(a, n_out), _broadcast(b, n_out)
        if a is None or b is None:
            return [None] * n_out
        return [_mul(x, y) if op == "Mul" else _div(x, y) for x, y in zip(a, b)]
    return [None] * n_out


def _nd(node, ctx, depth: int) -> list[Elem | None]:
    """Transpose or Slice (constant bounds) of a small n-D int tensor, element by element in
    row-major order: torch writes pads as a [-1, 2] table, reversed and transposed into ONNX order."""
    x = node.inputs[0]
    n_out = int(prod(ctx.shape(node.outputs[0])))
    src = trace(x, ctx, depth + 1)
    shape = ctx.shape(x)
    if src is None or len(src) != prod(shape):
        return [None] * n_out
    table = np.empty(len(src), dtype=object)
    table[:] = src
    table = table.reshape(shape)
    if node.op == "Transpose":
        perm = node.attrs.get("perm")
        table = np.transpose(table, None if perm is None else [int(p) for p in perm])
    else:
        args = [_const(node.inputs[i]) if len(node.inputs) > i and node.inputs[i].name else None for i in range(1, 5)]
        if args[0] is None or args[1] is None or (len(node.inputs) > 3 and node.inputs[3].name and args[2] is None) \
                or (len(node.inputs) > 4 and node.inputs[4].name and args[3] is None):
            return [None] * n_out
        starts, ends = int_list(args[0]), int_list(args[1])
        axes = int_list(args[2]) if args[2] is not None else list(range(len(starts)))
        steps = int_list(args[3]) if args[3] is not None else [1] * len(starts)
        index = [slice(None)] * table.ndim
        for a, b, e, st in zip(axes, starts, ends, steps):
            index[a % table.ndim] = slice(b, e, st)
        table = table[tuple(index)]
    out = list(table.reshape(-1))
    return out if len(out) == n_out else [None] * n_out


def _fixed_length(t: gs.Tensor, ctx, depth: int = 0) -> bool:
    """A 1-D vector whose length no input size changes: constants, scalars and what concatenates,
    reshapes or casts them (torch's pads list), not a Shape or a Range."""
    if isinstance(t, gs.Constant) or _rank(t, ctx) == 0:
        return True
    node = _producer(t)
    if node is None or depth > MAX_DEPTH:
        return False
    if node.op in ("Concat", "Add", "Sub", "Mul", "Div", "Mod"):  # elementwise: broadcast lengths
        return all(_fixed_length(x, ctx, depth + 1) for x in node.inputs)
    if node.op in ("Unsqueeze", "Cast", "Identity"):
        return _fixed_length(node.inputs[0], ctx, depth + 1)
    return False


def _rank(t: gs.Tensor, ctx) -> int | None:
    if isinstance(t, gs.Constant):
        return np.ndim(t.values)
    return len(ctx.model.shapes[t.name]) if t.name in ctx.model.shapes else None


def trace_input(node, index: int, ctx) -> list[Elem | None] | None:
    """trace() of a node's shape input, constants given slots in this node."""
    return _with_slots(node, index, trace(node.inputs[index], ctx))


def _const(t):
    return t.values if isinstance(t, gs.Constant) else None


def _with_slots(node, index, elems):
    """Constants read straight by this node get a slot the rewrite can replace."""
    if elems is None or not isinstance(node.inputs[index], gs.Constant):
        return elems
    return [Elem(value=e.value, slot=(node, index, k)) for k, e in enumerate(elems)]


def _broadcast(elems, n):
    if len(elems) == n:
        return elems
    return elems * n if len(elems) == 1 else None


def _mul(a: Elem | None, b: Elem | None) -> Elem | None:
    if a is None or b is None or a.offset or b.offset:
        return None
    if a.value is not None and b.value is not None:
        return Elem(value=a.value * b.value)
    if a.value is not None:
        a, b = b, a
    if b.value is not None:
        return Elem(dims=a.dims, num=a.num * b.value, den=a.den)
    return Elem(dims=a.dims + b.dims, num=a.num * b.num, den=a.den * b.den)


def _add(a: Elem | None, b: Elem | None, sub: bool) -> Elem | None:
    if a is None or b is None:
        return None
    if a.value is not None and b.value is not None:
        return Elem(value=a.value - b.value if sub else a.value + b.value)
    if not sub and b.value is not None:
        a, b = b, a
    if a.value is not None and a.value >= 0 and not sub and not b.offset:  # C + 2, divided next
        return Elem(dims=b.dims, num=b.num, den=b.den, offset=a.value)
    return None


def _div(a: Elem | None, b: Elem | None) -> Elem | None:
    if a is None or b is None or b.value in (None, 0):
        return None  # a divisor read at run time is not followed
    if a.value is not None:
        return Elem(value=a.value // b.value)
    if a.offset >= b.value:
        return None
    # floor((x + offset) / b) = x / b for x a multiple of b (a channel count b divides: bind and the
    # chunked Slice factor b out of the axis, so it stays a multiple after pruning)
    return Elem(dims=a.dims, num=a.num, den=a.den * b.value)


def bind(ctx, elem: Elem, space, size: int) -> bool:
    """Tie an output axis sized by a traced element to the axes it is computed from. Returns False
    when the element is unknown (the caller blocks the axis)."""
    if elem is None or elem.offset:
        return False
    if elem.value is not None:
        return True  # a constant: rewritten after pruning
    dims = [ctx.axis(t, axis) for t, axis in elem.dims if ctx.shape(t)[axis] != 1]
    factors = list(dims)
    if elem.num != 1:
        factors.insert(0, ctx.spaces.new(elem.num, blocked=f"constant factor of a shape computed for {ctx.where()}"))
    if elem.den != 1:
        # size = prod(dims) / den: the dims are (den x size), the den factor cannot change
        whole = ctx.spaces.product(factors) if factors else None
        if whole is None or whole.size != elem.den * size:
            return False
        piece = ctx.spaces.new(elem.den, blocked=f"divisor of a shape computed for {ctx.where()}")
        return ctx.unify(whole, ctx.spaces.product([piece, space]))
    if not factors:
        return size == elem.num
    whole = ctx.spaces.product(factors)
    return whole.size == size and ctx.unify(space, whole)


def rewrite_constants(rw, elems: list[Elem | None], new_values: list[int]) -> None:
    """Give each constant element its new value (a fresh constant per consuming node)."""
    by_input: dict[tuple, dict[int, int]] = {}
    for e, v in zip(elems, new_values):
        if e is not None and e.slot is not None and e.value != v:
            node, index, k = e.slot
            by_input.setdefault((id(node), index), {"node": node})[k] = v
    for (_, index), changes in by_input.items():
        node = changes.pop("node")
        old = node.inputs[index]
        values = np.array(old.values)
        flat = values.reshape(-1)
        for k, v in changes.items():
            flat[k] = v
        rw.set_const_input(node, index, flat.reshape(values.shape))


def _rewrite_constant_of_shape(node, rw):
    elems = trace(node.inputs[0], rw)
    if elems is not None:
        rewrite_constants(rw, elems, list(rw.new_shape(node.outputs[0])))


@rule("ConstantOfShape", rewrite=_rewrite_constant_of_shape)
def constant_of_shape(node, ctx):
    """A filled tensor (zero states of a recurrent op): an axis sized by a constant is a fresh
    space anything may prune; one sized by another tensor's axis follows that axis."""
    y = node.outputs[0]
    elems = trace(node.inputs[0], ctx)
    for i, n in enumerate(ctx.shape(y)):
        e = elems[i] if elems is not None and i < len(elems) else None
        if e is not None and e.value is not None and e.slot is not None:
            ctx.set_axis(y, i, ctx.new(n))
        elif e is not None and e.value is None:
            space = ctx.new(n)
            ctx.set_axis(y, i, space)
            if not bind(ctx, e, space, n):
                ctx.block(space, f"{ctx.where()} output size {i} cannot follow pruning")
        else:
            ctx.set_axis(y, i, ctx.spaces.new(n, blocked=f"axis {i} of {ctx.where()} output: fixed size"))
    for t in node.inputs:
        if t.name and t.name in ctx.model.shapes:
            ctx.accept(ctx.axis(t, 0))

"""Concat, Split, Slice, Gather: channel spaces laid end to end along an axis."""
from __future__ import annotations

from . import rule
from .common import input_at, int_list
from .shapes import trace


@rule("Concat")
def concat(node, ctx):
    y = node.outputs[0]
    r = ctx.rank(y)
    a = int(node.attrs["axis"]) % r
    xs = [x for x in node.inputs if x.name]
    ctx.set_axis(y, a, ctx.spaces.concat([ctx.axis(x, a, "const") for x in xs]))
    for i in range(r):
        if i != a:
            for x in xs:
                ctx.set_axis(y, i, ctx.axis(x, i))


def _split_sizes(node, ctx, size):
    if "split" in node.attrs:
        return list(node.attrs["split"]), "attr"
    t = input_at(node, 1)
    if t is not None:
        values = ctx.const(t)
        return (int_list(values), "input") if values is not None else (None, None)
    n = len(node.outputs)
    return [size // n + (1 if i < size % n else 0) for i in range(n)], "equal"


def _rewrite_split(node, rw):
    state = rw.state(node)
    a = state["axis"]
    new = [rw.new_shape(y)[a] for y in node.outputs]
    old = [rw.shape(y)[a] for y in node.outputs]
    if new == old:
        return
    if state["source"] == "attr":
        node.attrs["split"] = new
    elif rw.model.opset >= 13:
        node.attrs.pop("num_outputs", None)
        rw.set_const_input(node, 1, new)
    else:
        node.attrs["split"] = new


@rule("Split", rewrite=_rewrite_split)
def split(node, ctx):
    x = node.inputs[0]
    r = ctx.rank(x)
    a = int(node.attrs.get("axis", 0)) % r
    sizes, source = _split_sizes(node, ctx, ctx.shape(x)[a])
    ctx.state().update(axis=a, source=source)
    if sizes is None:
        ctx.block(ctx.axis(x, a), f"{ctx.where()} split sizes are computed at run time")
        return
    pieces = ctx.spaces.split(ctx.axis(x, a), sizes, ctx.where())
    for k, y in enumerate(node.outputs):
        if not y.name:
            continue
        for i in range(r):
            if i == a:
                if pieces is not None:
                    ctx.set_axis(y, i, pieces[k])
            else:
                ctx.set_axis(y, i, ctx.axis(x, i))


def _slice_params(node, ctx):
    """(starts, ends, axes, steps) as Python lists, or None when computed at run time."""
    if ctx.model.opset < 10 or "starts" in node.attrs:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes = node.attrs.get("axes", list(range(len(starts))))
        return list(starts), list(ends), list(axes), [1] * len(starts)
    vals = []
    for i in (1, 2, 3, 4):
        t = input_at(node, i)
        if t is None:
            vals.append(None)
            continue
        v = ctx.const(t)
        if v is None:
            return None
        vals.append(int_list(v))
    starts, ends, axes, steps = vals
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    return starts, ends, axes, steps


def _rewrite_slice(node, rw):
    state = rw.state(node)
    if not state.get("pieces"):
        return
    starts, ends, axes, steps = _slice_params(node, rw)
    changed = False
    for k, (before, middle) in state["pieces"].items():
        new_start = rw.kept(before) if before is not None else 0
        new_end = new_start + rw.kept(middle)
        if (new_start, new_end) != (state["ranges"][k]):
            starts[k], ends[k] = new_start, new_end
            changed = True
    if changed:
        rw.set_const_input(node, 1, starts)
        rw.set_const_input(node, 2, ends)


def _slice_computed_bounds(node, ctx, r: int) -> None:
    """Bounds read at run time (x[:, :H, :W] after a window pad): the sliced axes follow nothing,
    the axes the slice does not name pass through."""
    x, y = node.inputs[0], node.outputs[0]
    axes_t, starts_t = input_at(node, 3), input_at(node, 1)
    if axes_t is not None:
        axes = ctx.const(axes_t)
        axes = None if axes is None else [a % r for a in int_list(axes)]
    else:
        axes = list(range(ctx.shape(starts_t)[0])) if starts_t is not None and ctx.shape(starts_t) else None
    if axes is None:
        ctx.block_tensor(x, f"{ctx.where()} bounds are computed at run time")
        return
    chunks = _chunks(node, ctx, axes)
    for i in range(r):
        if i not in axes:
            ctx.set_axis(y, i, ctx.axis(x, i))
        elif i in chunks:
            continue
        elif ctx.shape(x)[i] > 1 or ctx.shape(y)[i] > 1:
            ctx.block(ctx.axis(x, i), f"{ctx.where()} bounds are computed at run time")
            ctx.set_axis(y, i, ctx.spaces.new(ctx.shape(y)[i], blocked=f"{ctx.where()} bounds are computed at run time"))


def _chunks(node, ctx, axes: list[int]) -> set[int]:
    """Sliced axes whose bounds are fractions k/d of the axis's own size (torch.chunk: starts and ends
    ceil(C / d) * k): the axis is d chunks x c channels, pruned alike in every chunk so the bounds,
    computed at run time, stay on the chunk edges. Returns the axes so related."""
    x, y = node.inputs[0], node.outputs[0]
    starts, ends = (trace(t, ctx) if t is not None else None for t in (input_at(node, 1), input_at(node, 2)))
    if starts is None or ends is None or len(starts) != len(axes) or len(ends) != len(axes):
        return set()
    done = set()
    for i, s, e in zip(axes, starts, ends):
        parts = [None if f is not None and f.value == 0 else f for f in (s, e)]
        if e is None or e.value is not None or (s is not None and s.value not in (None, 0)) or s is None:
            continue
        fracs = [f for f in parts if f is not None]
        if any(f.offset or len(f.dims) != 1 or f.dims != fracs[0].dims for f in fracs):
            continue
        (t, a), = fracs[0].dims
        n = ctx.shape(x)[i]
        d = max(f.den for f in fracs)
        if ctx.shape(t)[a] != n or n % d or any(d % f.den for f in fracs):
            continue
        k0 = parts[0].num * (d // parts[0].den) if parts[0] is not None else 0
        k1 = parts[1].num * (d // parts[1].den)
        c = n // d
        if k1 <= k0 or k1 > d or (k1 - k0) * c != ctx.shape(y)[i]:
            continue
        ctx.unify(ctx.axis(t, a), ctx.axis(x, i))
        pieces = ctx.spaces.factor(ctx.axis(x, i), [d, c], ctx.where())
        if pieces is None:
            continue
        ctx.block(pieces[0], f"chunk count of {ctx.where()}")
        ctx.accept(pieces[0])
        out = pieces[1] if k1 - k0 == 1 else ctx.spaces.product(
            [ctx.spaces.new(k1 - k0, blocked=f"chunk count of {ctx.where()}"), pieces[1]])
        ctx.set_axis(y, i, out)
        done.add(i)
    return done


@rule("Slice", rewrite=_rewrite_slice)
def slice_(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    r = ctx.rank(x)
    params = _slice_params(node, ctx)
    if params is None:
        _slice_computed_bounds(node, ctx, r)
        return
    starts, ends, axes, steps = params
    sliced = {}
    for k, (s, e, a, st) in enumerate(zip(starts, ends, axes, steps)):
        a %= r
        n = ctx.shape(x)[a]
        start, stop, step = slice(s, e, st).indices(n)
        if (start, stop, step) != (0, n, 1):
            sliced[a] = (k, start, stop, step)
    pieces, ranges = {}, {}
    for i in range(r):
        if i not in sliced:
            ctx.set_axis(y, i, ctx.axis(x, i))
            continue
        k, start, stop, step = sliced[i]
        if step != 1 or stop <= start:
            if ctx.shape(x)[i] > 1:
                ctx.block(ctx.axis(x, i), f"strided or empty {ctx.where()}")
            continue
        sizes = [n for n in (start, stop - start, ctx.shape(x)[i] - stop)]
        parts = ctx.spaces.split(ctx.axis(x, i), [n for n in sizes if n], ctx.where())
        if parts is None:
            continue
        before = parts[0] if start else None
        middle = parts[1] if start else parts[0]
        for p in parts:
            if p is not middle:
                ctx.accept(p)  # sliced away: pruning it only moves the bounds
        ctx.set_axis(y, i, middle)
        pieces[k], ranges[k] = (before, middle), (start, stop)
    ctx.state().update(pieces=pieces, ranges=ranges)


@rule("Gather")
def gather(node, ctx):
    x, idx, y = node.inputs[0], node.inputs[1], node.outputs[0]
    r = ctx.rank(x)
    a = int(node.attrs.get("axis", 0)) % r
    q = ctx.rank(idx)
    if ctx.shape(x)[a] > 1:
        ctx.block(ctx.axis(x, a), f"indexed by {ctx.where()}")
    for i in range(r):
        if i < a:
            ctx.set_axis(y, i, ctx.axis(x, i))
        elif i > a:
            ctx.set_axis(y, i - 1 + q, ctx.axis(x, i))

"""Channel split and concat without copies: views into one buffer instead of copy kernels.

YOLO-style graphs split a conv's output in two and concatenate the halves with the outputs of
the convs that follow (C2f, SPPF, the neck). Run as kernels, each split and concat is a pass
over its activations that computes nothing; in pruned YOLOv8n they are about a tenth of the
run. Along an axis with only unit axes before it, every part of a split or concat is one
contiguous range of bytes, so both can be storage:

- a split's outputs become views of its input at their byte offsets;
- a concat's output is allocated first, and each input's producer writes straight into its
  range of it (the producer's output buffer becomes a view of the concat's output).

Each view is made with R.memory.view and passed through R.memory.ensure_zero_offset, which
moves the offset into the data pointer (kernels are compiled for offset-0 buffers) without
copying, provided the offset is a multiple of the runtime's 64-byte alignment. That is checked
here, at compile time: a split or concat with an unaligned part, an input that is not written
by a kernel of this function (a parameter, a constant), an input that appears twice or is
already placed in another concat, or a graph output is left to its copy kernel.

Mechanics: `legalize_map()` lowers qualifying split/concat ops to PrimFuncs tagged
VIEW_OP_ATTR and marked opaque, so FuseOps leaves them alone and they stay recognizable;
`apply()` rewrites main after CallTIRRewrite, when every kernel's output is an explicit
R.builtin.alloc_tensor and before memory planning sees it.
"""

from __future__ import annotations

import logging

_log = logging.getLogger(__name__)

VIEW_OP_ATTR = "prunec_view_op"
ALIGN = 64  # tvm::runtime::kAllocAlignment: ensure_zero_offset copies below it
_OPAQUE = 8  # relay/relax OpPatternKind kOpaque: FuseOps fuses nothing into it


def _static_shape(ty):
    try:
        return tuple(int(d) for d in ty.shape)
    except Exception:  # symbolic or unknown shape
        return None


def _contiguous_parts(shape, axis: int) -> bool:
    """Whether parts along `axis` are contiguous ranges: every axis before it has extent 1."""
    return all(d == 1 for d in shape[:axis])


def _computed(bb, expr) -> bool:
    """Whether expr is computed in the function being legalized (not a parameter or constant):
    only a kernel's output can be written in place, and only a view of one is free."""
    from tvm import relax

    if not isinstance(expr, relax.Var):
        return False
    value = bb.lookup_binding(expr)
    return isinstance(value, (relax.Call, relax.TupleGetItem))


def _qualifies(kind: str, bb, call) -> bool:
    if kind == "concat":
        fields = getattr(call.args[0], "fields", None)
        if fields is None or not all(_computed(bb, f) for f in fields):
            return False
        out = _static_shape(call.ty)
        if out is None or call.attrs.axis is None:
            return False
        axis = int(call.attrs.axis) % len(out)
        return _contiguous_parts(out, axis)
    src = _static_shape(call.args[0].ty)
    if src is None or not _computed(bb, call.args[0]):
        return False
    axis = int(call.attrs.axis) % len(src)
    return _contiguous_parts(src, axis)


def legalize_map() -> dict:
    """customize_legalize_map entries for relax.LegalizeOps: qualifying split/concat ops get
    TVM's own lowering, tagged and opaque (see the module docstring)."""
    import tvm

    def tagged(kind):
        default = tvm.ir.Op.get(f"relax.{kind}").get_attr("FLegalize")

        def legalize(bb, call):
            res = default(bb, call)
            if not _qualifies(kind, bb, call):
                return res
            gv = res.args[0]
            func = bb.get()[gv]
            bb.update_func(gv, func.with_attr("op_pattern", _OPAQUE).with_attr(VIEW_OP_ATTR, kind))
            return res

        return legalize

    return {"relax.concat": tagged("concat"), "relax.split": tagged("split")}


def _nbytes(shape, dtype: str) -> int:
    import math

    import numpy as np

    return math.prod(shape) * np.dtype(dtype).itemsize


class _Block:
    """One binding block of main after CallTIRRewrite, indexed for the rewrite."""

    def __init__(self, mod, block):
        import tvm
        from tvm import relax

        alloc_op = tvm.ir.Op.get("relax.builtin.alloc_tensor")
        self.bindings = list(block.bindings)
        self.alias = {}  # var -> the var it stands for (x = y, x = t[i] of t = (a, b))
        self.tuples = {}
        self.allocs = {}  # var -> index of its alloc_tensor binding
        self.writer = {}  # alloc var -> index of the first call that uses it (its writer)
        self.view_ops = []  # (index, kind, call)
        self.returned = set()  # graph outputs, through aliases: never placed in a buffer
        for i, b in enumerate(self.bindings):
            if not isinstance(b, relax.VarBinding):
                continue
            v = b.value
            if isinstance(v, relax.Var):
                self.alias[b.var] = v
            elif isinstance(v, relax.Tuple):
                self.tuples[b.var] = list(v.fields)
            elif isinstance(v, relax.TupleGetItem) and v.tuple_value in self.tuples:
                self.alias[b.var] = self.tuples[v.tuple_value][int(v.index)]
            elif isinstance(v, relax.Call):
                if v.op.same_as(alloc_op):
                    self.allocs[b.var] = i
                    continue
                for a in v.args:
                    if isinstance(a, relax.Var) and a in self.allocs:
                        self.writer.setdefault(a, i)
                if isinstance(v.op, relax.GlobalVar) and v.op in mod.functions:
                    f = mod[v.op]
                    kind = f.attrs.get(VIEW_OP_ATTR) if f.attrs is not None else None
                    if kind is not None:
                        self.view_ops.append((i, str(kind), v))

    def resolve(self, var):
        while var in self.alias:  # bindings are SSA: the chain ends
            var = self.alias[var]
        return var


def _plan(blk: _Block):
    """Decides which split/concat calls become views.
    Returns (drop: binding indices to remove, split_views: index -> [(var, src, shape, off)],
    placed: root alloc var -> (buffer var, byte offset))."""
    from tvm import relax

    drop, split_views, placed = set(), {}, {}
    view_of = {}  # split output var -> (source var, byte offset)

    def fresh_output(v, i):
        return isinstance(v, relax.Var) and v in blk.allocs and blk.writer.get(v) == i

    def root_of(v):
        """(root var, byte offset within it) for a concat input, through aliases and views."""
        v, off = blk.resolve(v), 0
        while v in view_of:
            src, o = view_of[v]
            v, off = blk.resolve(src), off + o
        return v, off

    for i, kind, call in blk.view_ops:
        if kind != "split":
            continue
        src, outs = call.args[0], list(call.args[1:])
        shapes = [_static_shape(o.ty) for o in outs]
        if not all(fresh_output(o, i) for o in outs) or None in shapes:
            continue
        dtype = str(src.ty.dtype)
        offs, acc = [], 0
        for s in shapes:
            offs.append(acc)
            acc += _nbytes(s, dtype)
        if any(o % ALIGN for o in offs) or any(blk.resolve(o) in blk.returned for o in outs):
            continue
        drop.add(i)
        drop.update(blk.allocs[o] for o in outs)
        split_views[i] = [(o, src, s, off) for o, s, off in zip(outs, shapes, offs)]
        for o, off in zip(outs, offs):
            view_of[o] = (src, off)

    for i, kind, call in reversed(blk.view_ops):  # outer concats first: nests compose
        if kind != "concat":
            continue
        ins, out = list(call.args[:-1]), call.args[-1]
        if not fresh_output(out, i):
            continue
        dtype = str(out.ty.dtype)
        # consecutive inputs that are parts of one root, in order, must tile it exactly
        groups = []  # [root, start in out, bytes covered]
        pos, ok = 0, True
        for v in ins:
            shape = _static_shape(v.ty)
            if shape is None or str(v.ty.dtype) != dtype:
                ok = False
                break
            size = _nbytes(shape, dtype)
            root, off = root_of(v)
            if groups and groups[-1][0].same_as(root) and off == groups[-1][2]:
                groups[-1][2] += size
            elif off == 0:
                groups.append([root, pos, size])
            else:
                ok = False
                break
            pos += size
        if not ok:
            continue
        roots = [g[0] for g in groups]
        for root, start, covered in groups:
            full = _static_shape(root.ty)
            if (root not in blk.allocs or root in placed or root.same_as(out)
                    or root in blk.returned or root not in blk.writer
                    or full is None or covered != _nbytes(full, dtype) or start % ALIGN
                    or sum(r.same_as(root) for r in roots) != 1):
                ok = False
                break
        if not ok:
            continue
        drop.add(i)
        for root, start, _ in groups:
            placed[root] = (out, start)
    return drop, split_views, placed


def _rewrite_block(blk: _Block, drop, split_views, placed):
    from tvm import relax, tirx

    bb = relax.BlockBuilder()
    bb._begin_binding_block()  # a scope, for normalizing (typing) the new calls
    out, emitted = [], set()

    def bind(var, value):
        out.append(relax.VarBinding(var, bb.normalize(value)))
        emitted.add(var)

    def view(var, src, shape, off):
        """var = ensure_zero_offset(view(src, shape, off)): var keeps its name and type."""
        tmp = relax.Var(f"{var.name}_view", var.ty)
        offset = relax.prim_value(tirx.IntImm("int64", off))
        bind(tmp, relax.op.memory.view(src, relax.ShapeExpr(list(shape)), str(var.ty.dtype),
                                        relative_byte_offset=offset))
        bind(var, relax.op.memory.ensure_zero_offset(tmp))

    def define(var):
        if var in emitted:
            return
        if var in placed:
            buf, start = placed[var]
            define(buf)
            view(var, buf, _static_shape(var.ty), start)
        else:
            out.append(blk.bindings[blk.allocs[var]])
            emitted.add(var)

    for i, b in enumerate(blk.bindings):
        if i in split_views:
            for var, src, shape, off in split_views[i]:
                view(var, src, shape, off)
            continue
        if i in drop:
            continue
        if b.var in blk.allocs:
            define(b.var)
            continue
        out.append(b)
        emitted.add(b.var)
    bb._end_block()
    return relax.BindingBlock(out)


def apply(mod, func_name: str = "main"):
    """Rewrites func_name of a module after CallTIRRewrite (see the module docstring).
    Returns (module, {"split": views made, "concat": copies elided})."""
    from tvm import relax

    stats = {"split": 0, "concat": 0}
    func = next((f for gv, f in mod.functions.items() if gv.name_hint == func_name), None)
    if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
        return mod, stats
    body = func.body
    returned = set()
    if isinstance(body.body, relax.Var):
        returned.add(body.body)
    elif isinstance(body.body, relax.Tuple):
        returned.update(f for f in body.body.fields if isinstance(f, relax.Var))
    blocks, changed = [], False
    for block in body.blocks:
        if isinstance(block, relax.DataflowBlock):
            blocks.append(block)  # only non-dataflow blocks are in DPS form
            continue
        blk = _Block(mod, block)
        outs = set(returned)
        for v in returned:
            outs.update(blk.tuples.get(v, ()))
        blk.returned = {blk.resolve(v) for v in outs} | outs
        drop, split_views, placed = _plan(blk)
        if not drop:
            blocks.append(block)
            continue
        stats["split"] += sum(len(v) for v in split_views.values())
        stats["concat"] += sum(1 for i, kind, _ in blk.view_ops if kind == "concat" and i in drop)
        blocks.append(_rewrite_block(blk, drop, split_views, placed))
        changed = True
    if not changed:
        return mod, stats
    new = relax.Function(func.params, relax.SeqExpr(blocks, body.body), func.ret_ty,
                         func.is_pure, func.attrs)
    import tvm

    mod = tvm.IRModule({gv: (new if gv.name_hint == func_name else f)
                        for gv, f in mod.functions.items()}, attrs=mod.attrs)
    _log.debug("zero-copy views: %s", stats)
    return mod, stats

"""Channel-blocked activations (NCHW{b}c) through depthwise-separable networks on CPU targets.

In NCHW, a pointwise conv vectorized over output channels holds one vector of b channels per
pixel and has to scatter it over b planes when it writes back; a stride-2 depthwise conv gathers
every other column. In NCHW{b}c (b = the vector width) the b channels of a pixel are one
contiguous vector on both sides, so pointwise convs write plain vectors and depthwise convs
load them at any stride. ONNX Runtime runs MobileNets this way; TVM's ConvertLayout can too,
once Clip is a pair of Relax ops (the ONNX importer emits it as opaque TIR calls, which stop the
layout at every ReLU6).

Which convs go blocked (`conv_layouts`): depthwise convs whose channel count is a multiple of b,
or of b / 2 on 16-lane targets (`channel_blocks`: pruned counts such as 24 or 168 run on NCHW8c
rather than NCHW); pointwise convs whose output channels are (their input too where it is: a
20 -> 144 expansion reads NCHW and writes blocked; a 144 -> 20 projection stays NCHW on both
sides); other dense convs read NCHW and may write blocked. A depthwise conv whose output goes to a conv that reads
NCHW (through its bias and Clip: `unblocked_outputs`) reads blocked and writes NCHW itself.
Only graphs with depthwise convs get this: in ResNet/YOLO-style graphs, the 3x3 convs
(Winograd) stay NCHW and blocked pointwise convs between them would only add layout changes.
"""

from __future__ import annotations

import logging
import re

from ..relax_rewrite import rewrite_functions
from .fold import fold_relax_constants

_log = logging.getLogger(__name__)

# conv2d layouts as (data, kernel, out) for relax.transform.ConvertLayout
NCHW = ("NCHW", "OIHW", "NCHW")


def blocked(b: int) -> str:
    return f"NCHW{b}c"


def channel_blocks(c: int, b: int) -> int:
    """Channels per block of a tensor with c channels: b (the vector width) where c is a
    multiple, else b / 2 on 16-lane targets where c is a multiple of 8 (pruned or rounded-to-8
    counts: PP-OCRv4's pruned 168-channel stage ran NCHW at 39 GMAC/s, 57 blocked), else 0
    (NCHW)."""
    if c % b == 0:
        return b
    return b // 2 if b >= 16 and c % (b // 2) == 0 else 0


def conv_layouts(c: int, oc: int, groups: int, kernel: tuple[int, int], strides, b: int):
    """(data, kernel, out) layouts for one NCHW conv2d with c input and oc output channels."""
    depthwise = groups == c == oc
    if groups != 1 and not depthwise:
        return NCHW
    pointwise = tuple(kernel) == (1, 1)
    in_b, out_b = channel_blocks(c, b), channel_blocks(oc, b)
    if pointwise and not out_b:
        # a blocked input with an NCHW output (a 144 -> 20 projection) would need the
        # channel-vectorized tile over 4-channel pieces: 4-6x slower than changing the layout
        # of the input first and running the NCHW row-tile conv
        in_b = 0
    elif not pointwise and not depthwise:
        in_b = 0  # dense KxK convs (the stems) read NCHW
        if tuple(kernel) == (3, 3) and tuple(strides) == (1, 1):
            out_b = 0  # Winograd candidates keep their NCHW output transform
    return (blocked(in_b) if in_b else "NCHW", f"OIHW{out_b}o" if out_b else "OIHW",
            blocked(out_b) if out_b else "NCHW")


def has_depthwise(mod) -> bool:
    """Whether the module's main function holds a depthwise conv2d (groups == channels > 1)."""
    from tvm import relax

    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d":
            try:
                c = int(e.args[0].ty.shape[1])
            except Exception:  # symbolic channels
                return
            if int(e.attrs.groups) == c > 1:
                found.append(e)

    relax.analysis.post_order_visit(mod["main"], visit)
    return bool(found)


def _single_use_chain_end(var, uses, values):
    """Follow var through single-use elementwise ops (bias add, Clip's maximum/minimum) to the
    call that consumes it: that call, or None when the chain forks or ends elsewhere."""
    while len(uses.get(var, ())) == 1:
        user_var = uses[var][0]
        call = values[user_var]
        if getattr(call.op, "name", "") in ("relax.add", "relax.maximum", "relax.minimum"):
            var = user_var
            continue
        return call
    return None


def unblocked_outputs(mod, b: int) -> list:
    """The depthwise conv2d calls of main whose output (after its bias and Clip) feeds a conv
    that conv_layouts keeps NCHW (MobileNetV2's 144 -> 24 projections): they write NCHW
    themselves, from the tile in registers, instead of writing blocked and changing the layout
    in a pass of its own (134 us of MobileNetV2's 4.5 ms at 2 threads)."""
    from tvm import relax

    values, uses = {}, {}
    for block in mod["main"].body.blocks:
        for bind in block.bindings:
            if isinstance(bind, relax.VarBinding) and isinstance(bind.value, relax.Call):
                values[bind.var] = bind.value
                for arg in bind.value.args:  # a concat's inputs come as one Tuple
                    for v in arg.fields if isinstance(arg, relax.Tuple) else (arg,):
                        if isinstance(v, relax.Var):
                            uses.setdefault(v, []).append(bind.var)
    found = []
    for var, call in values.items():
        layouts = _conv_call_layouts(call, b)
        if not layouts or layouts[0] == "NCHW" or int(call.attrs.groups) == 1:
            continue  # only blocked depthwise convs
        nxt = _single_use_chain_end(var, uses, values)
        after = _conv_call_layouts(nxt, b) if nxt is not None else None
        if after and after[0] == "NCHW":
            found.append(call)
    return found


def _conv_call_layouts(call, b: int):
    """conv_layouts for an NCHW float32 conv2d call with static shapes, else None."""
    if getattr(call.op, "name", "") != "relax.nn.conv2d":
        return None
    a = call.attrs
    try:
        d = [int(x) for x in call.args[0].ty.shape]
        w = [int(x) for x in call.args[1].ty.shape]
    except Exception:
        return None
    if call.args[0].ty.dtype != "float32" or call.args[1].ty.dtype != "float32" \
            or a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or len(d) != 4:
        return None
    return conv_layouts(d[1], w[0], int(a.groups), tuple(w[2:]),
                        tuple(int(s) for s in a.strides), b)


def _layout_cb(b: int, nchw_out=()):
    def cb(call):
        if getattr(call.op, "name", "") != "relax.nn.conv2d":
            return {}
        a = call.attrs
        if a.data_layout != "NCHW" or a.kernel_layout != "OIHW":
            return {"relax.nn.conv2d": [a.data_layout, a.kernel_layout, a.out_layout]}
        layouts = _conv_call_layouts(call, b)
        if layouts is None:  # symbolic shapes, or not float32 (the blocked kernels' only dtype)
            return {"relax.nn.conv2d": list(NCHW)}
        if any(call.same_as(c) for c in nchw_out):
            layouts = (layouts[0], layouts[1], "NCHW")
        return {"relax.nn.conv2d": list(layouts)}
    return cb


def _resolve(expr, lookup):
    """expr, or the value a Var is bound to."""
    from tvm import relax

    if isinstance(expr, relax.Var):
        value = lookup(expr)
        return expr if value is None else value
    return expr


def scalar_operands():
    """A pass: a one-element constant operand (shape (1,), (1, 1) ...) of an elementwise binary
    op becomes a rank-0 scalar when the other operand has at least its rank, which leaves the
    result unchanged. ConvertLayout carries a blocked layout through an op with a scalar, not
    through one with a rank-1 operand: PP-OCRv4's learnable affine blocks (y = w x + b around
    every HardSwish, w and b of shape (1,)) put a layout change on both sides of each conv."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    binary = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
              "relax.minimum", "relax.power"}

    def rank(e):
        shape = getattr(e.ty, "shape", None)
        return None if shape is None else len(shape)

    @mutator
    class _Scalars(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) not in binary or len(call.args) != 2:
                return call
            args = list(call.args)
            changed = False
            for i in (0, 1):
                c = _resolve(args[i], self.lookup_binding)
                other = rank(args[1 - i])
                if not isinstance(c, tvm.ir.expr.Constant) or other is None:
                    continue
                value = (c.value if hasattr(c, "value") else c.data).numpy()
                if value.ndim == 0 or value.size != 1 or value.ndim > other:
                    continue
                args[i] = relax.const(value.reshape(()), str(value.dtype))
                changed = True
            if not changed:
                return call
            return self.builder_.normalize(relax.Call(call.op, args, call.attrs, call.ty_args))

    @tvm.ir.transform.module_pass(opt_level=0, name="PrunecScalarOperands")
    def run(mod, ctx):
        return rewrite_functions(mod, _Scalars(mod))

    return run


def clip_to_relax():
    """A pass that turns the importer's TIR calls for Clip (call_tir of topi maximum/minimum
    with a scalar constant bound) into relax.maximum / relax.minimum, which ConvertLayout can
    carry through. Run after fold.fold_relax_constants (the importer guards the bounds against
    NaN with expressions that fold to constants)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _ClipToRelax(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.call_tir":
                return call
            base = re.sub(r"\d+$", "", call.args[0].name_hint)
            args = call.args[1]
            if base not in ("maximum", "minimum") or not isinstance(args, relax.Tuple) \
                    or len(args.fields) != 2:
                return call
            x, bound = args.fields
            bound = _resolve(bound, self.lookup_binding)
            if not isinstance(bound, tvm.ir.expr.Constant) or len(bound.ty.shape) != 0 \
                    or bound.ty.dtype != call.ty.dtype:
                return call
            op = relax.op.maximum if base == "maximum" else relax.op.minimum
            return self.builder_.normalize(op(x, bound))

    @tvm.ir.transform.module_pass(opt_level=0, name="PrunecClipToRelax")
    def run(mod, ctx):
        return rewrite_functions(mod, _ClipToRelax(mod))

    return run


def blocked_resizes():
    """A pass: `layout_transform(resize2d(layout_transform(x)))` where x and the result are
    NCHW{b}c with the same b and the NCHW resize has no other reader becomes one resize2d on
    NCHW{b}c (topi's resize indexes blocked layouts; ConvertLayout leaves Resize in NCHW and
    changes the layout on both sides). PP-OCRv4's detector FPN: three upsamplings of 96
    channels, 96 x 120 x 120 made NCHW16c again in 1.3 ms."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    def call_of(e, lookup, op):
        e = _resolve(e, lookup)
        return e if isinstance(e, relax.Call) and getattr(e.op, "name", "") == op else None

    def shape(e):
        try:
            return [int(d) for d in e.ty.shape]
        except Exception:  # symbolic
            return None

    @mutator
    class _Resizes(PyExprMutator):
        def __init__(self, mod, uses):
            super().__init__(mod)
            self.uses = uses

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", "") != "relax.layout_transform":
                return call
            rz = call_of(call.args[0], self.lookup_binding, "relax.image.resize2d")
            if rz is None or rz.attrs.layout != "NCHW" or self.uses.get(call.args[0], 0) != 1:
                return call
            src = call_of(rz.args[0], self.lookup_binding, "relax.layout_transform")
            if src is None:
                return call
            x = src.args[0]
            xs, out = shape(x), shape(call)
            if not xs or not out or len(xs) != 5 or len(out) != 5 or xs[4] != out[4] \
                    or xs[1] != out[1]:
                return call
            a = rz.attrs
            return self.builder_.normalize(relax.op.image.resize2d(
                x, rz.args[1], [float(v) for v in a.roi], f"NCHW{xs[4]}c", a.method,
                a.coordinate_transformation_mode, a.rounding_method, float(a.cubic_alpha),
                int(a.cubic_exclude), float(a.extrapolation_value), a.out_dtype or None))

    def uses_of(func):
        counts = {}

        def visit(e):
            if isinstance(e, relax.Call):
                for arg in e.args:
                    for v in arg.fields if isinstance(arg, relax.Tuple) else (arg,):
                        if isinstance(v, relax.Var):
                            counts[v] = counts.get(v, 0) + 1
        relax.analysis.post_order_visit(func, visit)
        return counts

    @tvm.ir.transform.module_pass(opt_level=0, name="PrunecBlockedResizes")
    def run(mod, ctx):
        uses = {}
        for _, f in mod.functions.items():
            if isinstance(f, relax.Function):
                uses.update(uses_of(f))
        return rewrite_functions(mod, _Resizes(mod, uses))

    return run


def blocked_layout_pass(b: int):
    """Module pass: for graphs with depthwise convs, Clip as Relax ops and conv2d layouts by
    conv_layouts (ConvertLayout inserts the layout changes the choices imply); other graphs are
    returned unchanged."""
    import tvm
    from tvm import relax

    @tvm.ir.transform.module_pass(opt_level=0, name="PrunecBlockedLayout")
    def run(mod, ctx):
        if not has_depthwise(mod):
            return mod
        orig = mod
        try:
            mod = tvm.transform.Sequential([fold_relax_constants(), clip_to_relax(),
                                            scalar_operands()])(mod)
            # the weights' layout changes stay calls here: after LegalizeOps,
            # fold.fold_weight_transforms runs them all from one library (Relax's FoldConstant
            # here compiled one library per weight: 6.5 s of PP-OCRv4's recognizer)
            return tvm.transform.Sequential([
                relax.transform.ConvertLayout({}, _layout_cb(b, unblocked_outputs(mod, b))),
                relax.transform.Normalize(), blocked_resizes()])(mod)
        except Exception as e:  # an op ConvertLayout cannot carry: compile the graph NCHW
            _log.warning("channel-blocked layout not applied (%s); activations stay NCHW",
                         str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
            return orig

    return run

"""exp, sigmoid and softmax as vectorizable float32 computes (a polynomial exp instead of libm)."""

from __future__ import annotations

from .common import KEEP_SUFFIX, is_f32


# tir.exp lowers to a scalar libm call per element (LLVM has no vector exp here), which made
# SiLU-heavy graphs (YOLO: x * sigmoid(x) after every conv) spend most of their time in expf.
# This is the Cephes-style polynomial of topi.fast_exp (rel. error ~1e-7), written as one
# expression so that it stays a single elementwise block that fuses into the conv epilogue.
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
          1.6666665459e-1, 5.0000001201e-1)


def fast_exp_expr(x):
    from tvm import te, tirx

    f = lambda v: tirx.const(v, "float32")  # noqa: E731
    x = te.max(te.min(x, f(88.3762626647950)), f(-88.3762626647949))
    n = te.floor(x * f(1.44269504088896341) + f(0.5))
    r = x - n * f(0.693359375) - n * f(-2.12194440e-4)
    y = f(_EXP_P[0])
    for c in _EXP_P[1:]:
        y = y * r + f(c)
    y = y * r * r + r + f(1.0)
    two_n = tirx.reinterpret("float32", tirx.shift_left(
        tirx.Cast("int32", n) + tirx.const(127, "int32"), tirx.const(23, "int32")))
    return two_n * y


def legalize_unary(bb, call, expr, topi_op, name: str):
    """A float32 call of one input as one elementwise compute of expr(x) (so it fuses into the
    producer's epilogue); other dtypes keep TVM's default lowering (topi_op)."""
    from tvm import te
    from tvm.relax.transform.legalize_ops.common import _call_topi_without_attr

    if not is_f32(call):
        return _call_topi_without_attr(topi_op)(bb, call)
    return bb.call_te(lambda x: te.compute(x.shape, lambda *i: expr(x(*i)), name=f"prunec_{name}"),
                      call.args[0], primfunc_name_hint=name)


def legalize_sigmoid(bb, call):
    from tvm import tirx, topi

    one = tirx.const(1.0, "float32")
    return legalize_unary(bb, call, lambda v: one / (one + fast_exp_expr(-v)), topi.sigmoid, "sigmoid")


def legalize_exp(bb, call):
    from tvm import topi

    return legalize_unary(bb, call, fast_exp_expr, topi.exp, "exp")


def legalize_softmax(bb, call):
    from tvm import te, tirx, topi

    x = call.args[0]
    if not is_f32(call):
        return bb.call_te(topi.nn.softmax, x, call.attrs.axis)

    def softmax(x, axis):
        nd = len(x.shape)
        axis = axis % nd
        k = te.reduce_axis((0, x.shape[axis]), "k")

        red = tuple(x.shape[:axis]) + tuple(x.shape[axis + 1:])

        def full(j):  # reduced index -> index with the axis slot
            return tuple(j[:axis]), tuple(j[axis:])

        def rest(i):  # the reduced index of a full one
            return tuple(i[:axis]) + tuple(i[axis + 1:])

        m = te.compute(red, lambda *j: te.max(
            x(*(full(j)[0] + (k,) + full(j)[1])), axis=k), name="prunec_softmax_max")
        # exp once (kept as its own block, see KEEP_SUFFIX), then a sum and one reciprocal per
        # reduced row: computing exp twice and dividing every element took 2x the time (YOLOv8n's
        # DFL softmax, 16 bins x 8400 anchors)
        e = te.compute(x.shape, lambda *i: fast_exp_expr(x(*i) - m(*rest(i))),
                       name="prunec_softmax_exp" + KEEP_SUFFIX)
        k2 = te.reduce_axis((0, x.shape[axis]), "k2")
        s = te.compute(red, lambda *j: te.sum(e(*(full(j)[0] + (k2,) + full(j)[1])), axis=k2),
                       name="prunec_softmax_sum")
        r = te.compute(red, lambda *j: tirx.const(1.0, "float32") / s(*j),
                       name="prunec_softmax_rcp" + KEEP_SUFFIX)
        return te.compute(x.shape, lambda *i: e(*i) * r(*rest(i)), name="prunec_softmax")

    return bb.call_te(softmax, x, int(call.attrs.axis), primfunc_name_hint="softmax")

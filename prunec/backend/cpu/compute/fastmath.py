"""exp, sigmoid and softmax as vectorizable float32 computes (a polynomial exp instead of libm)."""

from __future__ import annotations

from .common import KEEP_SUFFIX, is_f32


# tir.exp lowers to a scalar libm call per element (LLVM has no vector exp here), which made
# SiLU-heavy graphs (YOLO: x * sigmoid(x) after every conv) spend most of their time in expf.
# exp(x) = 2^n * 2^r, n = round(x log2 e), r = x log2 e - n in [-1/2, 1/2]: 2^r by a degree-5
# polynomial (minimax in relative error with p(0) = 1 exactly: 9e-8, 1.9e-7 evaluated in float32),
# log2 e split in two floats so that r keeps its accuracy at large |x| (one float's rounding of it
# costs 1e-6 at |x| = 80). Written as one expression, so that it stays a single elementwise block
# that fuses into the conv epilogue. 15 vector operations where topi.fast_exp's Cephes form
# (x - n ln 2 in two steps, a degree-7 polynomial) took 18: 3.7 -> 2.6 ns per 16 floats, SiLU
# 5.3 -> 4.1 (1 thread, Zen 4). Below -88.37 the result is 0 and above 88.37 inf, as before.
_EXP2_P = (1.0, 0.6931470036506653, 0.24022242426872253, 0.05550733581185341,
           0.009671512991189957, 0.001326472731307149)
_LOG2E_HI = 1.4426950216293335       # float32(log2 e)
_LOG2E_LO = 1.925963033500011e-08    # log2 e - _LOG2E_HI


def fast_exp_expr(x):
    from tvm import te, tirx

    f = lambda v: tirx.const(v, "float32")  # noqa: E731
    x = te.max(te.min(x, f(88.3762626647950)), f(-88.3762626647949))
    n = te.floor(x * f(_LOG2E_HI) + f(0.5))
    r = (x * f(_LOG2E_HI) - n) + x * f(_LOG2E_LO)
    y = f(_EXP2_P[-1])
    for c in reversed(_EXP2_P[:-1]):
        y = y * r + f(c)
    # 2^n from its exponent bits: n = -127 gives 0, n = 128 inf
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

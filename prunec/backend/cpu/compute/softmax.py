"""Softmax over the last axis (attention scores) as a row kernel: max, exp, sum and scale of one
row each done in chunks of V contiguous elements (V divides the row), so that every pass is
vector loads and lane-wise arithmetic with one horizontal step per row; the schedule
(schedule/softmax.py) runs all passes of a row before the next row, the row in L1.

fastmath.legalize_softmax's blocks, scheduled one by one by the generic rule, reduced a row of
196 scores by gathering across 28 rows per vector and went over the scores four times: a ViT's
3 x 196 x 196 softmax took 150 us against ONNX Runtime's 45."""

from __future__ import annotations

from .common import KEEP_SUFFIX, static_shape
from .fastmath import fast_exp_expr, legalize_softmax

ROW_SOFTMAX = "prunec_rsoftmax"
PART_MAX = "prunec_rsoftmax_pmax"
ROW_MAX = "prunec_rsoftmax_max"
ROW_EXP = "prunec_rsoftmax_exp" + KEEP_SUFFIX
PART_SUM = "prunec_rsoftmax_psum"
ROW_SUM = "prunec_rsoftmax_sum"
ROW_RCP = "prunec_rsoftmax_rcp" + KEEP_SUFFIX

MAX_CHUNK = 16  # vectors: a row longer than this with no divisor in [lanes, 4 lanes] is not ours


def chunk(k: int, lanes: int) -> int:
    """Elements per chunk of a row of k: the largest multiple of lanes up to 4 lanes dividing k
    (independent accumulators), else the largest divisor in [lanes, 4 lanes] (196 -> 49), else
    the whole row when it is at most MAX_CHUNK vectors (197 tokens with a class token: one
    197-lane vector, split by LLVM), else 0."""
    for v in range(4 * lanes, lanes - 1, -lanes):
        if k % v == 0:
            return v
    for v in range(4 * lanes, lanes - 1, -1):
        if k % v == 0:
            return v
    return k if k <= MAX_CHUNK * lanes else 0


def legalize_row_softmax(bb, call, lanes):
    x = call.args[0]
    shape = static_shape(x)
    if shape is None or x.ty.dtype != "float32" or len(shape) < 2 \
            or int(call.attrs.axis) % len(shape) != len(shape) - 1 or not chunk(shape[-1], lanes):
        return legalize_softmax(bb, call)
    return bb.call_te(row_softmax_te, x, chunk(shape[-1], lanes), primfunc_name_hint="softmax")


def row_softmax_te(x, v):
    from tvm import te, tirx

    *rows, k = (int(d) for d in x.shape)
    n = k // v
    c = te.reduce_axis((0, n), "c")
    pmax = te.compute(rows + [v], lambda *i: te.max(x[tuple(i[:-1]) + (c * v + i[-1],)], axis=c),
                      name=PART_MAX)
    lv = te.reduce_axis((0, v), "lv")
    mx = te.compute(rows, lambda *i: te.max(pmax[i + (lv,)], axis=lv), name=ROW_MAX)
    e = te.compute(rows + [k], lambda *i: fast_exp_expr(x(*i) - mx(*i[:-1])), name=ROW_EXP)
    c2 = te.reduce_axis((0, n), "c2")
    psum = te.compute(rows + [v], lambda *i: te.sum(e[tuple(i[:-1]) + (c2 * v + i[-1],)], axis=c2),
                      name=PART_SUM)
    lv2 = te.reduce_axis((0, v), "lv2")
    total = te.compute(rows, lambda *i: te.sum(psum[i + (lv2,)], axis=lv2), name=ROW_SUM)
    rcp = te.compute(rows, lambda *i: tirx.const(1.0, "float32") / total(*i), name=ROW_RCP)
    return te.compute(rows + [k], lambda *i: e(*i) * rcp(*i[:-1]), name=ROW_SOFTMAX)

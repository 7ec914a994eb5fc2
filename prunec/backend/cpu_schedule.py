"""Fast zero-trial CPU schedules (x86 and aarch64).

Untuned TVM lowers conv2d to naive loop nests, 30-80x slower than ONNX Runtime. Here:

* conv2d (groups=1) is legalized to our own TE compute that reads the weights pre-packed as
  [OC/ob, IC, KH, KW, ob] (packed at compile time by FoldConstant). Activations stay NCHW, so
  no layout transforms appear between layers. The schedule keeps an output tile of reg_n
  output columns x ob output channels in registers, vectorizes over the ob channels (weights
  are a contiguous vector, the input is a broadcast scalar), runs the reduction outside the
  tile, writes the tile back with the fused bias/ReLU/residual epilogue, and parallelizes the
  outer (channel block, row) loops. Convs with a short reduction (<= SHORT_REDUCTION input
  channel x tap pairs) and unit stride over wide rows instead keep a tile of a few channels x
  whole vectors of output columns: contiguous input loads, broadcast weights, and a write-back
  without the channel->column transpose that dominated their time.
* 3x3 stride-1 convs where winograd.choose_tile expects a gain are Winograd F(4x4|2x2, 3x3)
  instead (winograd.py): 2.25-4x fewer multiply-adds, which is how a 3x3 conv gets past a
  library already running near the FMA peak.
* depthwise conv2d is vectorized along the output row.
* every other fused function (matmul/dense, pooling, mean, elementwise) gets a generic
  schedule: reduction blocks accumulate a vector tile in registers, spatial loops are
  parallelized and the innermost contiguous loop is vectorized.

Every schedule step is checked; a function we fail to schedule keeps TVM's default (correct,
slower). Tuning records, when present, are applied before and take precedence.
"""

from __future__ import annotations

import logging
import math

from . import winograd

_log = logging.getLogger(__name__)

CONV_BLOCK = "prunec_conv"
# blocks whose name ends so are computed once into a buffer, not inlined into their readers
KEEP_SUFFIX = "_keep"
# convs reducing over at most this many (input channel, tap) pairs vectorize along the output
# row when they can (see _spatial_tile): their time goes into the write-back, not the FMAs. With
# long reductions (YOLO's 3x3 convs) the channel-vectorized tile measured 10-25% faster.
SHORT_REDUCTION = 64
DW_BLOCK = "prunec_dwconv"
DW_EVEN = "prunec_dweven"
TAPS_BLOCK = "prunec_taps" + KEEP_SUFFIX  # one tap's input columns of a stride-2 conv
DWB_BLOCK = "prunec_dwconv_nchwc"
GEMV_ROWS = 4  # weight rows per step of a matrix-vector product (see _schedule_gemv)


# ----------------------------------------------------------------------------- target facts
def vector_lanes(target) -> int:
    """float32 lanes of the widest vector unit the target has."""
    mtriple = str(target.attrs.get("mtriple", ""))
    if "aarch64" in mtriple or "arm" in mtriple:
        return 4  # NEON 128-bit (SVE is vector-length agnostic: treat as NEON)
    try:
        import tvm

        feats = set(tvm.target.codegen.llvm_get_cpu_features(target))
    except Exception:
        feats = set()
    mattr = [str(a) for a in target.attrs.get("mattr", [])]
    feats |= {a[1:] for a in mattr if a.startswith("+")}
    feats -= {a[1:] for a in mattr if a.startswith("-")}
    if "avx512f" in feats:
        return 16
    if "avx2" in feats or "avx" in feats:
        return 8
    return 4


def _channel_block(oc: int, lanes: int) -> int:
    # two vectors per output column on 128-bit NEON and AVX-512 (32 registers: a 10-column x
    # 2-vector tile needs 2 weight loads + 10 broadcasts per 20 FMAs, 5-25% faster than
    # 1 vector x 20 columns on YOLOv8n's 3x3 and MobileNetV2's 7x7/14x14 1x1 convs); one on AVX2
    wide = (2 * lanes,) if lanes >= 16 else ()
    for ob in wide + (max(lanes, 8), lanes, lanes // 2, 4, 2):
        if ob >= 2 and oc % ob == 0:
            return ob
    return 1


def conv_out_hw(h: int, w: int, kh: int, kw: int, strides, pads, dil) -> tuple[int, int]:
    """Output (height, width) of a conv/pool window; pads = (top, left, bottom, right)."""
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dil, pads
    return ((h + pt + pb - (kh - 1) * dh - 1) // sh + 1,
            (w + pl + pr - (kw - 1) * dw - 1) // sw + 1)


def _row_tile(ow: int, cap: int) -> int:
    """Largest divisor of ow not above cap (output columns kept in registers)."""
    for r in range(min(cap, ow), 0, -1):
        if ow % r == 0:
            return r
    return 1


# ------------------------------------------------------------------------------ legalization
def layout_passes(target, winograd: bool = True):
    """Relax passes run before LegalizeOps: our conv2d legalization (3x3 stride-1 convs as
    Winograd where winograd.choose_tile expects a gain, unless winograd is False), and split/
    concat tagged for zero_copy."""
    from tvm import relax

    lanes = vector_lanes(target)

    def conv2d(bb, call):
        return _legalize_conv2d(bb, call, lanes, winograd)

    from . import zero_copy

    return [relax.transform.LegalizeOps(customize_legalize_map={
        **zero_copy.legalize_map(),
        "relax.nn.conv2d": conv2d, "relax.sigmoid": _legalize_sigmoid,
        "relax.exp": _legalize_exp, "relax.nn.softmax": _legalize_softmax,
        "relax.nn.max_pool2d": lambda bb, call: _legalize_max_pool2d(bb, call, lanes)})]


def _legalize_max_pool2d(bb, call, lanes):
    """NCHW float32 max pools (YOLO's SPPF 5x5, ResNet's 3x3/2 stem pool) take the depthwise
    path: TVM's pool tested the padding bounds per lane inside the window loop (~4 GF/s)."""
    import tvm

    a = call.attrs
    shape = _static_shape(call.args[0])
    ok = (shape is not None and len(shape) == 4 and a.layout == "NCHW" and a.out_layout == "NCHW"
          and not a.ceil_mode and all(int(d) == 1 for d in a.dilation) and _f32(call))
    if not ok:
        return tvm.ir.Op.get("relax.nn.max_pool2d").get_attr("FLegalize")(bb, call)
    pad = [int(p) for p in a.padding]
    return bb.call_te(_dwconv_te, call.args[0], None, tuple(int(x) for x in a.strides), tuple(pad),
                      (1, 1), lanes, tuple(int(k) for k in a.pool_size), primfunc_name_hint="prunec_maxpool")


# ------------------------------------------------------------------- vectorizable exp/sigmoid
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


def _f32(call) -> bool:
    try:
        return call.args[0].ty.dtype == "float32"
    except Exception:
        return False


def _legalize_sigmoid(bb, call):
    from tvm import te, tirx
    from tvm.relax.transform.legalize_ops.common import _call_topi_without_attr
    from tvm import topi

    if not _f32(call):
        return _call_topi_without_attr(topi.sigmoid)(bb, call)
    one = tirx.const(1.0, "float32")
    return bb.call_te(lambda x: te.compute(
        x.shape, lambda *i: one / (one + fast_exp_expr(-x(*i))), name="prunec_sigmoid"),
        call.args[0], primfunc_name_hint="sigmoid")


def _legalize_exp(bb, call):
    from tvm import te, topi
    from tvm.relax.transform.legalize_ops.common import _call_topi_without_attr

    if not _f32(call):
        return _call_topi_without_attr(topi.exp)(bb, call)
    return bb.call_te(lambda x: te.compute(x.shape, lambda *i: fast_exp_expr(x(*i)),
                                           name="prunec_exp"), call.args[0],
                      primfunc_name_hint="exp")


def _legalize_softmax(bb, call):
    from tvm import te, tirx, topi

    x = call.args[0]
    if not _f32(call):
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


def _legalize_conv2d(bb, call, lanes, use_winograd=True):
    from tvm import relax, te, topi

    a = call.attrs
    data, weight = call.args
    dshape, wshape = _static_shape(data), _static_shape(weight)
    if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW"):
        out = _legalize_blocked_conv2d(bb, call, lanes)
        if out is not None:
            return out
    ok = (dshape is not None and wshape is not None and a.data_layout == "NCHW"
          and a.kernel_layout == "OIHW" and a.out_layout == "NCHW"
          and a.out_dtype in (None, "", "float32") and data.ty.dtype == "float32"
          and weight.ty.dtype == "float32" and len(dshape) == 4)
    if not ok:
        _log.debug("conv2d kept default: %s %s %s", dshape, wshape, a.data_layout)
        return _default_conv2d(bb, call)
    n, c, h, w = dshape
    oc, icg, kh, kw = wshape
    groups = int(a.groups)
    sh, sw = (int(s) for s in a.strides)
    dh, dw = (int(s) for s in a.dilation)
    pt, pl, pb, pr = (int(p) for p in a.padding)
    if groups == c and icg == 1 and oc == c:
        return bb.call_te(_dwconv_te, data, weight, (sh, sw), (pt, pl, pb, pr), (dh, dw),
                          lanes, primfunc_name_hint="prunec_dwconv")
    if groups != 1:
        return _default_conv2d(bb, call)
    if (kh, kw, sh, sw, dh, dw) == (3, 3, 1, 1, 1, 1) and use_winograd:
        out = winograd.legalize(bb, data, weight, (pt, pl, pb, pr), lanes)
        if out is not None:
            return out
    oh, ow = conv_out_hw(h, w, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw))
    rows = 1
    # stride-2 stems (short reductions) read each tap's columns by shuffles (_phase_conv_te);
    # a de-interleaved copy of the whole input instead, one more pass over it, had made
    # YOLOv8n 2-3% slower and MobileNetV2's stem 20% (long reductions: the channel tile wins)
    spatial = (_spatial_tile(oc, ow, sw, lanes) if c * kh * kw <= SHORT_REDUCTION else None)
    phases = False
    if spatial is None and sw == 2 and dw == 1 and c * kh * kw <= SHORT_REDUCTION:
        spatial = _phase_tile(oc, ow, lanes)
        phases = spatial is not None
    if spatial is None and (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0):
        block = _row_block(oc, oh, ow, lanes)
        if block:
            rows, mr = block
            spatial = (ow, mr)
    ob = spatial[1] if spatial else _channel_block(oc, lanes)
    if ob == 1:
        return _default_conv2d(bb, call)
    wp = bb.emit_te(lambda wt: te.compute(
        (oc // ob, c, kh, kw, ob), lambda o, i, y, x, b: wt[o * ob + b, i, y, x],
        name="prunec_wpack"), weight, primfunc_name_hint="prunec_wpack")
    del topi
    return bb.call_te(_conv_te, data, wp, (sh, sw), (pt, pl, pb, pr), (dh, dw),
                      spatial[0] if spatial else 0, rows, 0, 0, phases,
                      primfunc_name_hint="prunec_conv2d")


def _block_of(layout: str, letter: str) -> int:
    """b of NCHW{b}c / OIHW{b}o (0 for the plain layouts, -1 for anything else)."""
    import re

    plain = {"c": "NCHW", "o": "OIHW"}[letter]
    if layout == plain:
        return 0
    m = re.fullmatch(plain + r"(\d+)" + letter, layout)
    return int(m.group(1)) if m else -1


def _legalize_blocked_conv2d(bb, call, lanes):
    """conv2d with channel-blocked activations (layout.py chose them): data NCHW or NCHW{b}c,
    kernel OIHW or OIHW{b}o, output NCHW or NCHW{b}c. Depthwise convs (blocked on both sides)
    get _dwconv_blocked_te; dense convs our packed-weight conv, reading the input through its
    layout and writing the tile through the output's (no spatial tiles: along a blocked row,
    pixels are b floats apart). None (TVM's default) for anything else."""
    from tvm import te

    a = call.attrs
    data, weight = call.args
    dshape, wshape = _static_shape(data), _static_shape(weight)
    bd, bk, bo = (_block_of(a.data_layout, "c"), _block_of(a.kernel_layout, "o"),
                  _block_of(a.out_layout, "c"))
    if (dshape is None or wshape is None or min(bd, bk, bo) < 0
            or a.out_dtype not in (None, "", "float32") or data.ty.dtype != "float32"
            or weight.ty.dtype != "float32"):
        return None
    c = dshape[1] * bd if bd else dshape[1]
    oc = wshape[0] * bk if bk else wshape[0]
    icg, kh, kw = wshape[1:4]
    groups = int(a.groups)
    strides = tuple(int(x) for x in a.strides)
    pads = tuple(int(x) for x in a.padding)
    dil = tuple(int(x) for x in a.dilation)
    if groups == c == oc and icg == 1 and bd and bd == bk and bo in (bd, 0):
        # blocked output, or NCHW where the next conv reads NCHW (layout.unblocked_outputs)
        return bb.call_te(_dwconv_blocked_te, data, weight, strides, pads, dil, bo == 0,
                          primfunc_name_hint="prunec_dwconv_nchwc")
    if groups != 1 or icg != c or bk != bo:
        return None
    ob = _channel_block(oc, lanes)
    if ob == 1 or (bo and ob % bo and bo % ob):
        return None

    def w_at(wt, o, i, y, x):  # the weight as OIHW, whichever layout it came in
        return wt[o // bk, i, y, x, o % bk] if bk else wt[o, i, y, x]
    wp = bb.emit_te(lambda wt: te.compute(
        (oc // ob, c, kh, kw, ob), lambda o, i, y, x, b: w_at(wt, o * ob + b, i, y, x),
        name="prunec_wpack"), weight, primfunc_name_hint="prunec_wpack")
    return bb.call_te(_conv_te, data, wp, strides, pads, dil, 0, 1, bd, bo,
                      primfunc_name_hint="prunec_conv2d")


def _dwconv_blocked_te(data, weight, strides, pads, dil, nchw_out=False):
    """Depthwise conv on NCHW{b}c: each tap is one contiguous vector of b channels at any
    stride. Padding by a guarded load (if_then_else evaluates only the taken branch: a Select
    would read outside the tensor at the borders, the simplifier drops clamps under its
    condition), so no padded copy of the input is made. nchw_out: the output as NCHW (same
    values; the schedule transposes the register tile as it writes it back)."""
    from tvm import te, tirx

    n, cb, h, w, b = (int(x) for x in data.shape)
    kh, kw = (int(x) for x in weight.shape[2:4])
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dil, pads
    oh, ow = conv_out_hw(h, w, kh, kw, strides, pads, dil)
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    zero = tirx.const(0.0, "float32")

    def tap(nn, q, y, x, r):
        iy, ix = y * sh + ry * dh - pt, x * sw + rx * dw - pl
        inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        return tirx.if_then_else(inside, data[nn, q, iy, ix, r], zero)
    if nchw_out:
        return te.compute((n, cb * b, oh, ow), lambda nn, ch, y, x: te.sum(
            tap(nn, ch // b, y, x, ch % b) * weight[ch // b, 0, ry, rx, ch % b], axis=[ry, rx]),
            name=DWB_BLOCK, attrs={"prunec_block": b})
    return te.compute((n, cb, oh, ow, b), lambda nn, q, y, x, r: te.sum(
        tap(nn, q, y, x, r) * weight[q, 0, ry, rx, r], axis=[ry, rx]), name=DWB_BLOCK)


def _row_block(oc: int, oh: int, ow: int, lanes: int):
    """(rows, channels) of the register tile of a pointwise (1x1, stride 1, unpadded) conv over
    rows that are not whole vectors: a few whole rows are one contiguous run in NCHW for the input
    and the output alike, so 2 rows of 56 are 7 full vectors where one row is 3.5 (MobileNet's
    24-channel 1x1s at 56x56 ran at 45-70 GF/s with channel-vectorized tiles). None when no
    divisor of the height makes whole vectors in a few registers."""
    if ow % lanes == 0:
        return None
    rows = next((r for r in range(2, oh + 1) if oh % r == 0 and r * ow % lanes == 0), 0)
    nvec = rows * ow // lanes if rows else 0
    if not rows or nvec > 8:
        return None
    mr = next(m for m in range(max(1, 24 // nvec), 0, -1) if oc % m == 0)
    return (rows, mr) if mr >= 2 else None


def _spatial_tile(oc: int, ow: int, sw: int, lanes: int):
    """(columns, channels) of the register tile when the conv vectorizes along output columns,
    or None to vectorize along output channels.

    Wide rows with unit stride: the input row segment is a contiguous vector load, each weight a
    broadcast, and the accumulator tile is already in NCHW order, so the write-back is plain
    vector stores. The channel-vectorized tile instead needs a transposing write-back (a
    strided gather per output vector), which dominates when the reduction is short (MobileNet's
    1x1 convs over 16-32 channels at 112x112: ~35 GF/s). Channel counts need not be multiples
    of the vector width here (pruned 24, 40, 56 ...)."""
    if sw != 1 or ow < 2 * lanes:
        return None
    # whole vectors only: a <56 x float> row tile compiled to ~3 GF/s (LLVM spills it)
    cols = max((d for d in range(lanes, 4 * lanes + 1, lanes) if ow % d == 0), default=0)
    if not cols:
        return None
    nvec = cols // lanes
    cap = max(1, min(24 // nvec, 16))
    mr = next(m for m in range(cap, 0, -1) if oc % m == 0)
    if mr < 4 and cap >= 4:
        return None  # odd channel counts: too few rows to amortize the vector loads
    return cols, mr


def _phase_tile(oc: int, ow: int, lanes: int):
    """(columns, channels) of a stride-2 conv's spatial tile (see _phase_conv_te), or None.
    One vector of columns: each tap's vector costs a shuffle, so it feeds as many channels as
    the registers hold (16 accumulators on AVX-512 and NEON, 12 of AVX2's 16 registers)."""
    if ow % lanes or ow < 2 * lanes:
        return None
    cap = 12 if lanes == 8 else 16
    mr = next(m for m in range(cap, 0, -1) if oc % m == 0)
    return (lanes, mr) if mr >= 4 else None


def _static_shape(expr):
    try:
        return [int(x) for x in expr.ty.shape]
    except Exception:  # symbolic or unknown
        return None


def _default_conv2d(bb, call):
    from tvm import topi

    a = call.attrs
    return bb.call_te(topi.nn.conv, inp=call.args[0], filt=call.args[1], stride=a.strides,
                      padding=a.padding, dilation=a.dilation, groups=a.groups,
                      data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                      out_dtype=a.out_dtype or None,
                      primfunc_name_hint="conv2d")


def _pad(data, pads, value=0.0, name="prunec_pad"):
    from tvm import topi

    pt, pl, pb, pr = pads
    if not any(pads):
        return data
    tail = [0] * (len(data.shape) - 4)  # NCHW{b}c: the channel-in-block axis is not padded
    return topi.nn.pad(data, [0, 0, pt, pl] + tail, [0, 0, pb, pr] + tail, pad_value=value,
                       name=name)


def _conv_te(data, wp, strides, pads, dil, spatial_cols=0, rows=1, in_block=0, out_block=0,
             phases=False):
    """Direct conv over the packed weight. in_block/out_block: the input/output is NCHW{b}c
    with that b (0: NCHW); the conv itself is computed in NCHW order either way and a blocked
    output is one more (inlined) stage. phases (column stride 2, spatial tiles): see
    _phase_conv_te."""
    from tvm import te

    if phases:
        return _phase_conv_te(data, wp, strides, pads, spatial_cols)

    if in_block:
        n, cbk, h, w, _ = (int(x) for x in data.shape)
        c = cbk * in_block
    else:
        n, c, h, w = (int(x) for x in data.shape)
    ocb, _, kh, kw, ob = (int(x) for x in wp.shape)
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dil, pads
    oh, ow = conv_out_hw(h, w, kh, kw, strides, pads, dil)
    ic = te.reduce_axis((0, c), "ic")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    x = _pad(data, pads)

    def tap(b, y, xo):
        iy, ix = y * sh + ry * dh, xo * sw + rx * dw
        if in_block:
            return x[b, ic // in_block, iy, ix, ic % in_block]
        return x[b, ic, iy, ix]
    attrs = {"prunec_cols": spatial_cols, "prunec_rows": rows} if spatial_cols else {}
    if out_block:
        attrs["prunec_out_block"] = out_block
    conv = te.compute(
        (n, ocb * ob, oh, ow),
        lambda b, o, y, xo: te.sum(tap(b, y, xo) * wp[o // ob, ic, ry, rx, o % ob],
                                   axis=[ic, ry, rx]),
        name=CONV_BLOCK, attrs=attrs or None)
    if not out_block:
        return conv
    return te.compute((n, ocb * ob // out_block, oh, ow, out_block),
                      lambda b, q, y, xo, r: conv[b, q * out_block + r, y, xo],
                      name="prunec_blocked_out")


def _phase_conv_te(data, wp, strides, pads, cols):
    """Stride-2 conv (NCHW, no dilation) vectorized along output columns.

    The padded input is stored with its columns as (x // 2, x % 2) pairs, and every tap reads
    its cols input columns through a stage of its own (TAPS_BLOCK): the tap's even or odd
    columns, which the schedule loads as two contiguous vectors and one shuffle per output
    vector (even_lanes_intrin), so the tile is a stride-1 spatial tile again: broadcast weights,
    and a write-back of whole row vectors instead of the channel -> column transpose of the
    channel-vectorized tile. YOLOv8n's 3 -> 16 stem at 320 with its SiLU, 2 threads, on a
    Xeon: 259 -> 190 us (band-by-band padding included; ONNX Runtime 262)."""
    from tvm import te

    n, c, h, w = (int(x) for x in data.shape)
    ocb, _, kh, kw, ob = (int(x) for x in wp.shape)
    (sh, _), (pt, pl, pb, pr) = strides, pads
    oh, ow = conv_out_hw(h, w, kh, kw, strides, pads, (1, 1))
    # the last tap's last vector pair reads one column past its odd lanes: room for it; rows
    # in whole 16-float vectors, so the padding pass is plain vector stores
    wq = -(-max(-(-(w + pl + pr) // 2), ow + kw // 2) // 8) * 8
    # NCHW here; the schedule views its rows as (x // 2, x % 2) pairs (same memory)
    xp = _pad(data, (pt, pl, pb, 2 * wq - w - pl))
    taps = te.compute((n, c, kh, kw, oh, ow), lambda b, i, ry, rx, y, x:
                      xp[b, i, y * sh + ry, x * 2 + rx], name=TAPS_BLOCK)
    ic = te.reduce_axis((0, c), "ic")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, ocb * ob, oh, ow),
        lambda b, o, y, x: te.sum(taps[b, ic, ry, rx, y, x] * wp[o // ob, ic, ry, rx, o % ob],
                                  axis=[ic, ry, rx]),
        name=CONV_BLOCK, attrs={"prunec_cols": cols, "prunec_rows": 1})


def dw_row_vectors(ow: int, lanes: int) -> tuple[int, int, int]:
    """(vector width, vectors per register tile, padded row width) of a depthwise output row.

    Rows are computed padded up to whole vectors: LLVM legalizes a <28 x float> or <56 x float>
    into mixed zmm/ymm/xmm pieces and rebuilds every broadcast weight lane by lane, which held
    MobileNet's depthwise convs at 8-30 GF/s. A padded row costs at most one extra vector."""
    v = lanes if ow > lanes // 2 else max(4, lanes // 2)
    nvec = -(-ow // v)
    if nvec <= 4:
        tile = nvec
    else:  # at least 3 independent accumulators per tile hide the FMA latency of the tap chain
        tile = min((4, 3), key=lambda k: (-(-nvec // k) * k, -k))
        nvec = -(-nvec // tile) * tile
    return v, tile, nvec * v


def _dwconv_te(data, weight, strides, pads, dil, lanes=8, pool=None):
    """Depthwise conv, or with pool=(kh, kw) and no weight a max pool over the same windows
    (same schedule: per-plane padding, rows in whole vectors)."""
    from tvm import te, tirx

    n, c, h, w = (int(x) for x in data.shape)
    kh, kw = pool if pool else (int(x) for x in weight.shape[2:])
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dil, pads
    oh, ow = conv_out_hw(h, w, kh, kw, strides, pads, dil)
    # strided convs compute every column of the rows they need (contiguous loads; 2x the FMAs,
    # which are cheap here) and the epilogue keeps every sw-th: de-interleaving the input into
    # stride phases instead cost a strided gather per element and ran at ~10 GF/s
    ow1 = (ow - 1) * sw + 1
    _, _, owp = dw_row_vectors(ow1, lanes)
    # zero columns on the right so the padded row's extra outputs read inside the plane
    pw = max(w + pl + pr, owp + (kw - 1) * dw)
    pw = -(-pw // lanes) * lanes  # whole vectors per padded row: aligned rows, one fill loop
    lowest = tirx.min_value("float32")
    x = _pad(data, (pt, pl, pb, pw - w - pl), lowest if pool else 0.0)
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    attrs = {"prunec_stride": sw, "prunec_ow": ow1}

    def window(b, ch, y, col):
        v = x[b, ch, y * sh + ry * dh, col + rx * dw]
        if pool:
            return te.max(v, axis=[ry, rx])
        return te.sum(v * weight[ch, 0, ry, rx], axis=[ry, rx])
    if sw > 1 and owp % sw == 0:
        # columns as (x // sw, x % sw): the epilogue reads [xo, 0], a unit-stride pattern that
        # the schedule can place per row (reverse_compute_at cannot invert xo * sw)
        full = te.compute((n, c, oh, owp // sw, sw), lambda b, ch, y, xq, xr: window(b, ch, y, xq * sw + xr),
                          name=DW_BLOCK, attrs=attrs)
        if sw == 2:
            # every row's even columns gathered as a block of its own, which the schedule turns
            # into one two-vector shuffle per output vector (see even_lanes_intrin)
            even = te.compute((n, c, oh, owp // 2), lambda b, ch, y, xq: full[b, ch, y, xq, 0],
                              name=DW_EVEN)
            return te.compute((n, c, oh, ow), lambda b, ch, y, xo: even[b, ch, y, xo],
                              name="prunec_dwslice")
        return te.compute((n, c, oh, ow), lambda b, ch, y, xo: full[b, ch, y, xo, 0],
                          name="prunec_dwslice")
    full = te.compute((n, c, oh, owp), lambda b, ch, y, xo: window(b, ch, y, xo), name=DW_BLOCK, attrs=attrs)
    if owp == ow:
        return full
    return te.compute((n, c, oh, ow), lambda b, ch, y, xo: full[b, ch, y, xo * sw], name="prunec_dwslice")


# -------------------------------------------------------------------------------- scheduling
def schedule_module(mod, target):
    """Schedules every unscheduled PrimFunc of mod in place of TVM's naive default."""
    import tvm
    from tvm import s_tir, tirx

    lanes = vector_lanes(target)
    threads = int(target.attrs.get("num-cores", 1) or 1)
    out = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        if func.attrs is not None and func.attrs.get("tirx.is_scheduled", False):
            continue
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            _schedule_func(sch, lanes, threads)
            new = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        except Exception as e:  # keep the default lowering for this function
            if "winograd" in gv.name_hint:  # its naive lowering is very slow: say so
                _log.warning("the Winograd schedule failed for %s (%s); it runs unscheduled, "
                             "--no-winograd compiles it as a direct conv", gv.name_hint,
                             str(e).strip().splitlines()[-1] if str(e).strip() else e)
            else:
                _log.debug("fast schedule failed for %s: %s", gv.name_hint, e)
            continue
        out[gv] = new
    for gv, f in out.items():
        mod[gv] = f
    return mod


def _has(sch, name):
    try:
        sch.get_sblock(name)
        return True
    except Exception:
        return False


def _blocks(sch):
    """Top-level blocks of the function, in order."""
    from tvm import s_tir  # noqa: F401

    root = sch.get_sblock("root")
    return sch.get_child_blocks(root)


def schedule_task(sch, target):
    """Apply the hand schedule to a traced Schedule of one PrimFunc named main (raises if it
    does not apply)."""
    _schedule_func(sch, vector_lanes(target), int(target.attrs.get("num-cores", 1) or 1))


def _schedule_func(sch, lanes, threads):
    blocks = _blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    if winograd.Y_BLOCK in names:
        done = winograd.schedule(sch, lanes, threads)
        _schedule_rest(sch, lanes, threads, done=done)
    elif CONV_BLOCK in names:
        _schedule_conv(sch, lanes, threads)
    elif DW_BLOCK in names:
        _schedule_dwconv(sch, lanes, threads)
    elif DWB_BLOCK in names:
        _schedule_dwconv_blocked(sch, lanes, threads)
    else:
        _schedule_generic(sch, lanes, threads)


def _is_reduction(sch, block) -> bool:
    return any(iv.iter_type == 2 for iv in sch.get(block).iter_vars)  # 2 = CommReduce


def _inline_injective(sch, keep=()):
    """Inline every spatial block that can be inlined (pads, reshapes, bias broadcasts)."""
    changed = True
    while changed:
        changed = False
        for b in _blocks(sch):
            name = sch.get(b).name_hint
            if name in keep or name.endswith(KEEP_SUFFIX) or _is_reduction(sch, b):
                continue
            try:
                sch.compute_inline(b)
                changed = True
                break
            except Exception:
                continue


def _register_tile(sch, block, loop, layout=None):
    """Accumulate block's output tile in a local buffer (registers once unrolled), optionally
    re-laid out, written back under `loop` with the elementwise epilogue fused into the write."""
    acc = sch.cache_write(block, 0, "local")
    if layout is not None:
        sch.transform_layout(block, ("write", 0), layout)
    sch.reverse_compute_at(acc, loop)
    _epilogue_into(sch, acc)
    return acc


def tile_init_and_writeback(sch, block, loop, acc, vectorize, lanes):
    """Split the zero-init of block's register tile out at reduction `loop`; the init and the
    tile's write-back (acc) each unroll their second-innermost loop and vectorize the innermost
    with vectorize(sch, loop, lanes). Returns the init block."""
    init = sch.decompose_reduction(block, loop)
    for b in (init, acc):
        loops = sch.get_loops(b)
        sch.unroll(loops[-2])
        vectorize(sch, loops[-1], lanes)
    return init


def _epilogue_into(sch, producer_block):
    """Reverse-inline the chain of elementwise consumers into producer_block (which must be a
    spatial block, e.g. a cache-write copy)."""
    while True:
        cons = sch.get_consumers(producer_block)
        if len(cons) != 1:
            return
        try:
            sch.reverse_compute_inline(cons[0])
        except Exception:
            return


def _schedule_conv(sch, lanes, threads):
    # bias, BN, SiLU (x * sigmoid(x): two consumers of x) ... -> one epilogue block
    _inline_injective(sch, keep={"prunec_pad"})
    conv = sch.get_sblock(CONV_BLOCK)
    if _has(sch, "prunec_pad"):
        pad = sch.get_sblock("prunec_pad")
    else:
        pad = None
    n, oc, oh, ow, ic, ry, rx = sch.get_loops(conv)
    ob = _block_factor(sch, conv)
    cols = _ann_int(sch, conv, "prunec_cols")
    if cols:
        _schedule_conv_spatial(sch, conv, pad, ob, cols, lanes, threads)
        return
    ow_ext = int(sch.get(ow).extent)
    # accumulators: reg_n x (ob / lanes) vector registers; leave room for weights + broadcasts
    regs = 24 if lanes >= 16 else 12 if lanes == 8 else 24
    reg_n = _row_tile(ow_ext, max(1, regs // max(1, ob // lanes)))
    oco, oci = sch.split(oc, [None, ob])
    owo, owi = sch.split(ow, [None, reg_n])
    acc_regs = reg_n * max(1, ob // lanes)
    if int(sch.get(rx).extent) > 1 and acc_regs + reg_n > 30:
        # taps outside the channels: with rx innermost LLVM reuses the broadcast input scalars
        # of one tap in the next (x + 1) and keeps all of them live next to the accumulators;
        # when both do not fit in the 32 vector registers the tile spills to the stack. With ic
        # innermost every step has fresh (embedded) broadcasts. YOLOv8n 3x3 convs (20-wide
        # tiles): 15-20% faster; ResNet-18 (14-wide tiles fit either way) keeps ic outside,
        # which walks the input planes once per tile instead of once per tap (25% faster there).
        red = (ry, rx, ic)
    else:
        red = (ic, ry, rx)
    rows_first = _rows_first(sch, conv, threads)
    band_rows = _pad_band_rows(sch, conv, pad, threads)
    if band_rows:
        band, oh = sch.split(oh, [None, band_rows])
        sch.reorder(n, band, oco, oh, owo, *red, owi, oci)
    else:
        sch.reorder(n, *((oh, oco) if rows_first else (oco, oh)), owo, *red, owi, oci)
    first = red[0]
    # accumulator tile channel-innermost, so each vector of ob channels is contiguous and
    # LLVM keeps the whole (unrolled, constant-indexed) tile in registers
    acc = _register_tile(sch, conv, owo, layout=lambda b, o, y, x: (b, y, x, o))
    outer = _parallel_outer(sch, n, band if band_rows else None, oh, oco, rows_first)
    sch.unroll(owi)
    sch.vectorize(oci)
    init = sch.decompose_reduction(conv, first)
    iloops = sch.get_loops(init)
    sch.vectorize(iloops[-1])
    aloops = sch.get_loops(acc)  # ..., owo, oc tile (ob), ow tile (reg_n)
    out_block = _ann_int(sch, conv, "prunec_out_block")
    if out_block:
        # NCHW{b}c output: each b channels of a pixel are contiguous, so the tile's vectors go
        # out as they are, channels innermost
        sch.reorder(aloops[-1], aloops[-2])
        blk, lane = sch.split(aloops[-2], [None, out_block])
        sch.unroll(aloops[-1])
        sch.unroll(blk)
        sch.vectorize(lane)
    else:
        # write-back: loops (oc tile, ow tile) -> put ow innermost (contiguous in NCHW)
        sch.vectorize(aloops[-1])
    _finish_conv(sch, pad, acc, init, lanes, threads, band=outer if band_rows else None)


def _parallel_outer(sch, n, band, oh, oco, rows_first):
    """Fuse and parallelize a conv's outer loops: bands of rows (each computes all its
    channels, see _pad_band_rows), else rows x channel blocks in the order _rows_first chose."""
    if band is not None:
        outer = sch.fuse(n, band)
    else:
        outer = sch.fuse(n, oh, oco) if rows_first else sch.fuse(n, oco, oh)
    sch.parallel(outer)
    return outer


PAD_BAND_BYTES = 512 * 1024  # inputs at least this large are padded band by band


def _pad_band_rows(sch, conv, pad, threads) -> int:
    """Output rows per band when the conv's padded input should be built band by band inside
    the parallel loop (0: as one pass before it).

    A padded copy of a large input is one more trip through memory for the whole tensor: on a
    server core with ~20 GB/s to its L3, padding YOLOv8n's 16 x 160 x 160 input took 100 us of
    the 300 us conv (3 x 320 x 320 stem: 60 of 310). Band by band, each task pads the few input
    rows its output rows read (halo rows twice) into a buffer that stays in its own cache, and
    computes every output channel of those rows. Bands of up to 8 rows, at least 2 per thread."""
    if pad is None:
        return 0
    inp, _ = _conv_operands(sch, conv)
    if inp is None:
        return 0
    src = _region_buffer(sch.get(pad).reads[0]) if sch.get(pad).reads else None
    if src is None or 4 * math.prod(int(d) for d in src.shape) < PAD_BAND_BYTES:
        return 0
    oh = int(sch.get(conv).iter_vars[2].dom.extent)  # (n, oc, oh, ow, ...), however split
    return max((r for r in range(1, 9) if oh % r == 0 and oh // r >= 2 * threads), default=0)


def _rows_first(sch, conv, threads) -> bool:
    """Whether the conv's parallel loop runs over output rows before channel blocks.

    Rows first, every thread computes all channels of its band of rows: it reads only its band
    of the input (which the previous layer, split the same way, left in this core's cache) and
    the whole weight. Channel blocks first, every thread reads the whole input, half of it from
    the other core's cache, and its share of the weight. Low-reuse 1x1 convs after a depthwise
    conv (MobileNetV2: 576->96 at 14x14) ran 1.8x slower in the model than alone that way, while
    ResNet's 512->512 3x3 convs (9.4 MB of weights over a 100 KB input) need each weight byte
    read by one core only. So: rows first unless the weight is the larger operand. With the
    Winograd convs (which split rows) before them, the 3x3 direct convs follow the same rule
    (interleaved, whole model: ResNet-18 10.85 -> 10.59 ms, YOLOv8n 9.73 -> 9.50, pruned models
    within 2%); before Winograd, when every 3x3 conv split channel blocks, rows first had measured
    2-6% slower on them."""
    if threads <= 1:
        return False
    inp, wgt = _conv_operands(sch, conv)
    if inp is None:
        return False
    return math.prod(int(d) for d in wgt.shape) < math.prod(int(d) for d in inp.shape)


def _finish_conv(sch, pad, acc, init, lanes, threads, done=(), band=None):
    """Shared tail of the conv schedules: the padded input, per band of output rows under
    the parallel loop `band` where the schedule split them so (see _pad_band_rows), else as
    its own parallel, vectorized pass; and the generic schedule for whatever else the fused
    function holds (but `done`)."""
    done = set(done)
    if pad is not None and band is not None:
        sch.compute_at(pad, band)
        ploops = sch.get_loops(pad)
        try:
            # zero the band's rows, then copy the interior without a bounds test per element
            fill = sch.decompose_padding(pad, ploops[1])
            done.add(sch.get(fill).name_hint)
            # rows of zeros, vectorized along the row only: fused with the rows, the column
            # index wraps inside a vector (162 of 176 columns) and the stores were scattered
            _vectorize_tail(sch, sch.get_loops(fill)[-1], lanes)
        except Exception as e:  # noqa: BLE001 - keep the guarded copy
            _log.debug("decompose_padding failed: %s", e)
        _vectorize_tail(sch, sch.get_loops(pad)[-1], lanes)
    elif pad is not None:
        ploops = sch.get_loops(pad)
        sch.parallel(sch.fuse(*ploops[:3]))
        _vectorize_tail(sch, sch.get_loops(pad)[-1], lanes)
    _schedule_rest(sch, lanes, threads, done={CONV_BLOCK, "prunec_pad",
                                             sch.get(acc).name_hint, *done,
                                             sch.get(init).name_hint, CONV_BLOCK + "_update"})


def _schedule_conv_spatial(sch, conv, pad, ob, cols, lanes, threads):
    """Register tile of ob output channels x cols output columns (cols along the row, vectors
    along the row): per reduction step, ceil(cols / lanes) contiguous input loads and ob weight
    broadcasts feed ob x ceil(cols / lanes) FMAs; the tile is written back as row vectors."""
    n, oc, oh, ow, ic, ry, rx = sch.get_loops(conv)
    oco, oci = sch.split(oc, [None, ob])
    rows = _ann_int(sch, conv, "prunec_rows")
    if rows > 1:
        # whole rows (pointwise convs): the tile is `rows` rows, one contiguous run whose fused
        # index (i // ow) * ow + i % ow simplifies back to i: plain vector loads and stores
        oh, ohi = sch.split(oh, [None, rows])
        owo, owi = sch.split(ow, [1, None])
        sch.reorder(owo, ohi)
        owi = sch.fuse(ohi, owi)
    else:
        owo, owi = sch.split(ow, [None, cols])
    # whole-row tiles only: with column tiles (16->96 at 112x112) rows first measured 2x slower
    rows_first = rows > 1 and _rows_first(sch, conv, threads)
    band_rows = _pad_band_rows(sch, conv, pad, threads) if rows == 1 else 0
    if band_rows:
        band, oh = sch.split(oh, [None, band_rows])
        sch.reorder(n, band, oco, oh, owo, ic, ry, rx, oci, owi)
    else:
        sch.reorder(n, *((oh, oco) if rows_first else (oco, oh)), owo, ic, ry, rx, oci, owi)
    phases = _has(sch, TAPS_BLOCK)
    if phases:  # a stride-2 conv: each tap's input columns into registers by shuffles
        sch.transform_layout(pad, ("write", 0), lambda b, i, y, x: (b, i, y, x // 2, x % 2))
        taps = sch.get_sblock(TAPS_BLOCK)
        sch.set_scope(taps, 0, "local")
        sch.compute_at(taps, rx)
        _, tl = sch.split(sch.get_loops(taps)[-1], [None, lanes])
        sch.tensorize(tl, even_lanes_intrin(lanes, "global"))
    acc = _register_tile(sch, conv, owo)
    outer = _parallel_outer(sch, n, band if band_rows else None, oh, oco, rows_first)
    sch.unroll(oci)
    owv, owl = sch.split(owi, [None, lanes])
    sch.unroll(owv)
    sch.vectorize(owl)
    init = sch.decompose_reduction(conv, ic)
    iloops = sch.get_loops(init)
    sch.unroll(iloops[-3])
    sch.unroll(iloops[-2])
    sch.vectorize(iloops[-1])
    aloops = sch.get_loops(acc)  # ..., owo, oc tile (ob), [rows,] ow tile (cols)
    last = sch.fuse(aloops[-2], aloops[-1]) if rows > 1 else aloops[-1]
    _, al = sch.split(last, [None, lanes])
    sch.vectorize(al)
    _finish_conv(sch, pad, acc, init, lanes, threads,
                 done=(TAPS_BLOCK, TAPS_BLOCK + "_o") if phases else (),
                 band=outer if band_rows else None)


def _ann_int(sch, block, key) -> int:
    ann = sch.get(block).annotations
    try:
        return int(ann[key]) if key in ann else 0
    except Exception:
        return 0


def _schedule_dwconv(sch, lanes, threads):
    """Depthwise: one parallel task per channel plane, walked in bands of about 8 output rows.
    Each band's padded input rows are built right before its taps (L1-resident: zeroed, then
    the interior copied without bounds tests); output rows are computed in whole vectors
    (padded, see dw_row_vectors) in register tiles of up to 8 vectors (rows x vectors, see
    _dw_rows) over the kh x kw taps, and the epilogue writes the rows' real columns."""
    conv = sch.get_sblock(DW_BLOCK)
    ow_real = _ann_int(sch, conv, "prunec_ow")
    # the slice of a padded row is inlined into the epilogue (bias, activation ...)
    _inline_injective(sch, keep={"prunec_pad", DW_BLOCK, DW_EVEN})
    conv = sch.get_sblock(DW_BLOCK)
    pad = sch.get_sblock("prunec_pad") if _has(sch, "prunec_pad") else None
    loops = sch.get_loops(conv)
    if len(loops) == 7:  # strided: (x // sw, x % sw) fused back into one contiguous column loop
        n, c, oh, xq, xr, ry, rx = loops
        ow = sch.fuse(xq, xr)
    else:
        n, c, oh, ow, ry, rx = loops
    owp = int(sch.get(ow).extent)
    v, tile, _ = dw_row_vectors(ow_real or owp, lanes)
    if owp % v:  # rows not padded (an older module): whole-row vectors as they come
        v, tile = owp, 1
    owo, owt, owl = sch.split(ow, [None, tile, v])
    oh_ext = int(sch.get(oh).extent)
    rows = _dw_rows(oh_ext, tile)
    bands = _dw_bands(oh_ext // rows, rows)
    band, oh, ohi = sch.split(oh, [bands, None, rows])
    sch.reorder(n, c, band, oh, owo, ry, rx, ohi, owt, owl)
    nc = sch.fuse(n, c)
    padded = ow_real and (ow_real != owp or _dw_stride(sch, conv) > 1)
    sch.parallel(nc)
    even = sch.get_sblock(DW_EVEN) if _has(sch, DW_EVEN) else None
    shuffled = False
    if padded:
        # the rows' accumulators live in a local buffer; the epilogue reads their real columns
        cons = sch.get_consumers(conv)
        if len(cons) != 1:
            raise ValueError("padded depthwise row needs one consumer")
        epi = cons[0]
        sch.reverse_compute_at(epi, oh)
        sch.set_scope(conv, 0, "local")
        if even is not None and len(sch.get_consumers(even)) == 1:
            # stride 2: the even columns by shuffles, then the epilogue
            epi = sch.get_consumers(even)[0]
            sch.reverse_compute_at(epi, oh)
            _even_columns(sch, even, lanes)
            shuffled = True
    else:
        epi = _register_tile(sch, conv, owo)
    done = {DW_BLOCK, "prunec_pad", sch.get(epi).name_hint}
    if shuffled:  # else an even-column block (several readers) gets the generic schedule below
        done |= {DW_EVEN, DW_EVEN + "_o"}
    sch.unroll(ry)
    sch.unroll(rx)
    sch.unroll(ohi)
    sch.unroll(owt)
    sch.vectorize(owl)
    init = sch.decompose_reduction(conv, ry)
    done.add(sch.get(init).name_hint)
    il = sch.get_loops(init)
    sch.unroll(il[-3])
    sch.unroll(il[-2])
    sch.vectorize(il[-1])
    el = sch.get_loops(epi)
    if padded:
        _vectorize_tail(sch, el[-1], v)
    else:
        sch.vectorize(el[-1])
    if pad is not None:
        sch.compute_at(pad, band)
        ploops = sch.get_loops(pad)
        try:
            # zero the band's rows, then copy the interior without a bounds test per element
            fill = sch.decompose_padding(pad, ploops[2])  # the first loop under (plane, band)
            done.add(sch.get(fill).name_hint)
            _vectorize_tail(sch, sch.fuse(*sch.get_loops(fill)[2:]), lanes)
            ploops = sch.get_loops(pad)
        except Exception as e:  # noqa: BLE001 - keep the fused form
            _log.debug("decompose_padding failed: %s", e)
        sch.vectorize(ploops[-1])
    _schedule_rest(sch, lanes, threads, done=done | {DW_BLOCK + "_update"})


def _schedule_dwconv_blocked(sch, lanes, threads):
    """Depthwise conv on NCHW{b}c: parallel over (channel block, output row); a register tile
    of up to 12 output pixels x one vector of b channels over the kh x kw taps (one weight
    vector per tap for the whole tile), written back with the fused epilogue."""
    _inline_injective(sch)
    conv = sch.get_sblock(DWB_BLOCK)
    nchw_b = _ann_int(sch, conv, "prunec_block")
    if nchw_b:  # NCHW output: channels split into the same blocks of b
        n, ch, y, x, ry, rx = sch.get_loops(conv)
        q, r = sch.split(ch, [None, nchw_b])
    else:
        n, q, y, x, r, ry, rx = sch.get_loops(conv)
    tile = _row_tile(int(sch.get(x).extent), 12)
    xo, xi = sch.split(x, [None, tile])
    sch.reorder(n, q, y, xo, ry, rx, xi, r)
    # the tile channels-innermost in registers either way; an NCHW output is written back
    # with the columns innermost (contiguous rows of each channel)
    acc = _register_tile(sch, conv, xo,
                         layout=(lambda nn, c, yy, xx: (nn, yy, xx, c)) if nchw_b else None)
    # channel blocks first: rows first measured 3-6% slower on MobileNetV2, and rows first only
    # where the conv before splits rows (c < h x w) made no difference
    sch.parallel(sch.fuse(n, q, y))
    sch.unroll(ry)
    sch.unroll(rx)
    sch.unroll(xi)
    _vectorize_tail(sch, r, lanes)
    init = tile_init_and_writeback(sch, conv, ry, acc, _vectorize_tail, lanes)
    _schedule_rest(sch, lanes, threads, done={DWB_BLOCK, DWB_BLOCK + "_update",
                                             sch.get(acc).name_hint, sch.get(init).name_hint})


def _even_columns(sch, even, lanes):
    """The even columns of the computed rows (stride 2) into a local row: vectors of w lanes
    each one shuffle of two contiguous vectors (vpermt2ps on AVX-512, uzp1 on NEON) instead of
    w scalar inserts, which took a third of MobileNetV2's 96x112x112 stride-2 depthwise conv."""
    sch.set_scope(even, 0, "local")
    xq = sch.get_loops(even)[-1]
    ext = int(sch.get(xq).extent)
    w = next((v for v in (lanes, lanes // 2, 4) if v >= 4 and ext % v == 0), 0)
    if not w:
        sch.vectorize(xq)
        return
    _, inner = sch.split(xq, [None, w])
    sch.tensorize(inner, even_lanes_intrin(w))


def even_lanes_intrin(w: int, scope: str = "local") -> str:
    """Name of the registered tensor intrinsic c[0:w] = a[0:2w:2] on float32 rows (a in
    `scope`, c local)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    name = f"prunec_even_lanes_{w}_{scope}"
    if name in _EVEN_INTRINS:
        return name
    vt, idx = f"float32x{w}", [2 * i for i in range(w)]

    # the rows are [columns / 2, 2] (see _dwconv_te): the even columns, a [w, 1] view of stride 2
    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((w, 1), "float32", strides=(2, 1), offset_factor=1, scope=scope),
             c: T.Buffer((w,), "float32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(a[0:w, 0:1])
            T.writes(c[0:w])
            for i in range(w):
                with T.sblock("even"):
                    vi = T.axis.remap("S", [i])
                    c[vi] = a[vi, 0]

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((w, 1), "float32", strides=(2, 1), offset_factor=1, scope=scope),
             c: T.Buffer((w,), "float32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(a[0:w, 0:1])
            T.writes(c[0:w])
            # two contiguous vectors over the 2w columns, their even lanes
            c.vstore([0], T.Shuffle([a.vload([0, 0], vt), a.vload([w // 2, 0], vt)], idx))

    TensorIntrin.register(name, desc, impl, override=True)
    _EVEN_INTRINS.add(name)
    return name


_EVEN_INTRINS: set = set()


def _dw_rows(oh: int, tile: int, cap: int = 8) -> int:
    """Output rows per depthwise register tile: adjacent rows read overlapping input rows, so
    with several rows in one unrolled tile each input vector is loaded once for all of them
    (3x3, stride 1: 4 row loads feed 2 output rows instead of 6). Rows of one vector (14x14,
    7x7 planes) keep one row per tile: 7-row tiles there measured 5-8% slower."""
    if tile == 1:
        return 1
    return max(r for r in range(1, cap + 1) if oh % r == 0 and r * tile <= cap)


def _dw_bands(tiles: int, rows: int, band_rows: int = 8) -> int:
    """Bands per plane (of `tiles` row tiles of `rows` rows), each padded on its own just before
    its taps, so the padded rows are still in L1 when read: a whole padded 112x112 plane is 59 KB,
    a band of 8 output rows 6-10 KB. With the 2-row tiles, single thread, interleaved: 32x112x112
    stride 1 254 -> 144 us, 96x112x112 stride 2 590 -> 385 us, ResNet's 3x3/2 max pool on
    64x112x112 488 -> 261 us. The halo rows are copied once per band (10/8 of the plane)."""
    return max(b for b in range(1, tiles + 1)
               if tiles % b == 0 and (b == 1 or (tiles // b) * rows >= band_rows))


def _dw_stride(sch, conv) -> int:
    """Column stride of the depthwise conv (annotated by _dwconv_te)."""
    ann = sch.get(conv).annotations
    try:
        return int(ann["prunec_stride"]) if "prunec_stride" in ann else 1
    except Exception:
        return 1


def _region_buffer(region):
    return getattr(region, "buffer", None) or region.source  # 0.27 calls it source


def _conv_operands(sch, conv):
    """(input buffer, packed weight buffer) the conv block reads. The weight is the 5-d buffer
    (ocb, C, kh, kw, ob) whose second dim is the whole reduction over input channels C; an
    NCHW{b}c input is 5-d too, but holds C / b channel blocks there."""
    ic = int(sch.get(conv).iter_vars[4].dom.extent)  # the block's axes: n, o, y, x, ic, ry, rx
    out = _region_buffer(sch.get(conv).writes[0])
    inp = wgt = None
    for r in sch.get(conv).reads:
        buf = _region_buffer(r)
        if buf.same_as(out):
            continue
        if wgt is None and len(buf.shape) == 5 and int(buf.shape[1]) == ic:
            wgt = buf
        elif inp is None:
            inp = buf
    if wgt is None:
        raise ValueError("packed weight not found")
    return inp, wgt


def _block_factor(sch, conv) -> int:
    """ob: output channels per register tile, the last dim of the packed weight."""
    return int(_conv_operands(sch, conv)[1].shape[-1])


def _vectorize_tail(sch, loop, lanes):
    ext = int(sch.get(loop).extent)
    if ext % lanes == 0 and ext > lanes:
        _, inner = sch.split(loop, [None, lanes])
        sch.vectorize(inner)
    elif ext <= 64:
        sch.vectorize(loop)


def _schedule_rest(sch, lanes, threads, done):
    for name in [sch.get(b).name_hint for b in _blocks(sch)]:
        if name in done or not _has(sch, name):  # reverse-inlined meanwhile
            continue
        block = sch.get_sblock(name)
        if not _schedule_gemv(sch, block, lanes, threads):
            _schedule_block_generic(sch, block, lanes)


def _gemv_shape(sch, block):
    """(K, N) when block is y[n] (+)= x[k] * W[k, n] over a single row of outputs with the weight
    rows contiguous in n (a classifier head: 1280 x 1000 in MobileNetV2), else None."""
    iv = sch.get(block).iter_vars
    spatial = [v for v in iv if v.iter_type == 0]
    reduce = [v for v in iv if v.iter_type == 2]
    if len(reduce) != 1 or not spatial or any(int(v.dom.extent) != 1 for v in spatial[:-1]):
        return None
    j, k = spatial[-1].var, reduce[0].var
    for r in sch.get(block).reads:
        idx = [rg.min for rg in r.region]
        if len(idx) >= 2 and idx[-1].same_as(j) and idx[-2].same_as(k):
            return int(reduce[0].dom.extent), int(spatial[-1].dom.extent)
    return None


def _schedule_gemv(sch, block, lanes, threads) -> bool:
    """Matrix-vector product streamed row by row: the reduction is split into `parts` runs of
    contiguous weight rows (rfactor), each accumulating the whole output row in an L1-resident
    partial sum, then the partials are added. The generic tile (a few output
    vectors down all K rows) read the weight in short strided pieces and ran at ~8 GB/s.
    GEMV_ROWS weight rows are streamed side by side, each partial-sum vector loaded and stored
    once per group: the head's weight comes from memory in the model (not from cache), and
    four concurrent streams keep more misses in flight than one (MobileNetV2's 1280x1000 head
    in the model: 115 -> 55 us at 2 threads, 155 -> 123 us at 1)."""
    shape = _gemv_shape(sch, block)
    if shape is None:
        return False
    k_ext, n_ext = shape
    v = next((w for w in (lanes, lanes // 2, 4) if w >= 4 and n_ext % w == 0), 0)
    if k_ext < 128 or n_ext < 4 * lanes or not v:
        return False
    parts = next(p for p in (4 * threads, 2 * threads, threads, 1) if k_ext % p == 0)
    loops = sch.get_loops(block)
    ko, ki = sch.split(loops[-1], [parts, None])
    sch.rfactor(ko, 0)  # the partial-sum block stays under these loops: (unit..., n, ko, ki)
    rf = sch.get_sblock(sch.get(block).name_hint + "_rf")
    rl = sch.get_loops(rf)  # its own nest: (unit..., n, ko, ki)
    n, ko, ki = rl[-3:]
    rows = next(r for r in (GEMV_ROWS, 2, 1) if (k_ext // parts) % r == 0)
    kio, kii = sch.split(ki, [None, rows])
    sch.reorder(ko, kio, n, kii)
    sch.parallel(sch.fuse(*rl[:-3], ko) if len(rl) > 3 else ko)
    no, nv = sch.split(n, [None, v])
    sch.reorder(no, kii, nv)
    sch.unroll(kii)
    sch.vectorize(nv)
    init = sch.decompose_reduction(rf, kio)
    sch.vectorize(sch.get_loops(init)[-1])
    # the final sum over the parts, vectorized along n (a reduction block: the epilogue, e.g.
    # the bias, stays a block of its own and gets the generic schedule)
    floops = sch.get_loops(block)  # (unit..., n, ko)
    _, fv = sch.split(floops[-2], [None, v])
    sch.vectorize(fv)
    return True


def _schedule_generic(sch, lanes, threads, anchor=None):
    _inline_injective(sch)
    _schedule_rest(sch, lanes, threads, done=set())


def _reduce_tile(ext: int, lanes: int) -> int:
    """Output elements kept in registers by a generic reduction: a few vectors (independent
    accumulators hide FMA latency), else one vector, else the whole short row."""
    for v in (4 * lanes, 2 * lanes, lanes):
        if ext % v == 0 and ext >= v:
            return v
    v = _inner_vector(ext, lanes)  # e.g. 60 for the 2100 anchors of a YOLO head at 320
    if v:
        return v
    for v in (lanes // 2, 4):
        if v >= 4 and ext % v == 0 and ext >= v:
            return v
    return ext if ext <= 64 else 1


def _inner_vector(ext: int, lanes: int) -> int:
    """Vector length for an innermost loop of extent ext: the whole loop when short, else the
    largest divisor in [lanes, 4 * lanes]; 0 when neither fits."""
    if lanes // 2 <= ext <= 4 * lanes:
        return ext
    for v in range(4 * lanes, lanes - 1, -1):
        if ext % v == 0:
            return v
    return 0


def _schedule_block_generic(sch, block, lanes):
    loops = sch.get_loops(block)
    if not loops:
        return
    iv = sch.get(block).iter_vars
    if len(iv) != len(loops):
        return  # already transformed
    spatial = [lp for lp, v in zip(loops, iv) if v.iter_type == 0]
    reduce = [lp for lp, v in zip(loops, iv) if v.iter_type == 2]
    if not spatial:
        return
    inner = spatial[-1]
    ext = int(sch.get(inner).extent)
    if reduce:
        # keep a vector of outputs in registers while reducing: S.., R.., s_inner
        v = _reduce_tile(ext, lanes)
        if v > 1:
            so, si = sch.split(inner, [None, v]) if v != ext else (None, inner)
            order = spatial[:-1] + ([so] if so is not None else []) + reduce + [si]
            sch.reorder(*order)
            acc = sch.cache_write(block, 0, "local")
            anchor = order[len(spatial) - 1 + (1 if so is not None else 0) - 1] \
                if len(spatial) - 1 + (1 if so is not None else 0) > 0 else None
            if anchor is not None:
                sch.reverse_compute_at(acc, anchor)
                _epilogue_into(sch, acc)
            outer = spatial[:-1] + ([so] if so is not None else [])
            if outer:
                sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
            sch.vectorize(si)
            init = sch.decompose_reduction(block, reduce[0])
            sch.vectorize(sch.get_loops(init)[-1])
            if anchor is not None:
                al = sch.get_loops(acc)
                sch.vectorize(al[-1])
            return
        if len(spatial) > 1:
            sch.parallel(sch.fuse(*spatial[:-1]) if len(spatial) > 2 else spatial[0])
        return
    if len(spatial) > 1 and _schedule_concat_pieces(sch, block, spatial, ext, lanes):
        return
    # spatial-only (copies, concat/split, transposes, elementwise): vectorize the innermost
    # dim and parallelize the rest, rather than vectorizing a fused index (its per-lane int64
    # div/mod by the dim sizes is scalarized by LLVM)
    v = _inner_vector(ext, lanes)
    if v and len(spatial) > 1:
        outer = spatial[:-1]
        if v != ext:
            o, i = sch.split(inner, [None, v])
            outer = outer + [o]
        else:
            i = inner
        fo = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        if int(sch.get(fo).extent) > 1:
            sch.parallel(fo)
        sch.vectorize(i)
        return
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    total = int(sch.get(fused).extent)
    if total >= lanes * 4 and total % lanes == 0:
        o, i = sch.split(fused, [None, lanes])
        sch.parallel(o)
        sch.vectorize(i)
    elif total > 1:
        sch.parallel(fused)


def _concat_bounds(sch, block, ext: int) -> list[int]:
    """Constant points c in (0, ext) where the block's value switches source along its innermost
    axis (conditions c <= x, x < c ... of a concatenation along that axis), sorted."""
    from tvm import tirx

    var = sch.get(block).iter_vars[-1].var
    found: set[int] = set()

    def visit(node):
        if isinstance(node, (tirx.LE, tirx.LT, tirx.GE, tirx.GT)):
            # the first index of the upper side: c+1 for x <= c, x > c, c < x, c >= x; else c
            for x, c, after in ((node.a, node.b, (tirx.LE, tirx.GT)),
                                (node.b, node.a, (tirx.LT, tirx.GE))):
                if isinstance(x, tirx.Var) and x.same_as(var) and isinstance(c, tirx.IntImm):
                    found.add(int(c.value) + (1 if isinstance(node, after) else 0))
    from tvm.ir.expr import Expr as PrimExpr

    def walk(node, depth=0):  # this wheel exposes no TIR visitor to Python
        if depth > 64:
            return
        visit(node)
        for field in ("a", "b", "value", "condition", "true_value", "false_value"):
            child = getattr(node, field, None)
            if isinstance(child, PrimExpr):
                walk(child, depth + 1)
        for field in ("args", "indices"):
            for child in getattr(node, field, None) or ():
                if isinstance(child, PrimExpr):
                    walk(child, depth + 1)
    body = sch.get(block).body
    if isinstance(body, tirx.BufferStore):
        walk(body.value)
    return sorted(c for c in found if 0 < c < ext)


def _schedule_concat_pieces(sch, block, spatial, ext: int, lanes: int) -> bool:
    """A concatenation along the innermost axis (YOLOv8's head: 40x40, 20x20 and 10x10 anchors
    flattened and joined, then split into box and class rows) is cut into one loop per source, in
    vectors that do not straddle a cut. Inside each piece the select chain and the div/mod of
    the flattening fold away and the copy is contiguous: 164 -> 42 us on the pruned YOLOv8n,
    where the one vectorized loop had evaluated every source's index for every element."""
    cuts = _concat_bounds(sch, block, ext)
    if not cuts:
        return False
    g = 0
    for c in cuts + [ext]:
        g = math.gcd(g, c)
    # widest vector that divides every piece: whole vectors, else multiples of 4 lanes
    v = next((w for w in range(2 * lanes, 3, -1) if g % w == 0 and (w % lanes == 0 or w % 4 == 0)),
             0)
    if not v:
        return False
    outer, inner = sch.split(spatial[-1], [None, v])
    fo = sch.fuse(*spatial[:-1]) if len(spatial) > 2 else spatial[0]
    if int(sch.get(fo).extent) > 1:
        sch.parallel(fo)
    bounds = [c // v for c in cuts]
    sizes = [b - a for a, b in zip([0] + bounds[:-1], bounds)]
    pieces = sch.loop_partition(outer, sizes + [None])
    for piece in pieces:  # each piece has its own copy of the inner loop
        for child in sch.get_child_blocks(piece):
            loops = sch.get_loops(child)
            if loops and int(sch.get(loops[-1]).extent) == v:
                try:
                    sch.vectorize(loops[-1])
                except Exception:  # noqa: BLE001 - already vectorized through a shared loop
                    pass
    return True

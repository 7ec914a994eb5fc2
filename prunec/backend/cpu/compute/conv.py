"""Dense conv2d legalization: the packed-weight direct conv (channel tiles, row tiles, stride-2
column tiles), dispatching depthwise convs and Winograd candidates to their own computes."""

from __future__ import annotations

import logging

from . import winograd
from .common import KEEP_SUFFIX, pad, static_shape
from .depthwise import dwconv_blocked_te, dwconv_te
from ..facts import channel_block, conv_out_hw, conv_row_tile

_log = logging.getLogger(__name__)


CONV_BLOCK = "prunec_conv"

# the output columns of a conv computed over a padded row width (facts.conv_row_tile)
CROP_BLOCK = "prunec_conv_crop"

# convs reducing over at most this many (input channel, tap) pairs vectorize along the output
# row when they can (see _spatial_tile): their time goes into the write-back, not the FMAs. With
# long reductions (YOLO's 3x3 convs) the channel-vectorized tile measured 10-25% faster.
SHORT_REDUCTION = 64

TAPS_BLOCK = "prunec_taps" + KEEP_SUFFIX  # one tap's input columns of a stride-2 conv


def legalize_conv2d(bb, call, lanes, use_winograd=True):
    from tvm import relax, te, tirx, topi

    a = call.attrs
    data, weight = call.args
    dshape, wshape = static_shape(data), static_shape(weight)
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
        return bb.call_te(dwconv_te, data, weight, (sh, sw), (pt, pl, pb, pr), (dh, dw),
                          lanes, primfunc_name_hint="prunec_dwconv")
    if groups != 1:
        return _default_conv2d(bb, call)
    if (kh, kw, sh, sw, dh, dw) == (3, 3, 1, 1, 1, 1) and use_winograd:
        out = winograd.legalize(bb, data, weight, (pt, pl, pb, pr), lanes)
        if out is not None:
            return out
    oh, ow = conv_out_hw(h, w, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw))
    rows = 1
    # stride-2 stems (short reductions) read each tap's columns by shuffles (phase_conv_te);
    # a de-interleaved copy of the whole input instead, one more pass over it, had made
    # YOLOv8n 2-3% slower and MobileNetV2's stem 20% (long reductions: the channel tile wins)
    spatial = (_spatial_tile(oc, ow, sw, lanes) if c * kh * kw <= SHORT_REDUCTION else None)
    phases = False
    if spatial is None and sw == 2 and dw == 1 and c * kh * kw <= SHORT_REDUCTION \
            and any((pt, pl, pb, _phase_right_pad(w, kw, ow, pl, pr))):
        # (the schedule lays out the padded copy as column pairs: an unpadded input has none)
        spatial = _phase_tile(oc, ow, lanes)
        phases = spatial is not None
    if spatial is None and (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0):
        block = _row_block(oc, oh, ow, lanes)
        if block:
            rows, mr = block
            spatial = (ow, mr)
    ocp = oc if spatial else padded_channels(oc, lanes)
    ob = spatial[1] if spatial else channel_block(ocp, lanes)
    if ob == 1:
        return _default_conv2d(bb, call)

    def w_at(wt, o, i, y, x):  # zero weights in the padded output channels
        if ocp == oc:
            return wt[o, i, y, x]
        return tirx.if_then_else(o < oc, wt[tirx.min(o, oc - 1), i, y, x],
                                 tirx.const(0.0, "float32"))
    wp = bb.emit_te(lambda wt: te.compute(
        (ocp // ob, c, kh, kw, ob), lambda o, i, y, x, b: w_at(wt, o * ob + b, i, y, x),
        name="prunec_wpack"), weight, primfunc_name_hint="prunec_wpack")
    del topi
    tile = (0, 0) if spatial else _padded_tile(ow, ob, lanes)
    return bb.call_te(conv_te, data, wp, (sh, sw), (pt, pl, pb, pr), (dh, dw),
                      spatial[0] if spatial else 0, rows, 0, 0, phases, tile, oc,
                      primfunc_name_hint="prunec_conv2d")


def padded_channels(oc: int, lanes: int) -> int:
    """Output channels the channel-vectorized conv computes: oc rounded up to whole vectors
    where that adds at most an eighth (zero weights, cropped in the write-back), else oc. A
    pruned 184 (11.5 vectors of 16) otherwise runs 8-channel tiles: each broadcast input feeds
    one half vector instead of two whole ones (1x1 288 -> 184 at 10x10 with SiLU: 120 us,
    288 -> 192 102 us, 1 thread)."""
    ocp = -(-oc // lanes) * lanes
    return ocp if 8 * (ocp - oc) <= oc else oc


def _padded_tile(ow: int, ob: int, lanes: int) -> tuple[int, int]:
    """conv_row_tile's (columns, width) where it pads the row, else (0, 0): the schedule picks
    the tile of an unpadded row itself."""
    cols, width = conv_row_tile(ow, ob, lanes)
    return (cols, width) if width != ow else (0, 0)


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
    get dwconv_blocked_te; dense convs our packed-weight conv, reading the input through its
    layout and writing the tile through the output's (no spatial tiles: along a blocked row,
    pixels are b floats apart). None (TVM's default) for anything else."""
    from tvm import te

    a = call.attrs
    data, weight = call.args
    dshape, wshape = static_shape(data), static_shape(weight)
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
        return bb.call_te(dwconv_blocked_te, data, weight, strides, pads, dil, bo == 0,
                          primfunc_name_hint="prunec_dwconv_nchwc")
    if groups != 1 or icg != c or bk != bo:
        return None
    ob = channel_block(oc, lanes)
    if ob == 1 or (bo and ob % bo and bo % ob):
        return None

    def w_at(wt, o, i, y, x):  # the weight as OIHW, whichever layout it came in
        return wt[o // bk, i, y, x, o % bk] if bk else wt[o, i, y, x]
    wp = bb.emit_te(lambda wt: te.compute(
        (oc // ob, c, kh, kw, ob), lambda o, i, y, x, b: w_at(wt, o * ob + b, i, y, x),
        name="prunec_wpack"), weight, primfunc_name_hint="prunec_wpack")
    return bb.call_te(conv_te, data, wp, strides, pads, dil, 0, 1, bd, bo,
                      primfunc_name_hint="prunec_conv2d")


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
    mr = next(m for m in range(max(1, tile_registers(lanes) // nvec), 0, -1) if oc % m == 0)
    return (rows, mr) if mr >= 2 else None


def tile_registers(lanes: int) -> int:
    """Vector registers a register tile may hold as accumulators, leaving room for its input
    vectors and broadcast weights: 24 of the 32 of AVX-512 and NEON, 12 of AVX2's 16. (24 on
    AVX2 had LLVM spill the tile to the stack: YOLOv8n's pointwise convs, 1 thread on a Zen 3,
    384->128 at 20x20 1366 -> 875 us, 96->64 at 20x20 176 -> 99, 48->16 at 80x80 386 -> 313.)"""
    return 12 if lanes == 8 else 24


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
    cap = max(1, min(tile_registers(lanes) // nvec, 16))
    mr = next(m for m in range(cap, 0, -1) if oc % m == 0)
    if mr < 4 and cap >= 4:
        return None  # odd channel counts: too few rows to amortize the vector loads
    return cols, mr


def _phase_tile(oc: int, ow: int, lanes: int):
    """(columns, channels) of a stride-2 conv's spatial tile (see phase_conv_te), or None.
    One vector of columns: each tap's vector costs a shuffle, so it feeds as many channels as
    the registers hold (16 accumulators on AVX-512 and NEON, 12 of AVX2's 16 registers)."""
    if ow % lanes or ow < 2 * lanes:
        return None
    cap = 12 if lanes == 8 else 16
    mr = next(m for m in range(cap, 0, -1) if oc % m == 0)
    return (lanes, mr) if mr >= 4 else None


def _default_conv2d(bb, call):
    from tvm import topi

    a = call.attrs
    return bb.call_te(topi.nn.conv, inp=call.args[0], filt=call.args[1], stride=a.strides,
                      padding=a.padding, dilation=a.dilation, groups=a.groups,
                      data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                      out_dtype=a.out_dtype or None,
                      primfunc_name_hint="conv2d")


def conv_te(data, wp, strides, pads, dil, spatial_cols=0, rows=1, in_block=0, out_block=0,
            phases=False, tile=(0, 0), out_channels=0):
    """Direct conv over the packed weight. in_block/out_block: the input/output is NCHW{b}c
    with that b (0: NCHW); the conv itself is computed in NCHW order either way and a blocked
    output is one more (inlined) stage. phases (column stride 2, spatial tiles): see
    phase_conv_te. tile: (columns of the channel-vectorized register tile, the row width
    computed), facts.conv_row_tile's; a width beyond the output's reads more right padding and
    a crop stage (CROP_BLOCK) keeps the output's columns. out_channels: the output's channels
    where the packed weight has more (padded_channels), cropped by the same stage."""
    from tvm import te

    if phases:
        return phase_conv_te(data, wp, strides, pads, spatial_cols)

    if in_block:
        n, cbk, h, w, _ = (int(x) for x in data.shape)
        c = cbk * in_block
    else:
        n, c, h, w = (int(x) for x in data.shape)
    ocb, _, kh, kw, ob = (int(x) for x in wp.shape)
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dil, pads
    oh, ow = conv_out_hw(h, w, kh, kw, strides, pads, dil)
    cols, width = tile if tile[0] else (0, ow)
    if width > ow:  # the extra columns read zeros
        pr = max(pr, (width - 1) * sw + (kw - 1) * dw + 1 - w - pl)
        pads = (pt, pl, pb, pr)
    ic = te.reduce_axis((0, c), "ic")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    x = pad(data, pads)

    def tap(b, y, xo):
        iy, ix = y * sh + ry * dh, xo * sw + rx * dw
        if in_block:
            return x[b, ic // in_block, iy, ix, ic % in_block]
        return x[b, ic, iy, ix]
    attrs = {"prunec_cols": spatial_cols, "prunec_rows": rows} if spatial_cols else {}
    if out_block:
        attrs["prunec_out_block"] = out_block
    if cols:
        attrs["prunec_ow_tile"] = cols
    conv = te.compute(
        (n, ocb * ob, oh, width),
        lambda b, o, y, xo: te.sum(tap(b, y, xo) * wp[o // ob, ic, ry, rx, o % ob],
                                   axis=[ic, ry, rx]),
        name=CONV_BLOCK, attrs=attrs or None)
    oc = out_channels or ocb * ob
    if width > ow or oc < ocb * ob:
        return te.compute((n, oc, oh, ow), lambda b, o, y, xo: conv[b, o, y, xo],
                          name=CROP_BLOCK)
    if not out_block:
        return conv
    return te.compute((n, ocb * ob // out_block, oh, ow, out_block),
                      lambda b, q, y, xo, r: conv[b, q * out_block + r, y, xo],
                      name="prunec_blocked_out")


def _phase_right_pad(w, kw, ow, pl, pr) -> int:
    """Columns phase_conv_te pads on the right: the last tap's last vector pair reads one
    column past its odd lanes, so room for it; rows in whole 16-float vectors, so the padding
    pass is plain vector stores."""
    wq = -(-max(-(-(w + pl + pr) // 2), ow + kw // 2) // 8) * 8
    return 2 * wq - w - pl


def phase_conv_te(data, wp, strides, pads, cols):
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
    # NCHW here; the schedule views its rows as (x // 2, x % 2) pairs (same memory)
    xp = pad(data, (pt, pl, pb, _phase_right_pad(w, kw, ow, pl, pr)))
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

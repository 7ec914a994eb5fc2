"""Depthwise conv (and max pool over the same windows) as TE: NCHW rows padded to whole vectors,
NCHW{b}c with one vector of b channels per tap."""

from __future__ import annotations

from .common import pad
from ..facts import conv_out_hw


DW_BLOCK = "prunec_dwconv"

DW_EVEN = "prunec_dweven"

DWB_BLOCK = "prunec_dwconv_nchwc"


def dwconv_blocked_te(data, weight, strides, pads, dil, nchw_out=False):
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


def dwconv_te(data, weight, strides, pads, dil, lanes=8, pool=None):
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
    x = pad(data, (pt, pl, pb, pw - w - pl), lowest if pool else 0.0)
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

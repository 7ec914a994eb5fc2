"""Rules for depthwise convs and max pools (compute/depthwise.py): NCHW planes in bands of
padded rows computed in whole vectors, and NCHW{b}c pixels one vector each."""

from __future__ import annotations

import logging

from ..compute.common import PAD_BLOCK
from ..compute.depthwise import DW_BLOCK, DW_EVEN, DWB_BLOCK, dw_row_vectors
from ..facts import row_tile
from ..intrinsics import even_lanes_intrin
from ..rule import Rule
from .common import (ann_int, has_block, inline_injective, loops_below, register_tile,
                     tile_init_and_writeback, vectorize_tail)
from .rest import schedule_rest

_log = logging.getLogger(__name__)


def schedule_dwconv(sch, lanes, threads):
    """Depthwise: one parallel task per channel plane, walked in bands of about 8 output rows.
    Each band's padded input rows are built right before its taps (L1-resident: zeroed, then
    the interior copied without bounds tests); output rows are computed in whole vectors
    (padded, see dw_row_vectors) in register tiles of up to 8 vectors (rows x vectors, see
    _dw_rows) over the kh x kw taps, and the epilogue writes the rows' real columns."""
    conv = sch.get_sblock(DW_BLOCK)
    ow_real = ann_int(sch, conv, "prunec_ow")
    # the slice of a padded row is inlined into the epilogue (bias, activation ...)
    inline_injective(sch, keep={PAD_BLOCK, DW_BLOCK, DW_EVEN})
    conv = sch.get_sblock(DW_BLOCK)
    pad = sch.get_sblock(PAD_BLOCK) if has_block(sch, PAD_BLOCK) else None
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
    even = sch.get_sblock(DW_EVEN) if has_block(sch, DW_EVEN) else None
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
        epi = register_tile(sch, conv, owo)
    done = {DW_BLOCK, PAD_BLOCK, sch.get(epi).name_hint}
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
    if not loops_below(sch, el, oh if padded else owo):
        pass  # a one-element output row: nothing to vectorize
    elif padded:
        vectorize_tail(sch, el[-1], v)
    else:
        sch.vectorize(el[-1])
    if pad is not None:
        sch.compute_at(pad, band)
        ploops = sch.get_loops(pad)
        try:
            # zero the band's rows, then copy the interior without a bounds test per element
            fill = sch.decompose_padding(pad, ploops[2])  # the first loop under (plane, band)
            done.add(sch.get(fill).name_hint)
            vectorize_tail(sch, sch.fuse(*sch.get_loops(fill)[2:]), lanes)
            ploops = sch.get_loops(pad)
        except Exception as e:  # noqa: BLE001 - keep the fused form
            _log.debug("decompose_padding failed: %s", e)
        sch.vectorize(ploops[-1])
    schedule_rest(sch, lanes, threads, done=done | {DW_BLOCK + "_update"})


def schedule_dwconv_blocked(sch, lanes, threads):
    """Depthwise conv on NCHW{b}c: parallel over (channel block, output row); a register tile
    of up to 12 output pixels x one vector of b channels over the kh x kw taps (one weight
    vector per tap for the whole tile), written back with the fused epilogue."""
    inline_injective(sch)
    conv = sch.get_sblock(DWB_BLOCK)
    nchw_b = ann_int(sch, conv, "prunec_block")
    if nchw_b:  # NCHW output: channels split into the same blocks of b
        n, ch, y, x, ry, rx = sch.get_loops(conv)
        q, r = sch.split(ch, [None, nchw_b])
    else:
        n, q, y, x, r, ry, rx = sch.get_loops(conv)
    tile = row_tile(int(sch.get(x).extent), 12)
    xo, xi = sch.split(x, [None, tile])
    sch.reorder(n, q, y, xo, ry, rx, xi, r)
    # the tile channels-innermost in registers either way; an NCHW output is written back
    # with the columns innermost (contiguous rows of each channel)
    acc = register_tile(sch, conv, xo,
                         layout=(lambda nn, c, yy, xx: (nn, yy, xx, c)) if nchw_b else None)
    # channel blocks first: rows first measured 3-6% slower on MobileNetV2, and rows first only
    # where the conv before splits rows (c < h x w) made no difference
    sch.parallel(sch.fuse(n, q, y))
    sch.unroll(ry)
    sch.unroll(rx)
    sch.unroll(xi)
    vectorize_tail(sch, r, lanes)
    init = tile_init_and_writeback(sch, conv, ry, acc, vectorize_tail, lanes)
    schedule_rest(sch, lanes, threads, done={DWB_BLOCK, DWB_BLOCK + "_update",
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
    """Column stride of the depthwise conv (annotated by dwconv_te)."""
    ann = sch.get(conv).annotations
    try:
        return int(ann["prunec_stride"]) if "prunec_stride" in ann else 1
    except Exception:
        return 1


class Depthwise(Rule):
    """Depthwise conv2d and max pool on NCHW."""

    name = "depthwise"
    block = DW_BLOCK

    def schedule(self, sch, lanes, threads):
        schedule_dwconv(sch, lanes, threads)


class DepthwiseBlocked(Rule):
    """Depthwise conv2d on NCHW{b}c (its output NCHW{b}c or NCHW)."""

    name = "depthwise_nchwc"
    block = DWB_BLOCK

    def schedule(self, sch, lanes, threads):
        schedule_dwconv_blocked(sch, lanes, threads)

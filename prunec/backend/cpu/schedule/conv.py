"""Rule for the direct conv (compute/conv.py): packed-weight register tiles over output
channels or output columns, bands of padded rows, the fused epilogue."""

from __future__ import annotations

import logging
import math

from ..compute.common import PAD_BLOCK
from ..compute.conv import CONV_BLOCK, TAPS_BLOCK
from ..facts import row_tile
from ..intrinsics import even_lanes_intrin
from ..rule import Rule
from .common import (ann_int, has_block, inline_injective, loops_below, region_buffer,
                     register_tile, uneven, vectorize_tail)
from .rest import schedule_rest

_log = logging.getLogger(__name__)


def schedule_conv(sch, lanes, threads):
    # bias, BN, SiLU (x * sigmoid(x): two consumers of x) ... -> one epilogue block
    inline_injective(sch, keep={PAD_BLOCK})
    conv = sch.get_sblock(CONV_BLOCK)
    if has_block(sch, PAD_BLOCK):
        pad = sch.get_sblock(PAD_BLOCK)
    else:
        pad = None
    n, oc, oh, ow, ic, ry, rx = sch.get_loops(conv)
    ob = _block_factor(sch, conv)
    cols = ann_int(sch, conv, "prunec_cols")
    if cols:
        _schedule_conv_spatial(sch, conv, pad, ob, cols, lanes, threads)
        return
    ow_ext = int(sch.get(ow).extent)
    # accumulators: reg_n x (ob / lanes) vector registers; leave room for weights + broadcasts
    regs = 24 if lanes >= 16 else 12 if lanes == 8 else 24
    reg_n = (ann_int(sch, conv, "prunec_ow_tile")
             or row_tile(ow_ext, max(1, regs // max(1, ob // lanes))))
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
    acc = register_tile(sch, conv, owo, layout=lambda b, o, y, x: (b, y, x, o))
    outer = _parallel_outer(sch, n, band if band_rows else None, oh, oco, rows_first)
    sch.unroll(owi)
    sch.vectorize(oci)
    init = sch.decompose_reduction(conv, first)
    iloops = sch.get_loops(init)
    sch.vectorize(iloops[-1])
    aloops = sch.get_loops(acc)  # ..., owo, oc tile (ob), ow tile (reg_n)
    out_block = ann_int(sch, conv, "prunec_out_block")
    if out_block and loops_below(sch, aloops, owo) == 1:
        # a one-column tile (a 1x1 output: SE gates as convs): the tile is one channel run
        blk, lane = sch.split(aloops[-1], [None, out_block])
        sch.unroll(blk)
        sch.vectorize(lane)
    elif out_block:
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
    computes every output channel of those rows. Bands of up to 8 rows, at least 2 per thread,
    in a count the threads share evenly where one is possible (40 rows on 2 threads: 8 bands of
    5, not 5 of 8, which left one thread idle a fifth of the time)."""
    if pad is None:
        return 0
    inp, _ = conv_operands(sch, conv)
    if inp is None:
        return 0
    src = region_buffer(sch.get(pad).reads[0]) if sch.get(pad).reads else None
    if src is None or 4 * math.prod(int(d) for d in src.shape) < PAD_BAND_BYTES:
        return 0
    oh = int(sch.get(conv).iter_vars[2].dom.extent)  # (n, oc, oh, ow, ...), however split
    rows = [r for r in range(1, 9) if oh % r == 0 and oh // r >= 2 * threads]
    even = [r for r in rows if not uneven(oh // r, threads)]
    return max(even or rows, default=0)


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
    inp, wgt = conv_operands(sch, conv)
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
            vectorize_tail(sch, sch.get_loops(fill)[-1], lanes)
        except Exception as e:  # noqa: BLE001 - keep the guarded copy
            _log.debug("decompose_padding failed: %s", e)
        vectorize_tail(sch, sch.get_loops(pad)[-1], lanes)
    elif pad is not None:
        ploops = sch.get_loops(pad)
        sch.parallel(sch.fuse(*ploops[:3]))
        vectorize_tail(sch, sch.get_loops(pad)[-1], lanes)
    schedule_rest(sch, lanes, threads, done={CONV_BLOCK, PAD_BLOCK,
                                             sch.get(acc).name_hint, *done,
                                             sch.get(init).name_hint, CONV_BLOCK + "_update"})


def _schedule_conv_spatial(sch, conv, pad, ob, cols, lanes, threads):
    """Register tile of ob output channels x cols output columns (cols along the row, vectors
    along the row): per reduction step, ceil(cols / lanes) contiguous input loads and ob weight
    broadcasts feed ob x ceil(cols / lanes) FMAs; the tile is written back as row vectors."""
    n, oc, oh, ow, ic, ry, rx = sch.get_loops(conv)
    oco, oci = sch.split(oc, [None, ob])
    rows = ann_int(sch, conv, "prunec_rows")
    if rows > 1:
        # whole rows (pointwise convs): the tile is `rows` rows, one contiguous run whose fused
        # index (i // ow) * ow + i % ow simplifies back to i: plain vector loads and stores
        oh, ohi = sch.split(oh, [None, rows])
        owo, owi = sch.split(ow, [1, None])
        sch.reorder(owo, ohi)
        owi = sch.fuse(ohi, owi)
    else:
        owo, owi = sch.split(ow, [None, cols])
    # column tiles: rows first (at any thread count) when the conv reduces channels, where
    # channel blocks first read the whole input once per block of mr output channels, from L3
    # once it outgrows L2 (1 thread, Zen 3: YOLOv8n's 48->16 at 80x80 306 -> 238 us, 32->32
    # 428 -> 359); channel blocks first when it widens them, where rows first writes every
    # output plane at once (an AVX-512 Xeon: MobileNet's 16->96 at 112x112 2x slower so)
    ivs = sch.get(conv).iter_vars
    widens = int(ivs[1].dom.extent) > int(ivs[4].dom.extent)  # (n, oc, oh, ow, ic, ry, rx)
    rows_first = (_rows_first(sch, conv, threads) if rows > 1
                  else not widens and _rows_first(sch, conv, max(threads, 2)))
    band_rows = _pad_band_rows(sch, conv, pad, threads) if rows == 1 else 0
    if band_rows:
        band, oh = sch.split(oh, [None, band_rows])
        sch.reorder(n, band, oco, oh, owo, ic, ry, rx, oci, owi)
    else:
        sch.reorder(n, *((oh, oco) if rows_first else (oco, oh)), owo, ic, ry, rx, oci, owi)
    phases = has_block(sch, TAPS_BLOCK)
    if phases:  # a stride-2 conv: each tap's input columns into registers by shuffles
        sch.transform_layout(pad, ("write", 0), lambda b, i, y, x: (b, i, y, x // 2, x % 2))
        taps = sch.get_sblock(TAPS_BLOCK)
        sch.set_scope(taps, 0, "local")
        sch.compute_at(taps, rx)
        _, tl = sch.split(sch.get_loops(taps)[-1], [None, lanes])
        sch.tensorize(tl, even_lanes_intrin(lanes, "global"))
    acc = register_tile(sch, conv, owo)
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


def conv_operands(sch, conv):
    """(input buffer, packed weight buffer) the conv block reads. The weight is the 5-d buffer
    (ocb, C, kh, kw, ob) whose second dim is the whole reduction over input channels C; an
    NCHW{b}c input is 5-d too, but holds C / b channel blocks there."""
    ic = int(sch.get(conv).iter_vars[4].dom.extent)  # the block's axes: n, o, y, x, ic, ry, rx
    out = region_buffer(sch.get(conv).writes[0])
    inp = wgt = None
    for r in sch.get(conv).reads:
        buf = region_buffer(r)
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
    return int(conv_operands(sch, conv)[1].shape[-1])


class DirectConv(Rule):
    """Dense conv2d over the packed weight (groups = 1), NCHW or NCHW{b}c."""

    name = "conv2d"
    block = CONV_BLOCK

    def schedule(self, sch, lanes, threads):
        schedule_conv(sch, lanes, threads)

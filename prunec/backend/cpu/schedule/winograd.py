"""Rule for the Winograd stages (compute/winograd.py)."""

from __future__ import annotations

from ..compute.winograd import (CROP_BLOCK, STAGES, T_BLOCK, V_BLOCK, WINO_BLOCK, XB_BLOCK,
                                Y_BLOCK, Z_BLOCK)
from ..facts import wino_row_tiles
from ..rule import Rule
from .common import (ann_int, has_block, inline_injective, parts_to_even, region_buffer,
                     tile_init_and_writeback, vectorize_tail)
from .rest import schedule_rest


def schedule(sch, lanes, threads):
    """Schedules the Winograd PrimFunc; returns the names of the blocks it scheduled.

    The channel-blocked input and V over all tiles (parallel, vectorized over channels); then
    per (row of tiles, run of reg_n tiles, output channel block), parallel: the (m+2)^2 GEMM
    register tiles, the output transform and the fused epilogue. With one output channel block,
    the input side is computed per chunk too (one parallel region)."""
    yb = sch.get_sblock(Y_BLOCK)
    padded = has_block(sch, CROP_BLOCK)  # a row of tiles computed past the output's columns
    m = ann_int(sch, yb, "prunec_wino_m")
    nw = ann_int(sch, yb, "prunec_wino_nw")
    # bias, residual add, activation: one block. SiLU's x * sigmoid(x) reads the biased x
    # twice, so the bias add is inlined forward into both readers first (otherwise the chain
    # stops there and sigmoid and multiply each make a pass of their own)
    inline_injective(sch, keep=set(STAGES))
    mm = sch.get_sblock(WINO_BLOCK)
    ob = int(_u_buffer(sch, mm).shape[-1])
    # tiles of one tile row in the GEMM's register tile: the largest divisor of nw that fits
    # (28 accumulators on AVX-512, a whole 14-tile row x 2 vectors: 128@28 460 -> 423 us, 64@56
    # 358 -> 346 vs 24)
    reg_n = wino_row_tiles(nw, ob, lanes)[0]  # nw: as computed, padded where needed
    # Y (with its epilogue): n, o, y, x -> (o block, tile row, tile run) | (tile, yi, xi, oc)
    n, o, y, x = sch.get_loops(yb)
    oco, oci = sch.split(o, [None, ob])
    one_block = int(sch.get(oco).extent) == 1
    ty, yi = sch.split(y, [None, m])
    txo, txi, xi = sch.split(x, [None, reg_n, m])
    # which operand each thread should find in its own cache. Rows of tiles first: it reads the
    # V rows it computed itself (and the next layer the output rows it wrote), not the other
    # core's. With more output channels than tiles the transformed weight is the larger operand
    # (256@14, F2: 4.2 MB vs 0.8 MB of V), so channel blocks first. Interleaved, alone: 64@56
    # 361 vs 476 us rows first, 128@28 410 vs 523; 256@14 454 vs 575 channel blocks first
    if int(sch.get(oco).extent) * ob > nw * int(sch.get(ty).extent):
        sch.reorder(n, oco, ty, txo, yi, txi, xi, oci)
        chunk = sch.fuse(n, oco, ty, txo)
    else:
        sch.reorder(n, ty, txo, oco, yi, txi, xi, oci)
        chunk = sch.fuse(n, ty, txo, oco)
    sch.parallel(chunk)
    zb = sch.get_sblock(Z_BLOCK)
    sch.compute_at(zb, chunk)
    sch.compute_at(mm, chunk)
    sch.set_scope(zb, 0, "local")
    # one tile at a time (its m x m outputs unrolled: the A^T coefficients fold to constants)
    sch.reorder(txi, yi, xi, oci)
    sch.unroll(yi)
    sch.unroll(xi)
    _vec(sch, oci, lanes)
    # Z: (e1, j, p, o) under the chunk
    zl = sch.get_loops(zb)[-4:]
    sch.reorder(zl[2], zl[0], zl[1], zl[3])
    sch.unroll(zl[0])
    sch.unroll(zl[1])
    _vec(sch, zl[3], lanes)
    # GEMM: (e, p, o, k) -> e, k, p, o with the (p, o) tile in registers
    e, p, oo, k = sch.get_loops(mm)[-4:]
    sch.reorder(e, k, p, oo)
    acc = sch.cache_write(mm, 0, "local")
    sch.reverse_compute_at(acc, e)
    sch.set_scope(acc, 0, "local")
    sch.unroll(p)
    _vec(sch, oo, lanes)
    init = tile_init_and_writeback(sch, mm, k, acc, _vec, lanes)
    # V: (e, p, c) -> per row of tiles (parallel): its padded, channel-blocked input rows, then
    # per tile and channel vector T (columns) in registers and V. One parallel region instead of
    # two (the input pass had its own), at the cost of recopying 2 of every m + 2 rows.
    vb = sch.get_sblock(V_BLOCK)
    xbb = sch.get_sblock(XB_BLOCK)
    cv = int(region_buffer(sch.get(xbb).writes[0]).shape[-1])  # the blocked input's vector
    if one_block:
        # one output channel block: each chunk's V is read by its own GEMM only, so it is
        # computed right there, into a buffer that stays in this core's cache (V of 16 channels
        # at 80x80 is 920 KB: written and read back through a Xeon's L3 at ~20 GB/s per core, it
        # cost 16->16 at 80x80 133 -> 120 us, 16->16 at 40x40 40 -> 32, 32->32 at 40x40 78 -> 71)
        sch.compute_at(vb, chunk)
        ve, vp, vc = sch.get_loops(vb)[-3:]
        vco, vci = sch.split(vc, [None, cv])
        sch.reorder(vp, vco, ve, vci)
        outer = chunk
    else:
        ve, vp, vc = sch.get_loops(vb)
        vco, vci = sch.split(vc, [None, cv])
        vty, vtx = sch.split(vp, [None, nw])
        sch.reorder(vty, vtx, vco, ve, vci)
        runs = parts_to_even(int(sch.get(vty).extent), nw, threads)
        if runs > 1:
            # rows of tiles that leave a thread idle (5 on 2 threads: YOLOv8n's 20x20 and
            # 10x10 maps) are cut into runs of tiles; each run pads and blocks its own input
            # columns (2 halo columns copied twice)
            vtxo, vtx = sch.split(vtx, [runs, None])
            outer = sch.fuse(vty, vtxo)
        else:
            outer = vty
        sch.parallel(outer)
    sch.unroll(ve)
    sch.vectorize(vci)
    tb = sch.get_sblock(T_BLOCK)
    sch.compute_at(tb, vco)
    sch.set_scope(tb, 0, "local")
    tl = sch.get_loops(tb)[-3:]  # e1, r2, channels
    sch.unroll(tl[0])
    sch.unroll(tl[1])
    sch.vectorize(tl[2])
    sch.compute_at(xbb, outer)
    xl = sch.get_loops(xbb)
    xl = xl[[sch.get(lp).same_as(sch.get(outer)) for lp in xl].index(True) + 1:]
    if len(xl) == 4:  # channel block, row, column, channel (a single block has no loop)
        sch.reorder(xl[1], xl[0])
    sch.vectorize(xl[-1])
    epilogue = _epilogue_per_chunk(sch, yb, chunk, lanes, padded)
    return {*STAGES, sch.get(acc).name_hint, sch.get(init).name_hint, *epilogue}


def _epilogue_per_chunk(sch, yb, chunk, lanes, padded=False) -> list[str]:
    """The epilogue (bias, residual, activation) as a pass of its own over each chunk's output,
    right after the chunk's output transform, along output rows (whole vectors, contiguous in
    NCHW; padded: the row of tiles runs past the output's columns). Fused into the transform instead, it ran on channel vectors between the transform
    and its scattered stores, 15 cycles per vector of SiLU instead of ~7 (1 thread, Zen 3,
    interleaved: YOLOv8n's Winograd kernels 2-11% faster, the whole models 1-1.5%; ResNet-18's
    within 1%, ReLU-only epilogues up to 7% slower and residual ones up to 4% faster)."""
    cons = sch.get_consumers(yb)
    if len(cons) != 1:
        return []
    sch.reverse_compute_at(cons[0], chunk)
    last = sch.get_loops(cons[0])[-1]
    if padded and int(sch.get(last).extent) > lanes:
        # the chunk's columns run past the output's in the last chunk of a row: one vector at
        # a time under that test (the whole run as one masked vector, 36 floats of 48->48 at
        # 104x104, was 1.5x slower than the unpadded 2-tile chunks; this, 1.3x faster)
        _, inner = sch.split(last, [None, lanes])
        sch.vectorize(inner)
    else:
        vectorize_tail(sch, last, lanes)
    return [sch.get(cons[0]).name_hint]


def _u_buffer(sch, mm):
    for r in sch.get(mm).reads:
        buf = region_buffer(r)
        if len(buf.shape) == 4:
            return buf
    raise ValueError("packed Winograd weight not found")


def _vec(sch, loop, lanes):
    ext = int(sch.get(loop).extent)
    if ext > lanes and ext % lanes == 0:
        _, inner = sch.split(loop, [None, lanes])
        sch.unroll(_)
        sch.vectorize(inner)
    else:
        sch.vectorize(loop)


class Winograd(Rule):
    """The Winograd stages of a 3x3 stride-1 conv, then the rest of the function."""

    name = "winograd"
    block = Y_BLOCK
    hint = "; --no-winograd compiles it as a direct conv"

    def schedule(self, sch, lanes, threads):
        done = schedule(sch, lanes, threads)
        schedule_rest(sch, lanes, threads, done=done)

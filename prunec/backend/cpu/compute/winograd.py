"""Winograd convolution for 3x3 stride-1 convs on CPU: F(m x m, 3 x 3), m = 4 or 2.

A direct 3x3 conv costs 9 multiply-adds per output and input channel; ONNX Runtime's kernels
already run those near the FMA peak, so a direct conv cannot beat them. Winograd computes an
m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2 multiply-adds per channel pair:
4x fewer for m = 4, 2.25x for m = 2 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016). The cost moves into three cheap passes and a 4x (m=4) or 1.8x (m=2) larger
transformed weight:

  U[e, C, OC] = G g G^T          the weights, transformed once at compile time (numpy, float64)
  V[e, P, C]  = B^T d B          every input tile d of every channel (P tiles)
  M[e, P, OC] = V[e] @ U[e]      (m+2)^2 independent GEMMs: the FLOPs
  Y           = A^T M A          every output tile, then the fused epilogue (bias, add, ReLU)

The transforms are written as explicit sums over the nonzero matrix entries (no multiplications
by zero), vectorized over channels. The GEMM keeps a register tile of `reg_n` tiles x `ob`
output channels, like the direct conv's. Where it pays off is decided per layer by
`choose_tile` (weights small enough to stay cached, enough tiles to amortize the transforms);
results match the direct conv to float32 rounding (|err| ~1e-6 relative, m = 4)."""

from __future__ import annotations

import numpy as np

from ..facts import wino_row_tiles


WINO_BLOCK = "prunec_wino_gemm"


V_BLOCK = "prunec_wino_v"


Z_BLOCK = "prunec_wino_z"


Y_BLOCK = "prunec_wino_y"


XB_BLOCK = "prunec_wino_xb"


T_BLOCK = "prunec_wino_t"


CROP_BLOCK = "prunec_wino_crop"  # the output's columns of a padded row of tiles


# the stages of the Winograd PrimFunc (the GEMM is a reduction, the others spatial blocks)
STAGES = (XB_BLOCK, T_BLOCK, V_BLOCK, WINO_BLOCK, Z_BLOCK, Y_BLOCK)


# Lavin & Gray's matrices for correlation (what a conv layer computes): y = A^T[(G g) * (B^T d)]
_MATS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}


def matrices(m: int):
    """(B^T, G, A^T) of F(m, 3)."""
    return _MATS[m]


def transform_weight(w: np.ndarray, m: int, ob: int) -> np.ndarray:
    """OIHW 3x3 weights -> U packed as [e, OC / ob, C, ob] (e = the (m+2)^2 tile positions),
    so that the GEMM reads ob output channels of one input channel as one contiguous vector."""
    _, g, _ = matrices(m)
    oc, c = w.shape[:2]
    u = np.einsum("ak,ockl,bl->abco", g, w.astype(np.float64), g)  # [a, a, C, OC]
    a = m + 2
    u = u.reshape(a * a, c, oc // ob, ob).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(u, dtype=np.float32)


# Fewer tiles did not make the transforms cost more than they save: 1 thread (Zen 4), with SiLU,
# direct / F(2) / F(4) us: 64->64 at 8x8 46 / 29 / 20, at 4x4 14 / 9.6 / -, 128->128 at 10x10
# 266 / 141 / -, 32->32 at 20x20 - / 50 / 35 (2 threads, wall: 52 / 21-37), 16->16 at 8x8 5.7 / 5.0
# / 4.2. (It had been 36, which sent YOLOv8n's 20x20 convs to F(2) and its 10x10 convs direct.)
MIN_TILES = 4


def choose_tile(c: int, oc: int, oh: int, ow: int, lanes: int) -> int:
    """Output tile m for a 3x3 stride-1 conv, or 0 to keep it direct.

    The transformed weight is (m+2)^2 / 9 times the original and is streamed once per inference,
    so a layer whose weight is large next to its activations (ResNet's 512-channel 7x7 stage:
    9.4 MB of weights for 25 KB of input) only gets slower. Tiles must cover the output exactly
    and the channel counts fill whole vectors."""
    if c < 16 or oc % lanes or c % 4:
        return 0
    for m, limit in ((4, 2 << 20), (2, 9 << 19)):
        if oh % m or ow % m:
            continue
        tiles = (oh // m) * (ow // m)
        wbytes = (m + 2) ** 2 * c * oc * 4
        # m = 4 while its weight fits one core's L2 (2 MB); m = 2 up to 4.5 MB, measured with
        # 256 channels at 14x14 (4.2 MB: 454 us vs 656 direct); MIN_TILES tiles at least.
        # A tile row that no register tile of 2 or more divides (13 tiles at 52x52 on AVX2) is
        # computed padded (facts.wino_row_tiles): the output transform's loops do not reorder
        # around a 1-tile run
        ob = 2 * lanes if lanes >= 16 and oc % (2 * lanes) == 0 else lanes
        if ow // m > 1 and wino_row_tiles(ow // m, ob, lanes)[0] == 1:
            continue
        if tiles >= MIN_TILES and wbytes <= limit:
            return m
    return 0


def channel_vector(c: int, lanes: int) -> int:
    """Channels per vector of the blocked input: one register's worth where c allows (c is a
    multiple of 4, see choose_tile)."""
    return next(v for v in (16, 8, 4) if v <= max(lanes, 4) and c % v == 0)


def _select(index, table):
    """table[index] for a symbolic index into a Python list of expressions (folds once the
    loop over index is unrolled)."""
    from tvm import tirx

    out = table[-1]
    for k in range(len(table) - 2, -1, -1):
        out = tirx.if_then_else(index == k, table[k], out)
    return out


def _lincomb(coefs, terms):
    """sum(c * t) over the nonzero coefficients, with +-1 as plain adds/subtracts."""
    from tvm import tirx

    out = None
    for c, t in zip(coefs, terms):
        c = float(c)
        if c == 0.0:
            continue
        term = t if c == 1.0 else (-t if c == -1.0 else t * tirx.const(c, "float32"))
        out = term if out is None else out + term
    return out if out is not None else tirx.const(0.0, "float32")


def winograd_te(data, u, pads, m: int, lanes: int = 16):
    """NCHW conv (3x3, stride 1) as the Winograd stages; u is transform_weight's packed array."""
    from tvm import te, tirx

    bt, _, at = matrices(m)
    a = m + 2
    n, c, h, w = (int(x) for x in data.shape)
    e_ext, ocb, _, ob = (int(x) for x in u.shape)
    pt, pl, pb, pr = pads
    oh, ow = h + pt + pb - 2, w + pl + pr - 2
    nh = oh // m
    # tiles per row as computed: padded to a multiple of the GEMM's register tile where the
    # row has no divisor that fills it (the extra output columns are cropped at the end)
    nw = wino_row_tiles(ow // m, ob, lanes)[1]
    tiles = nh * nw
    assert n == 1 and e_ext == a * a and oh % m == 0 and ow % m == 0

    # the padded input, channel-blocked ([C / cv, rows, cols, cv]): the transform then reads
    # whole vectors of cv channels (gathering them across NCHW planes cost 36 gathers a tile)
    cv = channel_vector(c, lanes)
    hp, wp = nh * m + 2, nw * m + 2

    def xb_body(cb, y, x, ci):
        iy, ix = y - pt, x - pl
        inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        return tirx.if_then_else(inside, data[0, cb * cv + ci, tirx.max(tirx.min(iy, h - 1), 0),
                                              tirx.max(tirx.min(ix, w - 1), 0)],
                                 tirx.const(0.0, "float32"))

    xb = te.compute((c // cv, hp, wp, cv), xb_body, name=XB_BLOCK)

    def t_body(e1, r2, p, ch):  # (B^T d)[e1, r2]: columns first, shared by every e2
        ty, tx = p // nw, p % nw
        return _select(e1, [_lincomb(bt[k], [xb[ch // cv, ty * m + r1, tx * m + r2, ch % cv]
                                             for r1 in range(a)]) for k in range(a)])

    t = te.compute((a, a, tiles, c), t_body, name=T_BLOCK)

    def v_body(e, p, ch):  # (B^T d B)[e1, e2]
        return _select(e, [_lincomb(bt[e2], [t[e1, r2, p, ch] for r2 in range(a)])
                           for e1 in range(a) for e2 in range(a)])

    v = te.compute((a * a, tiles, c), v_body, name=V_BLOCK)
    k = te.reduce_axis((0, c), "k")
    mm = te.compute((a * a, tiles, ocb * ob),
                    lambda e, p, o: te.sum(v[e, p, k] * u[e, o // ob, k, o % ob], axis=k),
                    name=WINO_BLOCK)

    def z_body(e1, j, p, o):  # (M A)[e1, j]
        table = [_lincomb(at[jj], [mm[r * a + e2, p, o] for e2 in range(a)])
                 for r in range(a) for jj in range(m)]
        return _select(e1 * m + j, table)

    z = te.compute((a, m, tiles, ocb * ob), z_body, name=Z_BLOCK)

    def y_body(b, o, y, x):
        p = (y // m) * nw + x // m
        i, j = y % m, x % m
        return _select(i, [_lincomb(at[ii], [z[e1, j, p, o] for e1 in range(a)])
                           for ii in range(m)])

    y = te.compute((n, ocb * ob, oh, nw * m), y_body, name=Y_BLOCK,
                   attrs={"prunec_wino_m": m, "prunec_wino_nw": nw})
    if nw * m == ow:
        return y
    return te.compute((n, ocb * ob, oh, ow), lambda b, o, yy, x: y[b, o, yy, x], name=CROP_BLOCK)


def legalize(bb, data, weight, pads, lanes):
    """The conv as Winograd stages, or None when choose_tile keeps it direct or the weight is
    not a compile-time constant (its transform is done here, in numpy)."""
    from tvm import relax
    from tvm.ir.expr import Constant

    if not isinstance(weight, Constant):
        return None
    w = weight.value.numpy()
    n, c, h, wd = (int(x) for x in data.ty.shape)
    oc = w.shape[0]
    pt, pl, pb, pr = pads
    oh, ow = h + pt + pb - 2, wd + pl + pr - 2
    ocp = padded_out_channels(oc, lanes)
    m = choose_tile(c, ocp, oh, ow, lanes) if n == 1 and ocp else 0
    if not m:
        return None
    if ocp != oc:
        w = np.concatenate([w, np.zeros((ocp - oc,) + w.shape[1:], w.dtype)])
    ob = 2 * lanes if lanes >= 16 and ocp % (2 * lanes) == 0 else lanes
    u = relax.const(transform_weight(w, m, ob))
    out = bb.call_te(winograd_te, data, u, tuple(pads), m, lanes,
                     primfunc_name_hint="prunec_winograd")
    if ocp == oc:
        return out
    from tvm import topi

    return bb.call_te(topi.strided_slice, bb.emit(out), [0, 0, 0, 0], [n, oc, oh, ow],
                      primfunc_name_hint="prunec_wino_channels")


def padded_out_channels(oc: int, lanes: int) -> int:
    """Output channels the Winograd GEMM computes: oc rounded up to whole vectors, zero weights
    in the padding (cropped after), when that adds at most half of oc; else 0. A 96 -> 24 conv
    at 120x120 (PP-OCRv4's detector head) ran 6.9 ms direct, ONNX Runtime's 7.0."""
    ocp = -(-oc // lanes) * lanes
    return ocp if 2 * ocp <= 3 * oc else 0

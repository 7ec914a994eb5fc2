"""What the CPU target is: vector width, register tile sizes, thread count, window arithmetic.
Everything below (computes, schedules) asks here rather than reading the target itself."""

from __future__ import annotations


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


def channel_block(oc: int, lanes: int) -> int:
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


def wino_row_tiles(nw: int, ob: int, lanes: int) -> tuple[int, int]:
    """(tiles per register tile, tiles computed per row) of the Winograd GEMM: its
    accumulator registers (28 of AVX-512's 32, 12 of AVX2's 16, 24 of NEON's 32; ob / lanes
    vectors per tile), a row of tiles padded as padded_row_tile says."""
    regs = 28 if lanes >= 16 else 12 if lanes == 8 else 24
    return padded_row_tile(nw, max(1, regs // max(1, ob // lanes)))


def conv_row_tile(ow: int, ob: int, lanes: int) -> tuple[int, int]:
    """(columns, computed width) of the channel-vectorized direct conv's register tile: ob / lanes
    vectors per output column, 12 accumulator registers on AVX2, 24 on AVX-512 and NEON; the
    row padded as padded_row_tile says."""
    regs = 24 if lanes >= 16 else 12 if lanes == 8 else 24
    return padded_row_tile(ow, max(1, regs // max(1, ob // lanes)))


def padded_row_tile(ow: int, cap: int) -> tuple[int, int]:
    """(tile, computed width) of a row of ow outputs in register tiles of at most cap.

    A row whose largest divisor that fits is under half of cap (13, 26 and 52 columns in 12
    registers: 1, 2 and 4 accumulators, a tile bound by the FMA latency at ~6 GMAC/s) is
    computed padded to a multiple of a tile of at least half of cap, wasting the fewest columns
    (13 -> 7 x 2, 26 -> 9 x 3, 52 -> 9 x 6); the extra ones are dropped at the write-back."""
    best = row_tile(ow, cap)
    if best >= min(ow, cap // 2):
        return best, ow
    t = min(range(max(1, cap // 2), cap + 1), key=lambda t: (-(-ow // t) * t, -t))
    return t, -(-ow // t) * t


def row_tile(ow: int, cap: int) -> int:
    """Largest divisor of ow not above cap (output columns kept in registers)."""
    for r in range(min(cap, ow), 0, -1):
        if ow % r == 0:
            return r
    return 1


def threads(target) -> int:
    """Worker threads the schedules parallelize for (the target's num-cores)."""
    return int(target.attrs.get("num-cores", 1) or 1)

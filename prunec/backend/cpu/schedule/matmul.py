"""Rule for the packed matrix product (compute/matmul.py): a register tile of rows x one panel
of columns, the panel (K x 2 vectors, contiguous) read from cache for every row tile."""

from __future__ import annotations

from ..compute.conv import tile_registers
from ..compute.matmul import MATMUL_BLOCK, MATMUL_CROP
from ..rule import Rule
from .common import has_block, inline_injective, region_buffer, register_tile, uneven
from .rest import schedule_rest


def row_tile(lead: list[int], lanes: int, panel: int) -> int:
    """Rows per register tile: rows x (panel / lanes) accumulators in two thirds of conv's
    budget (16 of AVX-512's 32 registers, 8 of AVX2's 16), the rest for the panel's vectors and
    the broadcast inputs. lead: the row dims (fused into one loop); a tile must be a box in them
    (its write-back region is, and one reaching into the next tile's rows wrote garbage there)."""
    cap = max(1, tile_registers(lanes) * 2 // 3 // max(1, panel // lanes))
    rows = 1
    for d in lead:
        rows *= d
    return next(m for m in range(min(cap, rows), 0, -1) if rows % m == 0 and _box(m, lead))


def _box(m: int, lead: list[int]) -> bool:
    """Whether m consecutive rows of the fused row loop, starting at a multiple of m, are a box
    of the lead dims: m is whole trailing dims times a divisor of the next one."""
    inner = 1
    for d in reversed(lead):
        if m % inner == 0 and (inner * d) % m == 0:
            return True
        inner *= d
    return False


def schedule_matmul(sch, lanes, threads):
    inline_injective(sch)  # bias broadcasts; the crop stays (a block with a consumer inlines)
    mm = sch.get_sblock(MATMUL_BLOCK)
    *lead, n, k = sch.get_loops(mm)
    panel = int(region_buffer(sch.get(mm).reads[1]).shape[-1])  # the packed weight's
    mr = row_tile([int(sch.get(lp).extent) for lp in lead], lanes, panel)
    rows = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    mo, mi = sch.split(rows, [None, mr])
    no, ni = sch.split(n, [None, panel])
    # panels outermost (and parallel): a panel stays in L2 while every row tile reads it
    sch.reorder(no, mo, k, mi, ni)
    acc = register_tile(sch, mm, mo)
    if uneven(int(sch.get(no).extent), threads):
        # panels x row tiles, each thread a contiguous run (still a panel at a time): 5 panels
        # on 2 threads left one idle for a fifth of the time (ViT pruned to 144 columns). Not
        # always: the fused index cost 1-5% at one thread on 196 x 192 x 768
        sch.parallel(sch.fuse(no, mo))
    else:
        sch.parallel(no)
    finish_tile(sch, mm, acc, k, mi, ni, MATMUL_CROP, lanes, threads)


def finish_tile(sch, mm, acc, k, mi, ni, crop, lanes, threads, scheduled=()):
    """The register tile's inner loops (rows mi unrolled, panel columns ni vectorized), its
    zero-init split out at k, the crop of a padded product inlined into its epilogue, and
    every other block but those named in `scheduled` by the generic rules."""
    sch.unroll(mi)
    sch.vectorize(ni)
    init = sch.decompose_reduction(mm, k)
    for b in (init, acc):
        loops = sch.get_loops(b)
        sch.unroll(loops[-2])
        sch.vectorize(loops[-1])
    done = {sch.get(b).name_hint for b in (mm, init, acc)} | set(scheduled)
    if has_block(sch, crop):
        try:  # into the epilogue that reads it, when there is one
            sch.compute_inline(sch.get_sblock(crop))
        except Exception:  # noqa: BLE001 - the crop is the function's output: a copy
            pass
    schedule_rest(sch, lanes, threads, done)


class Matmul(Rule):
    """Products of several rows by a constant weight (compute/matmul.py)."""

    name = "matmul"
    block = MATMUL_BLOCK

    def schedule(self, sch, lanes, threads):
        schedule_matmul(sch, lanes, threads)

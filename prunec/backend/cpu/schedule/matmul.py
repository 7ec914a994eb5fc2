"""Rule for the packed matrix product (compute/matmul.py): a register tile of rows x one panel
of columns, the panel (K x 2 vectors, contiguous) read from cache for every row tile."""

from __future__ import annotations

from ..compute.conv import tile_registers
from ..compute.matmul import MATMUL_BLOCK, MATMUL_CROP
from ..rule import Rule
from .common import has_block, inline_injective, region_buffer, register_tile
from .rest import schedule_rest


def row_tile(rows: int, lanes: int, panel: int) -> int:
    """Rows per register tile, a divisor of rows: rows x (panel / lanes) accumulators in two
    thirds of conv's budget (16 of AVX-512's 32 registers, 8 of AVX2's 16), the rest for the
    panel's vectors and the broadcast inputs."""
    cap = max(1, tile_registers(lanes) * 2 // 3 // max(1, panel // lanes))
    return next(m for m in range(min(cap, rows), 0, -1) if rows % m == 0)


def schedule_matmul(sch, lanes, threads):
    inline_injective(sch)  # bias broadcasts; the crop stays (a block with a consumer inlines)
    mm = sch.get_sblock(MATMUL_BLOCK)
    *lead, n, k = sch.get_loops(mm)
    panel = int(region_buffer(sch.get(mm).reads[1]).shape[-1])  # the packed weight's
    rows = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    mr = row_tile(int(sch.get(rows).extent), lanes, panel)
    mo, mi = sch.split(rows, [None, mr])
    no, ni = sch.split(n, [None, panel])
    # panels outermost (and parallel): a panel stays in L2 while every row tile reads it
    sch.reorder(no, mo, k, mi, ni)
    acc = register_tile(sch, mm, mo)
    sch.parallel(no)
    sch.unroll(mi)
    sch.vectorize(ni)
    init = sch.decompose_reduction(mm, k)
    for b in (init, acc):
        loops = sch.get_loops(b)
        sch.unroll(loops[-2])
        sch.vectorize(loops[-1])
    done = {sch.get(b).name_hint for b in (mm, init, acc)}
    if has_block(sch, MATMUL_CROP):
        try:  # into the epilogue that reads it, when there is one
            sch.compute_inline(sch.get_sblock(MATMUL_CROP))
        except Exception:  # noqa: BLE001 - the crop is the function's output: a copy
            pass
    schedule_rest(sch, lanes, threads, done)


class Matmul(Rule):
    """Products of several rows by a constant weight (compute/matmul.py)."""

    name = "matmul"
    block = MATMUL_BLOCK

    def schedule(self, sch, lanes, threads):
        schedule_matmul(sch, lanes, threads)

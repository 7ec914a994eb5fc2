"""Rule for products of two activations (compute/bmm.py): per batch (head), a register tile of
rows x one panel of columns; each panel is packed inside the parallel loop that uses it, so it
is still in L1 when the row tiles read it."""

from __future__ import annotations

from ..compute.bmm import BMM_BLOCK, BMM_CROP, BMM_PACK
from ..rule import Rule
from .common import inline_injective, parts_to_even, region_buffer, register_tile
from .elementwise import schedule_block
from .matmul import finish_tile, row_tile


def schedule_bmm(sch, lanes, threads):
    inline_injective(sch)  # transposes/reshapes of x read in place; the pack stays (_keep)
    mm = sch.get_sblock(BMM_BLOCK)
    *batch, m, n, k = sch.get_loops(mm)
    panel = int(region_buffer(sch.get(mm).reads[1]).shape[-1])
    mr = row_tile([int(sch.get(m).extent)], lanes, panel)
    mo, mi = sch.split(m, [None, mr])
    no, ni = sch.split(n, [None, panel])
    sch.reorder(*batch, no, mo, k, mi, ni)
    tasks = int(sch.get(no).extent)
    for b in batch:
        tasks *= int(sch.get(b).extent)
    # (head, panel) tasks that leave a thread idle (a pruned ViT's P V: 3 heads x 3 panels on 2
    # threads) are cut into runs of row tiles, each packing the panel again (k x panel copies
    # against rows x k x panel products)
    split = parts_to_even(tasks, int(sch.get(mo).extent), threads)
    lead = [no]
    if split > 1:
        mos, mo = sch.split(mo, [split, None])
        lead.append(mos)
    acc = register_tile(sch, mm, mo)
    outer = sch.fuse(*batch, *lead) if len(batch) + len(lead) > 1 else no
    sch.parallel(outer)
    pack = sch.get_sblock(BMM_PACK)
    try:  # the panel this task reads, packed by this task
        sch.compute_at(pack, outer)
        sch.vectorize(sch.get_loops(pack)[-1])
    except Exception:  # noqa: BLE001 - a broadcast operand's panel is shared: packed up front
        schedule_block(sch, pack, lanes)
    finish_tile(sch, mm, acc, k, mi, ni, BMM_CROP, lanes, threads, scheduled=[BMM_PACK])


class Bmm(Rule):
    """Products whose second operand is computed at run time (compute/bmm.py)."""

    name = "bmm"
    block = BMM_BLOCK

    def schedule(self, sch, lanes, threads):
        schedule_bmm(sch, lanes, threads)

"""Rule for the last-axis softmax (compute/softmax.py): rows in parallel, every pass of a row
(partial maxima, max, exp, partial sums, sum, reciprocal, scale) computed under the row's loop
while the row is in L1, each chunk of V elements one vector operation."""

from __future__ import annotations

from ..compute.softmax import (PART_MAX, PART_SUM, ROW_EXP, ROW_MAX, ROW_RCP, ROW_SOFTMAX,
                               ROW_SUM)
from ..rule import Rule
from .common import inline_injective, region_buffer
from .rest import schedule_rest


def schedule_row_softmax(sch, lanes, threads):
    inline_injective(sch)  # a mask or scale added before the softmax, read in place
    out = sch.get_sblock(ROW_SOFTMAX)
    v = int(region_buffer(sch.get(sch.get_sblock(PART_MAX)).writes[0]).shape[-1])
    *rows, k = sch.get_loops(out)
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    sch.parallel(row)
    _, vi = sch.split(k, [None, v])
    sch.vectorize(vi)
    for name in (ROW_RCP, ROW_SUM, PART_SUM, ROW_EXP, ROW_MAX, PART_MAX):  # consumers first
        sch.compute_at(sch.get_sblock(name), row)
    _, vi = sch.split(sch.get_loops(sch.get_sblock(ROW_EXP))[-1], [None, v])
    sch.vectorize(vi)
    # lanes of v accumulate chunk after chunk (not decomposed: the init is a condition on the
    # chunk loop, outside the vector; a decomposed block under the row loop failed the next
    # block's compact-dataflow check)
    for name in (PART_MAX, PART_SUM):
        b = sch.get_sblock(name)
        below = sch.get_loops(b)[loops_below_index(sch, b, row):]
        if len(below) == 2:
            sch.reorder(below[1], below[0])
        sch.vectorize(below[0])
    done = {PART_MAX, ROW_MAX, ROW_EXP, PART_SUM, ROW_SUM, ROW_RCP, ROW_SOFTMAX}
    schedule_rest(sch, lanes, threads, done)


def loops_below_index(sch, block, loop) -> int:
    """Index, in sch.get_loops(block), of the first loop below `loop`."""
    at = sch.get(loop)
    loops = sch.get_loops(block)
    return next(k for k, lp in enumerate(loops) if sch.get(lp).same_as(at)) + 1


class RowSoftmax(Rule):
    """Softmax over the last axis (compute/softmax.py)."""

    name = "softmax"
    block = ROW_SOFTMAX

    def schedule(self, sch, lanes, threads):
        schedule_row_softmax(sch, lanes, threads)

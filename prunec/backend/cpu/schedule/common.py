"""Schedule steps shared by the rules: finding blocks, inlining, register tiles and their
write-back with the fused epilogue, vectorizing a loop's tail."""

from __future__ import annotations

from ..compute.common import KEEP_SUFFIX


def has_block(sch, name):
    try:
        sch.get_sblock(name)
        return True
    except Exception:
        return False


def blocks(sch):
    """Top-level blocks of the function, in order."""
    from tvm import s_tir  # noqa: F401

    root = sch.get_sblock("root")
    return sch.get_child_blocks(root)


def is_reduction(sch, block) -> bool:
    return any(iv.iter_type == 2 for iv in sch.get(block).iter_vars)  # 2 = CommReduce


def inline_injective(sch, keep=()):
    """Inline every spatial block that can be inlined (pads, reshapes, bias broadcasts)."""
    changed = True
    while changed:
        changed = False
        for b in blocks(sch):
            name = sch.get(b).name_hint
            if name in keep or name.endswith(KEEP_SUFFIX) or is_reduction(sch, b):
                continue
            try:
                sch.compute_inline(b)
                changed = True
                break
            except Exception:
                continue


def register_tile(sch, block, loop, layout=None):
    """Accumulate block's output tile in a local buffer (registers once unrolled), optionally
    re-laid out, written back under `loop` with the elementwise epilogue fused into the write."""
    acc = sch.cache_write(block, 0, "local")
    if layout is not None:
        sch.transform_layout(block, ("write", 0), layout)
    sch.reverse_compute_at(acc, loop)
    epilogue_into(sch, acc)
    return acc


def tile_init_and_writeback(sch, block, loop, acc, vectorize, lanes):
    """Split the zero-init of block's register tile out at reduction `loop`; the init and the
    tile's write-back (acc) each unroll their second-innermost loop and vectorize the innermost
    with vectorize(sch, loop, lanes). Returns the init block."""
    init = sch.decompose_reduction(block, loop)
    for b in (init, acc):
        loops = sch.get_loops(b)
        sch.unroll(loops[-2])
        vectorize(sch, loops[-1], lanes)
    return init


def epilogue_into(sch, producer_block):
    """Reverse-inline the chain of elementwise consumers into producer_block (which must be a
    spatial block, e.g. a cache-write copy)."""
    while True:
        cons = sch.get_consumers(producer_block)
        if len(cons) != 1:
            return
        try:
            sch.reverse_compute_inline(cons[0])
        except Exception:
            return


def ann_int(sch, block, key) -> int:
    ann = sch.get(block).annotations
    try:
        return int(ann[key]) if key in ann else 0
    except Exception:
        return 0


def region_buffer(region):
    return getattr(region, "buffer", None) or region.source  # 0.27 calls it source


def vectorize_tail(sch, loop, lanes):
    ext = int(sch.get(loop).extent)
    if ext % lanes == 0 and ext > lanes:
        _, inner = sch.split(loop, [None, lanes])
        sch.vectorize(inner)
    elif ext <= 64:
        sch.vectorize(loop)


def loops_below(sch, loops, loop) -> int:
    """How many of `loops` (a block's, outermost first) lie below `loop`: a block moved under
    `loop` (reverse_compute_at, a register tile's write-back) gets one per axis longer than 1,
    none for a one-element tile (1x1 outputs: SE gates as convs, pools of a 1x1 map)."""
    at = sch.get(loop)
    for k, lp in enumerate(loops):
        if sch.get(lp).same_as(at):
            return len(loops) - k - 1
    raise ValueError("the loop is not above the block")


def uneven(parts: int, threads: int) -> bool:
    """Whether `parts` equal tasks on `threads` threads leave them idle more than a sixteenth
    of the time (5 on 2: a fifth; 17 on 2: 6%, under the cost of splitting finer)."""
    return threads > 1 and -(-parts // threads) * threads * 16 > parts * 17


def parts_to_even(tasks: int, extent: int, threads: int) -> int:
    """How many parts (a divisor of `extent`, a loop inside each task) to cut each of `tasks`
    tasks into so that they share the threads evenly: 1 when they already do or no divisor
    helps. 9 tasks over 2 row tiles on 2 threads: 2 (18 tasks)."""
    if not uneven(tasks, threads):
        return 1
    return next((d for d in range(2, extent + 1)
                 if extent % d == 0 and not uneven(tasks * d, threads)), 1)

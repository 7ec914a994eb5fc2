"""Concatenations along the innermost axis cut into one contiguous copy per source: a block
schedule (zero_copy.py turns most channel concats into views before they get here)."""

from __future__ import annotations

import math


def concat_bounds(sch, block, ext: int) -> list[int]:
    """Constant points c in (0, ext) where the block's value switches source along its innermost
    axis (conditions c <= x, x < c ... of a concatenation along that axis), sorted."""
    from tvm import tirx

    var = sch.get(block).iter_vars[-1].var
    found: set[int] = set()

    def visit(node):
        if isinstance(node, (tirx.LE, tirx.LT, tirx.GE, tirx.GT)):
            # the first index of the upper side: c+1 for x <= c, x > c, c < x, c >= x; else c
            for x, c, after in ((node.a, node.b, (tirx.LE, tirx.GT)),
                                (node.b, node.a, (tirx.LT, tirx.GE))):
                if isinstance(x, tirx.Var) and x.same_as(var) and isinstance(c, tirx.IntImm):
                    found.add(int(c.value) + (1 if isinstance(node, after) else 0))
    from tvm.ir.expr import Expr as PrimExpr

    def walk(node, depth=0):  # this wheel exposes no TIR visitor to Python
        if depth > 64:
            return
        visit(node)
        for field in ("a", "b", "value", "condition", "true_value", "false_value"):
            child = getattr(node, field, None)
            if isinstance(child, PrimExpr):
                walk(child, depth + 1)
        for field in ("args", "indices"):
            for child in getattr(node, field, None) or ():
                if isinstance(child, PrimExpr):
                    walk(child, depth + 1)
    body = sch.get(block).body
    if isinstance(body, tirx.BufferStore):
        walk(body.value)
    return sorted(c for c in found if 0 < c < ext)


def schedule_concat_pieces(sch, block, spatial, ext: int, lanes: int) -> bool:
    """A concatenation along the innermost axis (YOLOv8's head: 40x40, 20x20 and 10x10 anchors
    flattened and joined, then split into box and class rows) is cut into one loop per source, in
    vectors that do not straddle a cut. Inside each piece the select chain and the div/mod of
    the flattening fold away and the copy is contiguous: 164 -> 42 us on the pruned YOLOv8n,
    where the one vectorized loop had evaluated every source's index for every element."""
    cuts = concat_bounds(sch, block, ext)
    if not cuts:
        return False
    g = 0
    for c in cuts + [ext]:
        g = math.gcd(g, c)
    # widest vector that divides every piece: whole vectors, else multiples of 4 lanes
    v = next((w for w in range(2 * lanes, 3, -1) if g % w == 0 and (w % lanes == 0 or w % 4 == 0)),
             0)
    if not v:
        return False
    outer, inner = sch.split(spatial[-1], [None, v])
    fo = sch.fuse(*spatial[:-1]) if len(spatial) > 2 else spatial[0]
    if int(sch.get(fo).extent) > 1:
        sch.parallel(fo)
    bounds = [c // v for c in cuts]
    sizes = [b - a for a, b in zip([0] + bounds[:-1], bounds)]
    pieces = sch.loop_partition(outer, sizes + [None])
    for piece in pieces:  # each piece has its own copy of the inner loop
        for child in sch.get_child_blocks(piece):
            loops = sch.get_loops(child)
            if loops and int(sch.get(loops[-1]).extent) == v:
                try:
                    sch.vectorize(loops[-1])
                except Exception:  # noqa: BLE001 - already vectorized through a shared loop
                    pass
    return True

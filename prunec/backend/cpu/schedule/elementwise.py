"""The generic block schedule: reductions keep a vector of outputs in registers, spatial blocks
(elementwise, copies, transposes) vectorize their innermost dim and parallelize the rest."""

from __future__ import annotations

from .common import epilogue_into
from .concat import schedule_concat_pieces


def _reduce_tile(ext: int, lanes: int) -> int:
    """Output elements kept in registers by a generic reduction: a few vectors (independent
    accumulators hide FMA latency), else one vector, else the whole short row."""
    for v in (4 * lanes, 2 * lanes, lanes):
        if ext % v == 0 and ext >= v:
            return v
    v = _inner_vector(ext, lanes)  # e.g. 60 for the 2100 anchors of a YOLO head at 320
    if v:
        return v
    for v in (lanes // 2, 4):
        if v >= 4 and ext % v == 0 and ext >= v:
            return v
    return ext if ext <= 64 else 1


def _inner_vector(ext: int, lanes: int) -> int:
    """Vector length for an innermost loop of extent ext: the whole loop when short, else the
    largest divisor in [lanes, 4 * lanes]; 0 when neither fits."""
    if lanes // 2 <= ext <= 4 * lanes:
        return ext
    for v in range(4 * lanes, lanes - 1, -1):
        if ext % v == 0:
            return v
    return 0


def schedule_block(sch, block, lanes):
    loops = sch.get_loops(block)
    if not loops:
        return
    iv = sch.get(block).iter_vars
    if len(iv) != len(loops):
        return  # already transformed
    spatial = [lp for lp, v in zip(loops, iv) if v.iter_type == 0]
    reduce = [lp for lp, v in zip(loops, iv) if v.iter_type == 2]
    if not spatial:
        return
    inner = spatial[-1]
    ext = int(sch.get(inner).extent)
    if reduce:
        # keep a vector of outputs in registers while reducing: S.., R.., s_inner
        v = _reduce_tile(ext, lanes)
        if v > 1:
            so, si = sch.split(inner, [None, v]) if v != ext else (None, inner)
            order = spatial[:-1] + ([so] if so is not None else []) + reduce + [si]
            sch.reorder(*order)
            acc = sch.cache_write(block, 0, "local")
            anchor = order[len(spatial) - 1 + (1 if so is not None else 0) - 1] \
                if len(spatial) - 1 + (1 if so is not None else 0) > 0 else None
            if anchor is not None:
                sch.reverse_compute_at(acc, anchor)
                epilogue_into(sch, acc)
            outer = spatial[:-1] + ([so] if so is not None else [])
            if outer:
                sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
            sch.vectorize(si)
            init = sch.decompose_reduction(block, reduce[0])
            sch.vectorize(sch.get_loops(init)[-1])
            if anchor is not None:
                al = sch.get_loops(acc)
                sch.vectorize(al[-1])
            return
        if len(spatial) > 1:
            sch.parallel(sch.fuse(*spatial[:-1]) if len(spatial) > 2 else spatial[0])
        return
    if len(spatial) > 1 and schedule_concat_pieces(sch, block, spatial, ext, lanes):
        return
    # spatial-only (copies, concat/split, transposes, elementwise): vectorize the innermost
    # dim and parallelize the rest, rather than vectorizing a fused index (its per-lane int64
    # div/mod by the dim sizes is scalarized by LLVM)
    v = _inner_vector(ext, lanes)
    if v and len(spatial) > 1:
        outer = spatial[:-1]
        if v != ext:
            o, i = sch.split(inner, [None, v])
            outer = outer + [o]
        else:
            i = inner
        fo = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        if int(sch.get(fo).extent) > 1:
            sch.parallel(fo)
        sch.vectorize(i)
        return
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    total = int(sch.get(fused).extent)
    if total >= lanes * 4 and total % lanes == 0:
        o, i = sch.split(fused, [None, lanes])
        sch.parallel(o)
        sch.vectorize(i)
    elif total > 1:
        sch.parallel(fused)

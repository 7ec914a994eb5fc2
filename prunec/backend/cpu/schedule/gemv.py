"""Matrix-vector products (classifier heads) streamed row by row: a block schedule."""

from __future__ import annotations


GEMV_ROWS = 4  # weight rows per step of a matrix-vector product (see schedule_gemv)


def gemv_shape(sch, block):
    """(K, N) when block is y[n] (+)= x[k] * W[k, n] over a single row of outputs with the weight
    rows contiguous in n (a classifier head: 1280 x 1000 in MobileNetV2), else None."""
    iv = sch.get(block).iter_vars
    spatial = [v for v in iv if v.iter_type == 0]
    reduce = [v for v in iv if v.iter_type == 2]
    if len(reduce) != 1 or not spatial or any(int(v.dom.extent) != 1 for v in spatial[:-1]):
        return None
    j, k = spatial[-1].var, reduce[0].var
    for r in sch.get(block).reads:
        idx = [rg.min for rg in r.region]
        if len(idx) >= 2 and idx[-1].same_as(j) and idx[-2].same_as(k):
            return int(reduce[0].dom.extent), int(spatial[-1].dom.extent)
    return None


def schedule_gemv(sch, block, lanes, threads) -> bool:
    """Matrix-vector product streamed row by row: the reduction is split into `parts` runs of
    contiguous weight rows (rfactor), each accumulating the whole output row in an L1-resident
    partial sum, then the partials are added. The generic tile (a few output
    vectors down all K rows) read the weight in short strided pieces and ran at ~8 GB/s.
    GEMV_ROWS weight rows are streamed side by side, each partial-sum vector loaded and stored
    once per group: the head's weight comes from memory in the model (not from cache), and
    four concurrent streams keep more misses in flight than one (MobileNetV2's 1280x1000 head
    in the model: 115 -> 55 us at 2 threads, 155 -> 123 us at 1)."""
    shape = gemv_shape(sch, block)
    if shape is None:
        return False
    k_ext, n_ext = shape
    v = next((w for w in (lanes, lanes // 2, 4) if w >= 4 and n_ext % w == 0), 0)
    if k_ext < 128 or n_ext < 4 * lanes or not v:
        return False
    parts = next(p for p in (4 * threads, 2 * threads, threads, 1) if k_ext % p == 0)
    loops = sch.get_loops(block)
    ko, ki = sch.split(loops[-1], [parts, None])
    sch.rfactor(ko, 0)  # the partial-sum block stays under these loops: (unit..., n, ko, ki)
    rf = sch.get_sblock(sch.get(block).name_hint + "_rf")
    rl = sch.get_loops(rf)  # its own nest: (unit..., n, ko, ki)
    n, ko, ki = rl[-3:]
    rows = next(r for r in (GEMV_ROWS, 2, 1) if (k_ext // parts) % r == 0)
    kio, kii = sch.split(ki, [None, rows])
    sch.reorder(ko, kio, n, kii)
    sch.parallel(sch.fuse(*rl[:-3], ko) if len(rl) > 3 else ko)
    no, nv = sch.split(n, [None, v])
    sch.reorder(no, kii, nv)
    sch.unroll(kii)
    sch.vectorize(nv)
    init = sch.decompose_reduction(rf, kio)
    sch.vectorize(sch.get_loops(init)[-1])
    # the final sum over the parts, vectorized along n (a reduction block: the epilogue, e.g.
    # the bias, stays a block of its own and gets the generic schedule)
    floops = sch.get_loops(block)  # (unit..., n, ko)
    _, fv = sch.split(floops[-2], [None, v])
    sch.vectorize(fv)
    return True

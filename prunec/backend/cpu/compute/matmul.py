"""Matrix products of several rows by a constant weight (Gemm/MatMul layers: a recognizer's
class head, an LSTM's input projection over all time steps): the weight packed into column
panels, zero-padded to whole panels, so that the schedule (schedule/matmul.py) keeps a register
tile of rows x panel columns and reads each panel from cache for every row tile."""

from __future__ import annotations

from .common import static_shape

MATMUL_BLOCK = "prunec_matmul"
MATMUL_CROP = "prunec_matmul_crop"  # the real columns of a padded product

# below this many rows a product streams its weight once per row anyway: gemv.py's schedule
MIN_ROWS = 2


def panel_width(n: int, lanes: int) -> int:
    """Columns per panel: two vectors (a 4-8 row x 2 vector tile fills half the registers), or
    one where that saves at least a sixteenth of the padded columns (a pruned 144 on AVX-512:
    9 x 16 rather than 5 x 32, whose zero columns were 11% of the work: 196 x 544 x 144 at one
    thread 300 -> 267 us). Not for less: a one-vector tile reuses each loaded weight vector
    half as often (a 6625-class head, 0.2% fewer columns, ran 10% slower)."""
    if n < 2 * lanes:
        return lanes
    wide, narrow = -(-n // (2 * lanes)) * 2 * lanes, -(-n // lanes) * lanes
    return lanes if (wide - narrow) * 16 >= wide else 2 * lanes


def _is_constant(bb, expr) -> bool:
    """A constant, or a one-input layout op (the Gemm importer's permute_dims, legalized or
    not) of one: packed at compile time by fold_weight_transforms, never per call."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    for _ in range(4):
        if isinstance(expr, tvm.ir.expr.Constant):
            return True
        if isinstance(expr, relax.Var):
            expr = bb.lookup_binding(expr)
            continue
        if not isinstance(expr, relax.Call):
            return False
        args = expr.args[1].fields if expr.op.same_as(call_tir) else expr.args
        if len(args) != 1:
            return False
        expr = args[0]
    return False


def legalize_matmul(bb, call, lanes):
    """x[..., M, K] @ w[K, N] with w constant, f32, at least MIN_ROWS rows in all: our packed
    product; a second operand computed at run time (attention): bmm.py's; anything else (one
    row, other dtypes): TVM's default."""
    from .bmm import legalize_bmm

    out = _packed(bb, call, lanes)
    if out is None:
        out = legalize_bmm(bb, call, lanes)
    if out is None:
        import tvm

        return tvm.ir.Op.get("relax.matmul").get_attr("FLegalize")(bb, call)
    return out


def _packed(bb, call, lanes):
    from tvm import te

    x, w = call.args
    xs, ws = static_shape(x), static_shape(w)
    if xs is None or ws is None or len(ws) != 2 or len(xs) < 2 or xs[-1] != ws[0]:
        return None
    if x.ty.dtype != "float32" or w.ty.dtype != "float32" \
            or call.attrs.out_dtype not in (None, "", "float32"):
        return None
    rows = 1
    for d in xs[:-1]:
        rows *= d
    if rows < MIN_ROWS or not _is_constant(bb, w):
        return None
    k, n = ws
    nb = panel_width(n, lanes)
    panels = -(-n // nb)
    wp = bb.emit_te(lambda wt: te.compute(
        (panels, k, nb), lambda p, r, j: te.if_then_else(
            p * nb + j < n, wt[r, te.min(p * nb + j, n - 1)], 0.0),
        name="prunec_mpack"), w, primfunc_name_hint="prunec_mpack")
    return bb.call_te(matmul_te, x, wp, n, primfunc_name_hint="prunec_matmul")


def matmul_te(x, wp, n):
    """y[..., m, c] = sum_k x[..., m, k] wp[c // nb, k, c % nb]; computed over whole panels and
    cropped to the n real columns when the last panel is partial (the reduction then has no
    predicate for the schedule to vectorize around)."""
    from tvm import te

    panels, k, nb = (int(d) for d in wp.shape)
    lead = list(x.shape[:-1])
    r = te.reduce_axis((0, k), "k")
    y = te.compute(lead + [panels * nb], lambda *i: te.sum(
        x[tuple(i[:-1]) + (r,)] * wp[i[-1] // nb, r, i[-1] % nb], axis=r), name=MATMUL_BLOCK)
    if panels * nb == n:
        return y
    return te.compute(lead + [n], lambda *i: y[i], name=MATMUL_CROP)

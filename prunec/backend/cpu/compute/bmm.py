"""Matrix products whose second operand is computed at run time (attention's Q K^T and P V,
batched over heads): the same register tile as the packed-weight product (matmul.py), with the
second operand packed into column panels inside the kernel, per call, instead of at compile time.

TVM's default lowering of these ran on the generic reduction schedule: a ViT's Q K^T (3 heads of
196 x 64 by 64 x 196) took 0.70 ms against ONNX Runtime's 0.16."""

from __future__ import annotations

from .common import KEEP_SUFFIX, static_shape

BMM_BLOCK = "prunec_bmm"
BMM_PACK = "prunec_bmm_pack" + KEEP_SUFFIX  # computed into its buffer, never inlined
BMM_CROP = "prunec_bmm_crop"

MIN_ROWS = 2  # a one-row product has nothing to reuse a panel for


def bmm_panel(n: int, lanes: int) -> int:
    """Columns per panel: two vectors or one (half a vector only below one), whichever pads n
    to the fewest columns, the wider on a tie (196 -> 13 x 16 rather than 7 x 32; 64 -> 2 x 32).
    Half vectors padded less (196 -> 25 x 8) but ran the ViT's Q K^T at 190 us, 160 with 16."""
    widths = [w for w in (2 * lanes, lanes) + ((lanes // 2,) if n < lanes else ()) if w >= 4]
    return min(widths, key=lambda w: (-(-n // w) * w, -w))


def broadcast_batch(a: list[int], b: list[int]) -> list[int] | None:
    """numpy's broadcast of two batch shapes, None when they do not broadcast."""
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        return None
    return [max(x, y) for x, y in zip(a, b)]


def legalize_bmm(bb, call, lanes):
    """x[..., M, K] @ y[..., K, N], f32, static shapes, batch dims broadcasting, M >= MIN_ROWS:
    our packed product; None for anything else (the caller's default)."""
    x, y = call.args
    xs, ys = static_shape(x), static_shape(y)
    if xs is None or ys is None or len(xs) < 2 or len(ys) < 2 or xs[-1] != ys[-2]:
        return None
    if x.ty.dtype != "float32" or y.ty.dtype != "float32" \
            or call.attrs.out_dtype not in (None, "", "float32"):
        return None
    if xs[-2] < MIN_ROWS or broadcast_batch(xs[:-2], ys[:-2]) is None:
        return None
    nb = bmm_panel(ys[-1], lanes)
    return bb.call_te(bmm_te, x, y, nb, primfunc_name_hint="prunec_bmm")


def bmm_te(x, y, nb):
    """y packed as yp[..., panel, k, c] (zero columns past N), then out[..., m, c] =
    sum_k x[..., m, k] yp[..., c // nb, k, c % nb] over whole panels, cropped to N columns."""
    from tvm import te

    xs, ys = [int(d) for d in x.shape], [int(d) for d in y.shape]
    m, k, n = xs[-2], xs[-1], ys[-1]
    batch = broadcast_batch(xs[:-2], ys[:-2])
    panels = -(-n // nb)

    def pick(shape, b):  # an output batch index -> the operand's (broadcast dims read 0)
        off = len(batch) - len(shape)
        return tuple(0 if d == 1 and batch[i + off] != 1 else b[i + off]
                     for i, d in enumerate(shape))

    yp = te.compute(ys[:-2] + [panels, k, nb], lambda *i: te.if_then_else(
        i[-3] * nb + i[-1] < n,
        y[tuple(i[:-3]) + (i[-2], te.min(i[-3] * nb + i[-1], n - 1))], 0.0), name=BMM_PACK)
    r = te.reduce_axis((0, k), "k")
    out = te.compute(batch + [m, panels * nb], lambda *i: te.sum(
        x[pick(xs[:-2], i[:-2]) + (i[-2], r)]
        * yp[pick(ys[:-2], i[:-2]) + (i[-1] // nb, r, i[-1] % nb)], axis=r), name=BMM_BLOCK)
    if panels * nb == n:
        return out
    return te.compute(batch + [m, n], lambda *i: out[i], name=BMM_CROP)

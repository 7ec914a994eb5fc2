"""Transposed convolutions whose kernel equals their stride (the 2x upsampling of detector and
segmenter necks) as a 1x1 conv followed by a depth-to-space copy.

With kernel == stride and no padding, every output pixel takes exactly one tap of each input
channel: out[n, o, h*k + i, w*k + j] = sum_c x[n, c, h, w] * W[c, o, i, j]. That is a 1x1 conv
from C to O*k*k channels (ordered o, i, j) and a reshape/transpose to the output grid, so the
product runs on prunec's packed 1x1 conv schedule. TVM's conv2d_transpose has no CPU schedule
here: PP-OCRv4's detector spent 44.5 of its 88 ms in one 24 -> 24 ConvTranspose at 120 -> 240
(ONNX Runtime: 1.1 ms). Other transposed convs are left as they are.
"""

from __future__ import annotations

from ..relax_rewrite import rewrite_functions


def _static(shape):
    try:
        return [int(d) for d in shape]
    except (TypeError, ValueError):
        return None


def _rewritable(call) -> bool:
    a = call.attrs
    x, w = (_static(arg.ty.shape) if getattr(arg.ty, "shape", None) is not None else None
            for arg in call.args)
    if x is None or w is None or len(x) != 4 or len(w) != 4:
        return False
    k = (w[2], w[3])
    return (a.data_layout == "NCHW" and a.kernel_layout == "IOHW"
            and a.out_layout in ("NCHW", "", None) and int(a.groups) == 1
            and tuple(int(s) for s in a.strides) == k
            and all(int(p) == 0 for p in a.padding)
            and all(int(p) == 0 for p in a.output_padding)
            and all(int(d) == 1 for d in a.dilation)
            and call.ty.dtype == call.args[0].ty.dtype == call.args[1].ty.dtype)


def rewrite(bb, call):
    """The 1x1 conv and depth-to-space equivalent of a rewritable conv2d_transpose call."""
    from tvm import relax

    x, w = call.args
    n, c, h, wd = _static(x.ty.shape)
    _, o, kh, kw = _static(w.ty.shape)
    # W[c, o, i, j] -> W'[(o, i, j), c, 1, 1] (constant weights fold at compile time)
    w1 = bb.emit(relax.op.reshape(bb.emit(relax.op.permute_dims(w, [1, 2, 3, 0])),
                                  [o * kh * kw, c, 1, 1]))
    y = bb.emit(relax.op.nn.conv2d(x, w1, out_dtype=call.attrs.out_dtype or None))
    y = bb.emit(relax.op.reshape(y, [n, o, kh, kw, h, wd]))
    y = bb.emit(relax.op.permute_dims(y, [0, 1, 4, 2, 5, 3]))  # n, o, h, i, w, j
    return relax.op.reshape(y, [n, o, h * kh, wd * kw])


def conv_transpose_as_conv():
    """A module pass applying `rewrite` to every rewritable conv2d_transpose."""
    import tvm
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Rewrite(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.nn.conv2d_transpose" \
                    or not _rewritable(call):
                return call
            return self.builder_.normalize(rewrite(self.builder_, call))

    @tvm.ir.transform.module_pass(opt_level=0, name="PrunecConvTransposeAsConv")
    def run(mod, ctx):
        return rewrite_functions(mod, _Rewrite(mod), dce=False)

    return run

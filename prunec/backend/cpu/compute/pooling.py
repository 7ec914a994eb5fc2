"""Max pool legalization: NCHW float32 pools computed as depthwise windows (compute/depthwise.py)."""

from __future__ import annotations

from .common import is_f32, static_shape
from .depthwise import dwconv_te


def legalize_max_pool2d(bb, call, lanes):
    """NCHW float32 max pools (YOLO's SPPF 5x5, ResNet's 3x3/2 stem pool) take the depthwise
    path: TVM's pool tested the padding bounds per lane inside the window loop (~4 GF/s)."""
    import tvm

    a = call.attrs
    shape = static_shape(call.args[0])
    ok = (shape is not None and len(shape) == 4 and a.layout == "NCHW" and a.out_layout == "NCHW"
          and not a.ceil_mode and all(int(d) == 1 for d in a.dilation) and is_f32(call))
    if not ok:
        return tvm.ir.Op.get("relax.nn.max_pool2d").get_attr("FLegalize")(bb, call)
    pad = [int(p) for p in a.padding]
    return bb.call_te(dwconv_te, call.args[0], None, tuple(int(x) for x in a.strides), tuple(pad),
                      (1, 1), lanes, tuple(int(k) for k in a.pool_size), primfunc_name_hint="prunec_maxpool")

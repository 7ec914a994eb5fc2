"""prunec's CPU legalizations: one LegalizeOps entry per op family (run before TVM's own).

Adding an op family: its compute in compute/, one line in `legalize_map`."""

from __future__ import annotations

from . import zero_copy
from .compute.conv import legalize_conv2d
from .compute.matmul import legalize_matmul
from .compute.erf import legalize_erf, legalize_gelu
from .compute.fastmath import legalize_exp, legalize_sigmoid
from .compute.pooling import legalize_max_pool2d
from .compute.softmax import legalize_row_softmax
from .facts import vector_lanes


def legalize_map(target, winograd: bool = True) -> dict:
    """{relax op name: legalization} for this target; winograd=False keeps every conv direct."""
    lanes = vector_lanes(target)
    return {
        **zero_copy.legalize_map(),
        "relax.nn.conv2d": lambda bb, call: legalize_conv2d(bb, call, lanes, winograd),
        "relax.sigmoid": legalize_sigmoid,
        "relax.exp": legalize_exp,
        "relax.nn.softmax": lambda bb, call: legalize_row_softmax(bb, call, lanes),
        "relax.erf": legalize_erf,
        "relax.nn.gelu": legalize_gelu,
        "relax.nn.max_pool2d": lambda bb, call: legalize_max_pool2d(bb, call, lanes),
        "relax.matmul": lambda bb, call: legalize_matmul(bb, call, lanes),
    }


def legalize_passes(target, winograd: bool = True):
    """Relax passes run before LegalizeOps: our conv2d legalization (3x3 stride-1 convs as
    Winograd where compute.winograd.choose_tile expects a gain, unless winograd is False), fast
    exp/sigmoid/softmax/erf/GELU, products as packed panels, max pools as depthwise windows, and split/concat tagged for zero_copy."""
    from tvm import relax

    return [relax.transform.LegalizeOps(customize_legalize_map=legalize_map(target, winograd))]

"""Shared pieces of the TE computes: block naming, padding, the checks every legalization makes."""

from __future__ import annotations


# blocks whose name ends so are computed once into a buffer, not inlined into their readers
KEEP_SUFFIX = "_keep"

# the padded input of a conv or pool (a block the schedules place themselves)
PAD_BLOCK = "prunec_pad"


def static_shape(expr):
    try:
        return [int(x) for x in expr.ty.shape]
    except Exception:  # symbolic or unknown
        return None


def is_f32(call) -> bool:
    try:
        return call.args[0].ty.dtype == "float32"
    except Exception:
        return False


def pad(data, pads, value=0.0, name=PAD_BLOCK):
    from tvm import topi

    pt, pl, pb, pr = pads
    if not any(pads):
        return data
    tail = [0] * (len(data.shape) - 4)  # NCHW{b}c: the channel-in-block axis is not padded
    return topi.nn.pad(data, [0, 0, pt, pl] + tail, [0, 0, pb, pr] + tail, pad_value=value,
                       name=name)

"""DepthToSpace and SpaceToDepth (pixel shuffle): channels and r x r pixel blocks trade places.

DepthToSpace's input channel index is c*r*r + i*r + j in CRD mode (PyTorch's PixelShuffle) and
(i*r + j)*C + c in DCR mode; SpaceToDepth writes (i*r + j)*C + c. So the wide channel axis is a
product of the narrow one and two block factors: pruning channel c removes its r*r positions.
"""
from __future__ import annotations

from . import rule

NOT_CHANNELS = "not a channel axis"


def _blocks(ctx, r):
    where = ctx.where()
    return [ctx.spaces.new(r, blocked=f"pixel block of {where}: {NOT_CHANNELS}") for _ in range(2)]


@rule("DepthToSpace")
def depth_to_space(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    r = int(node.attrs["blocksize"])
    c = ctx.new(ctx.shape(y)[1])
    blocks = _blocks(ctx, r)
    mode = node.attrs.get("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctx.unify(ctx.axis(x, 1), ctx.spaces.product([c] + blocks if mode == "CRD" else blocks + [c]))
    ctx.set_axis(y, 0, ctx.axis(x, 0))
    ctx.set_axis(y, 1, c)


@rule("SpaceToDepth")
def space_to_depth(node, ctx):
    x, y = node.inputs[0], node.outputs[0]
    r = int(node.attrs["blocksize"])
    ctx.set_axis(y, 0, ctx.axis(x, 0))
    ctx.set_axis(y, 1, ctx.spaces.product(_blocks(ctx, r) + [ctx.axis(x, 1)]))

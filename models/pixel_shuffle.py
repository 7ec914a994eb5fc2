"""Super-resolution net with pixel-shuffle upsampling (ESPCN-style): convs widen the channels by
r*r and DepthToSpace trades them for pixels, once inside the network and once at the output."""

from __future__ import annotations

import onnx

from .common import DEFAULT_OPSET, Builder


def pixel_shuffle_sr(image: int = 16, r: int = 2, feat: int = 32, seed: int = 0,
                     opset: int = DEFAULT_OPSET, mode: str = "CRD") -> onnx.ModelProto:
    """Input [1, 3, image, image]; output [1, 3, image*r*r, image*r*r]."""
    b = Builder("pixel_shuffle_sr", seed, opset, probe_batch=0)
    x = b.relu(b.conv(b.input([1, 3, image, image]), 3, feat, 5, bias=True))
    x = b.relu(b.conv(x, feat, feat, 3, bias=True))
    x = b.node("DepthToSpace", [b.conv(x, feat, 16 * r * r, 3, bias=True)], blocksize=r, mode=mode)  # 16 ch
    x = b.relu(b.conv(b.relu(x), 16, 16, 3, bias=True))
    x = b.node("DepthToSpace", [b.conv(x, 16, 3 * r * r, 3, bias=True)], blocksize=r, mode=mode)
    return b.build([x], ["output"])

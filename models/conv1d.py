"""1-D conv net on raw audio: plain, grouped (groups=4) and depthwise Conv1d with BN + Relu."""

from __future__ import annotations

import onnx

from .common import DEFAULT_OPSET, Builder


def conv1d_audio(samples: int = 1600, num_classes: int = 10, seed: int = 0,
                 opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Input [1, 1, samples] (0.1 s at 16 kHz by default)."""
    b = Builder("conv1d_audio", seed, opset)
    x = b.input([1, 1, samples])
    x = b.conv_bn_act(x, 1, 16, 9, stride=4, dims=1)        # 1600 -> 400
    x = b.maxpool(x, 2, 2, dims=1)                          # -> 200
    x = b.conv_bn_act(x, 16, 32, 3, stride=2, dims=1)       # -> 100
    x = b.conv_bn_act(x, 32, 64, 3, group=4, dims=1)        # grouped: 4 blocks of 8 -> 16
    x = b.conv_bn_act(x, 64, 64, 3, stride=2, group=64, dims=1)  # depthwise -> 50
    x = b.conv_bn_act(x, 64, 96, 1, dims=1, pad=0)          # pointwise
    return b.build([b.gemm(b.flatten(b.gap(x)), 96, num_classes)], ["output"])

"""ShuffleNetV2 stage, written the way PyTorch exports it: channel split (Split), branch convs
(1x1, depthwise 3x3, 1x1), Concat, then the channel shuffle Reshape -> Transpose -> Reshape."""

from __future__ import annotations

import onnx

from .common import DEFAULT_OPSET, Builder


def _shuffle(b: Builder, x: str, c: int, hw: int, groups: int = 2) -> str:
    x = b.reshape(x, [-1, groups, c // groups, hw, hw])
    return b.reshape(b.transpose(x, [0, 2, 1, 3, 4]), [-1, c, hw, hw])


def _branch(b: Builder, x: str, cin: int, c: int, stride: int) -> str:
    x = b.conv_bn_act(x, cin, c, 1, pad=0)
    x = b.conv_bn_act(x, c, c, 3, stride=stride, group=c, act=None)
    return b.conv_bn_act(x, c, c, 1, pad=0)


def shufflenetv2(image: int = 32, widths: tuple[int, ...] = (48, 96), units: int = 2, num_classes: int = 10,
                 seed: int = 0, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    b = Builder("shufflenetv2", seed, opset)
    x = b.maxpool(b.conv_bn_act(b.input([1, 3, image, image]), 3, 24, 3, stride=2), 3, 2, pad=1)
    hw, cin = image // 4, 24
    for c in widths:
        half = c // 2
        hw //= 2
        # downsampling unit: both branches read the whole input
        left = b.conv_bn_act(b.conv_bn_act(x, cin, cin, 3, stride=2, group=cin, act=None), cin, half, 1, pad=0)
        x = _shuffle(b, b.concat([left, _branch(b, x, cin, half, 2)]), c, hw)
        for _ in range(units - 1):
            keep, work = b.split(x, [half, half])
            x = _shuffle(b, b.concat([keep, _branch(b, work, half, half, 1)]), c, hw)
        cin = c
    x = b.conv_bn_act(x, cin, 128, 1, pad=0)
    return b.build([b.gemm(b.flatten(b.gap(x)), 128, num_classes)], ["output"])

"""ResNet family: basic-block ResNet-18 and bottleneck ResNet-50, at toy and real sizes."""

from __future__ import annotations

from typing import Sequence

import onnx

from .common import DEFAULT_OPSET, Builder

# Scale range of the last BN in each residual branch: small, so the sum of many blocks
# keeps activations O(1) instead of growing with depth.
RESIDUAL_GAMMA = (0.1, 0.4)


def _stem(b: Builder, x: str, width: int) -> str:
    y = b.conv_bn_act(x, 3, width, 7, stride=2, pad=3)
    return b.maxpool(y, 3, 2, pad=1)


def _shortcut(b: Builder, x: str, cin: int, cout: int, stride: int) -> str:
    # 1x1 conv + BN projection only when the residual's shape changes.
    if stride == 1 and cin == cout:
        return x
    return b.bn(b.conv(x, cin, cout, 1, stride=stride, pad=0, prefix="downsample"), cout)


def basic_block(b: Builder, x: str, cin: int, cout: int, stride: int) -> str:
    y = b.conv_bn_act(x, cin, cout, 3, stride=stride)
    y = b.conv_bn_act(y, cout, cout, 3, act=None, gamma=RESIDUAL_GAMMA)
    return b.relu(b.add(y, _shortcut(b, x, cin, cout, stride)))


def bottleneck(b: Builder, x: str, cin: int, width: int, stride: int, expansion: int = 4) -> str:
    cout = width * expansion
    y = b.conv_bn_act(x, cin, width, 1, pad=0)
    y = b.conv_bn_act(y, width, width, 3, stride=stride)  # stride on the 3x3 (torchvision v1.5)
    y = b.conv_bn_act(y, width, cout, 1, pad=0, act=None, gamma=RESIDUAL_GAMMA)
    return b.relu(b.add(y, _shortcut(b, x, cin, cout, stride)))


def _head(b: Builder, x: str, c: int, num_classes: int) -> str:
    return b.gemm(b.flatten(b.gap(x)), c, num_classes)


def resnet_basic(blocks: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (16, 32, 64, 128),
                 image: int = 64, num_classes: int = 10, seed: int = 0, opset: int = DEFAULT_OPSET,
                 name: str = "resnet18") -> onnx.ModelProto:
    b = Builder(name, seed, opset)
    x = _stem(b, b.input([1, 3, image, image]), widths[0])
    cin = widths[0]
    for stage, (n, w) in enumerate(zip(blocks, widths)):
        for i in range(n):
            x = basic_block(b, x, cin, w, 2 if (i == 0 and stage > 0) else 1)
            cin = w
    return b.build([_head(b, x, cin, num_classes)], ["output"])


def resnet18(image: int = 64, num_classes: int = 10, seed: int = 0, opset: int = DEFAULT_OPSET,
             widths: Sequence[int] = (16, 32, 64, 128), name: str = "resnet18") -> onnx.ModelProto:
    # Widths 16..128, a quarter of torchvision's 64..512, keep the weights under ~3 MB.
    return resnet_basic((2, 2, 2, 2), widths, image, num_classes, seed, opset, name)


def resnet18_opset11(**kw) -> onnx.ModelProto:
    kw.setdefault("opset", 11)  # ir_version 6 comes from common.ir_version_for
    kw.setdefault("name", "resnet18_opset11")
    return resnet18(**kw)


def resnet_scaled(blocks: Sequence[int] = (3, 4, 6, 3), width: int = 16, image: int = 64,
                  num_classes: int = 10, seed: int = 0, opset: int = DEFAULT_OPSET,
                  name: str | None = None, probe_batch: int = 4) -> onnx.ModelProto:
    """Bottleneck ResNet with arbitrary blocks per stage, for graphs of growing size.

    ``width`` is the first stage's bottleneck width (64 for the real ResNet-50); stage
    widths double, and each block's output has 4x that many channels. ``probe_batch``: images
    in the numpy probe that sets BN statistics (0 = random statistics; fastest for very
    large graphs, activations then drift with depth).
    """
    blocks = list(blocks)
    b = Builder(name or f"resnet_b{'-'.join(map(str, blocks))}_w{width}", seed, opset, probe_batch)
    x = _stem(b, b.input([1, 3, image, image]), width)
    cin = width
    for stage, n in enumerate(blocks):
        w = width * 2 ** stage
        for i in range(n):
            x = bottleneck(b, x, cin, w, 2 if (i == 0 and stage > 0) else 1)
            cin = w * 4
    return b.build([_head(b, x, cin, num_classes)], ["output"])


def resnet50(width: int = 16, image: int = 64, num_classes: int = 10, seed: int = 0,
             opset: int = DEFAULT_OPSET, depth_mult: float = 1.0, probe_batch: int = 4) -> onnx.ModelProto:
    """ResNet-50 topology ([3,4,6,3] bottlenecks) at reduced width.

    ``depth_mult`` scales the blocks per stage (at least one each), e.g. 2.0 -> [6,8,12,6].
    """
    blocks = [max(1, round(n * depth_mult)) for n in (3, 4, 6, 3)]
    return resnet_scaled(blocks, width, image, num_classes, seed, opset, name="resnet50",
                         probe_batch=probe_batch)


def resnet50_full(width: int = 64, image: int = 224, num_classes: int = 1000, seed: int = 0,
                  opset: int = DEFAULT_OPSET, probe_batch: int = 1) -> onnx.ModelProto:
    """Real ResNet-50 size (25.6M params at width 64, 224x224) for benchmarks.

    One probe image is enough at 224x224 (>= 49 positions per channel) and keeps the build
    to a few seconds.
    """
    return resnet_scaled((3, 4, 6, 3), width, image, num_classes, seed, opset, name="resnet50_full",
                         probe_batch=probe_batch)

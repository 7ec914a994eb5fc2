"""MobileNetV2 (inverted residuals, ReLU6 as Clip) and MobileNetV3 (HardSwish, Squeeze-Excitation)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

from .common import DEFAULT_OPSET, Builder

RESIDUAL_GAMMA = (0.1, 0.4)


def _make_divisible(v: float, divisor: int = 8) -> int:
    # Same rounding MobileNets use for channel counts, so the SE widths look realistic.
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def inverted_residual(b: Builder, x: str, cin: int, cout: int, stride: int, expand: int) -> str:
    hidden = cin * expand
    y = x
    if expand != 1:
        y = b.conv_bn_act(y, cin, hidden, 1, pad=0, act="relu6")
    y = b.conv_bn_act(y, hidden, hidden, 3, stride=stride, group=hidden, act="relu6")  # depthwise
    residual = stride == 1 and cin == cout
    y = b.conv_bn_act(y, hidden, cout, 1, pad=0, act=None,  # linear bottleneck
                      gamma=RESIDUAL_GAMMA if residual else (0.5, 1.5))
    return b.add(x, y) if residual else y


# (expand t, out channels c, repeats n, first stride s), MobileNetV2 table at reduced width.
V2_SETTINGS = ((1, 8, 1, 1), (6, 16, 2, 2), (6, 24, 3, 2), (6, 32, 3, 2), (6, 48, 2, 1), (6, 80, 1, 1))


def mobilenetv2(image: int = 64, num_classes: int = 10, seed: int = 0, opset: int = DEFAULT_OPSET,
                settings: Sequence[tuple[int, int, int, int]] = V2_SETTINGS, stem: int = 16,
                head: int = 320) -> onnx.ModelProto:
    b = Builder("mobilenetv2", seed, opset)
    x = b.conv_bn_act(b.input([1, 3, image, image]), 3, stem, 3, stride=2, act="relu6")
    cin = stem
    for t, c, n, s in settings:
        for i in range(n):
            x = inverted_residual(b, x, cin, c, s if i == 0 else 1, t)
            cin = c
    x = b.conv_bn_act(x, cin, head, 1, pad=0, act="relu6")
    return b.build([b.gemm(b.flatten(b.gap(x)), head, num_classes)], ["output"])


def squeeze_excite(b: Builder, x: str, c: int, reduced: int) -> str:
    """GAP -> 1x1 reduce -> Relu -> 1x1 expand -> HardSigmoid -> gate x with a [N,C,1,1] Mul."""
    s = b.gap(x)
    s = b.relu(b.conv(s, c, reduced, 1, pad=0, bias=True, prefix="se_reduce"))
    # Expand bias in [1, 3] puts the gates in (0.67, 1) like a trained SE, instead of all
    # ~0.5, which would halve activations at every block.
    w = b.he([c, reduced, 1, 1], reduced, b.gain[s])
    bias = b.rng.uniform(1.0, 3.0, c).astype(np.float32)
    s = b.node("Conv", [s, b.const(w, "se_expand.weight"), b.const(bias, "se_expand.bias")],
               prefix="se_expand", kernel_shape=[1, 1])
    s = b.hardsigmoid(s)
    y = b.mul(x, s)
    b.gain[y] = b.gain.get(x, 1.0)
    return y


def v3_block(b: Builder, x: str, cin: int, k: int, exp: int, cout: int, se: bool, act: str,
             stride: int) -> str:
    y = x
    if exp != cin:
        y = b.conv_bn_act(y, cin, exp, 1, act=act, pad=0)
    y = b.conv_bn_act(y, exp, exp, k, act=act, stride=stride, group=exp)  # depthwise kxk
    if se:
        y = squeeze_excite(b, y, exp, _make_divisible(exp // 4))
    residual = stride == 1 and cin == cout
    y = b.conv_bn_act(y, exp, cout, 1, pad=0, act=None, gamma=RESIDUAL_GAMMA if residual else (0.5, 1.5))
    return b.add(x, y) if residual else y


# (kernel, expanded, out, SE, activation, stride): MobileNetV3-Small's table, trimmed.
V3_SETTINGS = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
)


def mobilenetv3(image: int = 64, num_classes: int = 10, seed: int = 0, opset: int = DEFAULT_OPSET,
                settings=V3_SETTINGS, stem: int = 16, last_conv: int = 288,
                last_fc: int = 256) -> onnx.ModelProto:
    if opset < 14:
        raise ValueError("mobilenetv3 needs opset >= 14 (HardSwish)")
    b = Builder("mobilenetv3", seed, opset)
    x = b.conv_bn_act(b.input([1, 3, image, image]), 3, stem, 3, act="hswish", stride=2)
    cin = stem
    for k, exp, cout, se, act, s in settings:
        x = v3_block(b, x, cin, k, exp, cout, se, act, s)
        cin = cout
    x = b.conv_bn_act(x, cin, last_conv, 1, act="hswish", pad=0)
    x = b.hardswish(b.gemm(b.flatten(b.gap(x)), last_conv, last_fc, prefix="fc1"))
    return b.build([b.gemm(x, last_fc, num_classes, prefix="fc2")], ["output"])

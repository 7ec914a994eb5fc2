"""Conv net with GroupNormalization, as the native op and as older PyTorch exports spell it.

ONNX constraint: GroupNormalization-18 takes scale/bias of shape [num_groups]; opset 21
changed them to per-channel [C] (what torch.nn.GroupNorm has), and onnx's checker rejects
the opset-18 op as deprecated. ONNX Runtime 1.31 runs both, so the default is opset 21
(IR 10). ``groupnorm_net_instancenorm`` builds the same weights as the
Reshape -> InstanceNormalization -> Reshape -> Mul -> Add pattern, so both models compute
the same function (a handy equivalence check for importers).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

from .common import Builder

GN_OPSET = 21


def _group_norm(b: Builder, x: str, c: int, groups: int, hw: Sequence[int], style: str) -> str:
    per_group = style == "native18"
    n = groups if per_group else c
    gamma = b.rng.uniform(0.5, 1.5, n).astype(np.float32)
    beta = (b.rng.standard_normal(n) * 0.1).astype(np.float32)
    if style in ("native", "native18"):
        return b.node("GroupNormalization", [x, b.const(gamma, "gn.weight"), b.const(beta, "gn.bias")],
                      prefix="gn", num_groups=groups, epsilon=1e-5)
    # torch < 2.x export: normalise each group with a unit InstanceNorm, affine per channel.
    y = b.reshape(x, [1, groups, -1])
    y = b.node("InstanceNormalization", [y, b.const(np.ones(groups, np.float32), "in.weight"),
                                         b.const(np.zeros(groups, np.float32), "in.bias")],
               prefix="instnorm", epsilon=1e-5)
    y = b.reshape(y, [1, c, *hw])
    y = b.mul(y, b.const(gamma.reshape(c, 1, 1), "gn.weight"))
    return b.add(y, b.const(beta.reshape(c, 1, 1), "gn.bias"))


def _build(style: str, opset: int, image: int, num_classes: int, seed: int,
           widths: Sequence[int], groups: Sequence[int], name: str) -> onnx.ModelProto:
    b = Builder(name, seed, opset)
    c1, c2, c3 = widths
    g1, g2, g3 = groups
    s1, s2, s3 = image, image // 2, image // 4

    def cgr(x, cin, cout, g, size, stride=1, act=True):
        y = _group_norm(b, b.conv(x, cin, cout, 3, stride=stride, bias=True), cout, g, [size, size], style)
        return b.relu(y) if act else y

    x = cgr(b.input([1, 3, image, image]), 3, c1, g1, s1)
    x = cgr(x, c1, c2, g2, s2, stride=2)
    r = cgr(cgr(x, c2, c2, g2, s2), c2, c2, g2, s2, act=False)  # residual block
    x = b.relu(b.add(x, r))
    x = cgr(x, c2, c3, g3, s3, stride=2)
    return b.build([b.gemm(b.flatten(b.gap(x)), c3, num_classes)], ["output"])


def groupnorm_net(image: int = 32, num_classes: int = 10, seed: int = 0, opset: int = GN_OPSET,
                  widths: Sequence[int] = (16, 32, 64), groups: Sequence[int] = (4, 8, 8)) -> onnx.ModelProto:
    """Native GroupNormalization. opset 21+: per-channel scale/bias; opset 18-20: per-group
    scale/bias (runs in ORT, but onnx.checker rejects the deprecated op)."""
    if opset < 18:
        raise ValueError("GroupNormalization needs opset >= 18; see groupnorm_net_instancenorm")
    style = "native" if opset >= 21 else "native18"
    return _build(style, opset, image, num_classes, seed, widths, groups, "groupnorm_net")


def groupnorm_net_instancenorm(image: int = 32, num_classes: int = 10, seed: int = 0, opset: int = 17,
                               widths: Sequence[int] = (16, 32, 64),
                               groups: Sequence[int] = (4, 8, 8)) -> onnx.ModelProto:
    return _build("instancenorm", opset, image, num_classes, seed, widths, groups,
                  "groupnorm_net_instancenorm")

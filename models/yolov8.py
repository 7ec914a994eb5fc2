"""YOLOv8-style detector: C2f/SPPF backbone, FPN/PAN neck, decoupled head with DFL decode.

Follows the layer layout of Ultralytics' yolov8.yaml at a reduced width. The graph ends the
way an Ultralytics ONNX export does: per-scale Concat(box, cls) -> Reshape [1, 64+nc, -1]
-> Concat over scales -> Split -> DFL (Softmax over 16 bins, fixed arange(16) 1x1 Conv)
-> distance-to-box with constant anchors/strides -> Concat(boxes, Sigmoid(cls)).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

from .common import DEFAULT_OPSET, Builder

REG_MAX = 16


class _Yolo:
    def __init__(self, b: Builder, bn: bool):
        self.b, self.bn = b, bn

    def conv(self, x: str, cin: int, cout: int, k: int = 1, s: int = 1) -> str:
        """Conv + BN + SiLU; with bn=False the BN is pre-folded into a conv bias (as exported)."""
        b = self.b
        if self.bn:
            return b.conv_bn_act(x, cin, cout, k, stride=s, act="silu")
        return b.silu(b.conv(x, cin, cout, k, stride=s, bias=True))

    def bottleneck(self, x: str, c: int, shortcut: bool) -> str:
        y = self.conv(self.conv(x, c, c, 3), c, c, 3)
        return self.b.add(x, y) if shortcut else y

    def c2f(self, x: str, cin: int, cout: int, n: int, shortcut: bool) -> str:
        c = cout // 2
        y = self.conv(x, cin, 2 * c, 1)
        parts = self.b.split(y, [c, c], axis=1)
        for _ in range(n):  # each bottleneck reads the previous piece; all pieces are kept
            parts.append(self.bottleneck(parts[-1], c, shortcut))
        return self.conv(self.b.concat(parts), (2 + n) * c, cout, 1)

    def sppf(self, x: str, cin: int, cout: int) -> str:
        c = cin // 2
        y = [self.conv(x, cin, c, 1)]
        for _ in range(3):
            y.append(self.b.maxpool(y[-1], 5, 1, pad=2))
        return self.conv(self.b.concat(y), 4 * c, cout, 1)


def _anchors(sizes: Sequence[tuple[int, int]], strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Grid-cell centers [1, 2, N] (in cells) and per-anchor strides [1, N], in Reshape order."""
    pts, strd = [], []
    for (h, w), s in zip(sizes, strides):
        yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        pts.append(np.stack([xx.ravel(), yy.ravel()]))
        strd.append(np.full(h * w, float(s)))
    return (np.concatenate(pts, 1)[None].astype(np.float32),
            np.concatenate(strd)[None].astype(np.float32))


def yolov8(image: int = 64, nc: int = 8, widths: Sequence[int] = (8, 16, 32, 64, 128),
           depths: Sequence[int] = (1, 2, 2, 1), seed: int = 0, opset: int = DEFAULT_OPSET,
           bn: bool = True, decode: bool = True) -> onnx.ModelProto:
    """YOLOv8 at 1/2 of the "n" width by default (n is widths=(16,32,64,128,256), depths=(1,2,2,1)).

    ``image`` must be divisible by 32. ``decode=False`` stops after the DFL (no anchors).
    """
    if image % 32:
        raise ValueError("image size must be a multiple of 32")
    b = Builder("yolov8", seed, opset)
    Y = _Yolo(b, bn)
    w1, w2, w3, w4, w5 = widths
    d1, d2, d3, d4 = depths

    x = b.input([1, 3, image, image])
    # backbone
    x = Y.conv(x, 3, w1, 3, 2)                                  # P1/2
    x = Y.c2f(Y.conv(x, w1, w2, 3, 2), w2, w2, d1, True)        # P2/4
    p3 = Y.c2f(Y.conv(x, w2, w3, 3, 2), w3, w3, d2, True)       # P3/8
    p4 = Y.c2f(Y.conv(p3, w3, w4, 3, 2), w4, w4, d3, True)      # P4/16
    x = Y.c2f(Y.conv(p4, w4, w5, 3, 2), w5, w5, d4, True)       # P5/32
    p5 = Y.sppf(x, w5, w5)
    # neck: top-down (FPN) then bottom-up (PAN)
    n4 = Y.c2f(b.concat([b.resize(p5, 2), p4]), w5 + w4, w4, d4, False)
    o3 = Y.c2f(b.concat([b.resize(n4, 2), p3]), w4 + w3, w3, d4, False)
    o4 = Y.c2f(b.concat([Y.conv(o3, w3, w3, 3, 2), n4]), w3 + w4, w4, d4, False)
    o5 = Y.c2f(b.concat([Y.conv(o4, w4, w4, 3, 2), p5]), w4 + w5, w5, d4, False)

    # Detect head; channel widths chosen by the same formulas as Ultralytics.
    feats, chans, strides = [o3, o4, o5], [w3, w4, w5], [8, 16, 32]
    c2 = max(16, w3 // 4, REG_MAX * 4)
    c3 = max(w3, min(nc, 100))
    no = 4 * REG_MAX + nc
    flat = []
    for f, ch in zip(feats, chans):
        box = b.conv(Y.conv(Y.conv(f, ch, c2, 3), c2, c2, 3), c2, 4 * REG_MAX, 1, bias=True, prefix="box_pred")
        cls = b.conv(Y.conv(Y.conv(f, ch, c3, 3), c3, c3, 3), c3, nc, 1, bias=True, prefix="cls_pred")
        flat.append(b.reshape(b.concat([box, cls]), [1, no, -1]))
    y = b.concat(flat, axis=2)                                  # [1, 64+nc, N]
    box, cls = b.split(y, [4 * REG_MAX, nc], axis=1)
    # DFL: expected value of a 16-bin distribution per box side, as a fixed 1x1 conv.
    n_anchors = sum((image // s) ** 2 for s in strides)
    d = b.transpose(b.reshape(box, [1, 4, REG_MAX, n_anchors]), [0, 2, 1, 3])  # [1,16,4,N]
    d = b.softmax(d, axis=1, rank=4)
    dfl_w = np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1)
    d = b.conv(d, REG_MAX, 1, 1, pad=0, weight=dfl_w, prefix="dfl")       # [1,1,4,N]
    dist = b.reshape(d, [1, 4, n_anchors])
    if decode:
        anchors, stride_t = _anchors([(image // s, image // s) for s in strides], strides)
        a = b.const(anchors, "anchors")
        lt, rb = b.split(dist, [2, 2], axis=1)
        x1y1 = b.node("Sub", [a, lt])
        x2y2 = b.add(a, rb)
        cxy = b.node("Div", [b.add(x1y1, x2y2), b.f32(2.0, "two")])
        wh = b.node("Sub", [x2y2, x1y1])
        dist = b.mul(b.concat([cxy, wh]), b.const(stride_t, "strides"))
    out = b.concat([dist, b.node("Sigmoid", [cls])], axis=1)    # [1, 4+nc, N]
    return b.build([out], ["output"])

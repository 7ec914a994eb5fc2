"""Small deterministic ONNX nets for the backend tests and benchmark (built with onnx.helper).

Run as a script to write a ResNet-18-like pair: `python tests/test_backend_nets.py OUTDIR`
writes OUTDIR/resnet18.onnx and OUTDIR/resnet18_half.onnx (every inner width halved, as a
structured 50% prune would leave it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Net:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def _name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def const(self, arr: np.ndarray, p: str = "w") -> str:
        name = self._name(p)
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(self, x, cin, cout, k, stride=1, groups=1, relu=True):
        fan_in = cin // groups * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
        b = self.rng.standard_normal(cout) * 0.05
        y = self._name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const(w), self.const(b, "b")], [y],
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups))
        return self.relu(y) if relu else y

    def relu(self, x):
        y = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def add(self, a, b):
        y = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        return y

    def model(self, inp: str, shape, out: str, out_shape) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes, "net",
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def resnet18_like(width: float = 1.0, res: int = 224, classes: int = 1000, batch="N",
                  seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 topology (BN folded into conv bias); `width` scales every inner width."""
    net = _Net(seed)
    w = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
    x = net.conv("input.1", 3, w[0], 7, stride=2)
    y = net._name("pool")
    net.nodes.append(helper.make_node("MaxPool", [x], [y], kernel_shape=[3, 3], strides=[2, 2],
                                      pads=[1, 1, 1, 1]))
    x, cin = y, w[0]
    for stage, c in enumerate(w):
        for blk in range(2):
            stride = 2 if (stage > 0 and blk == 0) else 1
            h = net.conv(x, cin, c, 3, stride)
            h = net.conv(h, c, c, 3, 1, relu=False)
            sc = net.conv(x, cin, c, 1, stride, relu=False) if (stride != 1 or cin != c) else x
            x, cin = net.relu(net.add(h, sc)), c
    y = net._name("gap")
    net.nodes.append(helper.make_node("GlobalAveragePool", [x], [y]))
    f = net._name("flat")
    net.nodes.append(helper.make_node("Flatten", [y], [f], axis=1))
    wf = net.rng.standard_normal((classes, cin)) * np.sqrt(1.0 / cin)
    net.nodes.append(helper.make_node("Gemm", [f, net.const(wf), net.const(np.zeros(classes), "b")],
                                      ["logits"], transB=1))
    return net.model("input.1", [batch, 3, res, res], "logits", [batch, classes])


def tiny_convnet(seed: int = 0, batch="N") -> onnx.ModelProto:
    """Conv, depthwise conv, residual add, pooling and a Gemm head: every op family the backend
    schedules, small enough to compile in seconds."""
    net = _Net(seed)
    x = net.conv("input", 3, 16, 3, stride=2)
    h = net.conv(x, 16, 16, 3, groups=16)           # depthwise
    h = net.conv(h, 16, 16, 1, relu=False)          # pointwise
    x = net.relu(net.add(h, x))
    x = net.conv(x, 16, 24, 3, stride=2)
    y = net._name("gap")
    net.nodes.append(helper.make_node("GlobalAveragePool", [x], [y]))
    f = net._name("flat")
    net.nodes.append(helper.make_node("Flatten", [y], [f], axis=1))
    wf = net.rng.standard_normal((10, 24)) * 0.2
    net.nodes.append(helper.make_node("Gemm", [f, net.const(wf), net.const(np.zeros(10), "b")],
                                      ["out"], transB=1))
    return net.model("input", [batch, 3, 32, 32], "out", [batch, 10])


def yolo_like(seed: int = 0, batch="N", res: int = 32) -> onnx.ModelProto:
    """The ops of a YOLOv8/MobileNetV2 graph the fast CPU path handles specially: Conv+BN
    (folded), SiLU as Sigmoid*Mul, depthwise conv at stride 2, Split/Concat, MaxPool, Resize,
    a softmax over a non-last axis and a Reshape whose shape is computed from Shape (folded
    once the input shape is static)."""
    net = _Net(seed)

    def bn(x, c):
        y = net._name("bn")
        net.nodes.append(helper.make_node(
            "BatchNormalization", [x, net.const(net.rng.uniform(0.5, 1.5, c)),
                                   net.const(net.rng.standard_normal(c) * 0.1),
                                   net.const(net.rng.standard_normal(c) * 0.1),
                                   net.const(net.rng.uniform(0.5, 2.0, c))], [y], epsilon=1e-3))
        return y

    def silu(x):
        s, y = net._name("sig"), net._name("silu")
        net.nodes += [helper.make_node("Sigmoid", [x], [s]), helper.make_node("Mul", [x, s], [y])]
        return y

    def node(op, inputs, n_out=1, **kw):
        outs = [net._name(op.lower()) for _ in range(n_out)]
        net.nodes.append(helper.make_node(op, inputs, outs, **kw))
        return outs if n_out > 1 else outs[0]

    x = silu(bn(net.conv("input", 3, 16, 3, stride=2, relu=False), 16))      # 16 x r/2
    d = silu(bn(net.conv(x, 16, 16, 3, stride=2, groups=16, relu=False), 16))  # dw, r/4
    net.inits.append(numpy_helper.from_array(np.array([8, 8], np.int64), "split88"))
    a, b = node("Split", [d, "split88"], 2, axis=1)
    b = silu(net.conv(b, 8, 8, 3, relu=False))
    m = node("MaxPool", [b], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    c = node("Concat", [a, b, m], axis=1)                                      # 24 x r/4
    up = node("Resize", [c, "", net.const(np.array([1, 1, 2, 2]), "scales")], mode="nearest")
    y = silu(net.conv(up, 24, 16, 1, relu=False))                              # 16 x r/2
    y = node("Add", [y, x])
    # [N, 16, H, W] -> [N, 4, 4, H*W] with the shape computed at run time, softmax on axis 1
    shp = node("Shape", [y])
    n = node("Gather", [shp, "idx0"], axis=0)
    net.inits.append(numpy_helper.from_array(np.array([0], np.int64), "idx0"))
    net.inits.append(numpy_helper.from_array(np.array([4, 4, -1], np.int64), "rest"))
    r = node("Reshape", [y, node("Concat", [n, "rest"], axis=0)])
    sm = node("Softmax", [r], axis=1)
    out = node("ReduceSum", [sm, "axes2"], keepdims=0)
    net.inits.append(numpy_helper.from_array(np.array([2], np.int64), "axes2"))
    net.nodes[-1].output[0] = "out"
    return net.model("input", [batch, 3, "H", "W"], "out", [batch, 4, None])


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/bench")
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(resnet18_like(1.0), out / "resnet18.onnx")
    onnx.save(resnet18_like(0.5), out / "resnet18_half.onnx")
    print(f"wrote {out}/resnet18.onnx {out}/resnet18_half.onnx")

"""A tiny graph builder shared by the model families.

Everything here is deterministic: weights come from one ``np.random.default_rng(seed)``
drawn in graph-construction order, and node/tensor names come from per-prefix counters,
so building the same model twice gives byte-identical protos.

Weights are not trained, but they are scaled so activations neither vanish nor explode:
He-style init with a gain matched to the producing activation (Builder.gain), and
BatchNorm whose running mean/var are the real statistics of its input on a fixed random
probe batch (models.reference evaluates the graph in float64 as it is built), with random
gamma/beta -- so folding BN is a real transformation, not an identity.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import reference

DEFAULT_OPSET = 17
# IR version to pair with an opset: ORT and the checker both want IR >= the one the
# opset was released with (opset 21 came with IR 10).
_IR_FOR_OPSET = {11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}


def ir_version_for(opset: int) -> int:
    return _IR_FOR_OPSET.get(opset, 10)


# 1/sqrt(E[a(z)^2]) for z ~ N(0, 1), measured numerically (see Builder.gain).
_ACT_GAIN = {"Relu": math.sqrt(2.0), "Clip": math.sqrt(2.0), "HardSwish": 1.738}
_SILU_GAIN = 1.678  # SiLU is Sigmoid + Mul, so conv-side code sets it explicitly
# Ops whose output has about the scale of their first input.
_SCALE_PRESERVING = {"MaxPool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose", "Resize",
                     "Concat", "Split", "Identity", "AveragePool"}


class Builder:
    """Accumulates nodes and initializers with unique names.

    Helpers return the name of the output tensor, so graphs read top-down:
    ``y = b.relu(b.bn(b.conv(x, 3, 16, 3), 16))``.
    """

    def __init__(self, name: str, seed: int = 0, opset: int = DEFAULT_OPSET, probe_batch: int = 4):
        self.graph_name = name
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = defaultdict(int)
        self.inputs: list[onnx.ValueInfoProto] = []
        # Init gain for a linear layer reading each tensor: 1/sqrt(E[a(z)^2]) for the
        # activation a that produced it (sqrt(2) after ReLU, as He init), so every conv's
        # output keeps roughly unit scale whatever precedes it. Missing -> 1.0 (linear).
        self.gain: dict[str, float] = {}
        # Probe: a fixed random batch pushed through every node as the graph is built
        # (models.reference), so BatchNorm gets its input's real statistics. Its own RNG
        # keeps the weights identical with the probe on or off (probe_batch=0).
        self.probe_batch = probe_batch
        self._probe_rng = np.random.default_rng(seed + 7919)
        self.vals: dict[str, np.ndarray] = {}

    # ---- naming / raw pieces -------------------------------------------------------
    def uname(self, prefix: str) -> str:
        i = self._counts[prefix]
        self._counts[prefix] += 1
        return f"{prefix}_{i}"

    def input(self, shape: Sequence[int], name: str = "input") -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        if self.probe_batch:
            self.vals[name] = self._probe_rng.standard_normal([self.probe_batch, *shape[1:]])
        return name

    def const(self, arr: np.ndarray, prefix: str = "const") -> str:
        name = self.uname(prefix)
        arr = np.asarray(arr)
        self.inits.append(numpy_helper.from_array(arr, name))
        if self.probe_batch:
            self.vals[name] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
        return name

    def i64(self, values: Sequence[int], prefix: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), prefix)

    def f32(self, values, prefix: str = "c") -> str:
        return self.const(np.asarray(values, dtype=np.float32), prefix)

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, prefix: str | None = None, **attrs):
        base = self.uname(prefix or op.lower())
        outs = [base if n_out == 1 else f"{base}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=base, **attrs))
        if self.probe_batch and all(i == "" or i in self.vals for i in inputs):
            res = reference.evaluate(op, [self.vals[i] if i else None for i in inputs], attrs)
            if res is not None:
                self.vals.update(zip(outs, res))
        if op in _SCALE_PRESERVING and inputs[0] in self.gain:
            for o in outs:
                self.gain[o] = self.gain[inputs[0]]
        elif op in _ACT_GAIN:
            self.gain[outs[0]] = _ACT_GAIN[op]
        return outs[0] if n_out == 1 else outs

    # ---- random weights ------------------------------------------------------------
    def he(self, shape: Sequence[int], fan_in: int, gain: float = math.sqrt(2.0)) -> np.ndarray:
        return (self.rng.standard_normal(shape) * (gain / math.sqrt(fan_in))).astype(np.float32)

    def small(self, shape: Sequence[int], scale: float = 0.02) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    # ---- layers --------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int | Sequence[int], stride: int = 1,
             pad: int | None = None, group: int = 1, bias: bool = False, dilation: int = 1,
             dims: int = 2, weight: np.ndarray | None = None, prefix: str = "conv") -> str:
        ks = [k] * dims if isinstance(k, int) else list(k)
        if pad is None:  # "same" for odd kernels at stride 1
            pads = [dilation * (kk - 1) // 2 for kk in ks] * 2
        else:
            pads = [pad] * (2 * dims)
        if weight is None:
            fan_in = (cin // group) * int(np.prod(ks))
            weight = self.he([cout, cin // group, *ks], fan_in, self.gain.get(x, 1.0))
        ins = [x, self.const(weight, f"{prefix}.weight")]
        if bias:
            ins.append(self.const(self.small([cout]), f"{prefix}.bias"))
        return self.node("Conv", ins, prefix=prefix, kernel_shape=ks, strides=[stride] * dims,
                         pads=pads, dilations=[dilation] * dims, group=group)

    def bn(self, x: str, c: int, prefix: str = "bn", gamma: tuple[float, float] = (0.5, 1.5)) -> str:
        """Inference BatchNorm with random but plausible statistics.

        ``gamma`` is the range of the scale; residual branches use a small one (like
        zero-init-residual training leaves them) so activations don't grow block after block.
        """
        r = self.rng
        gamma = r.uniform(gamma[0], gamma[1], c).astype(np.float32)
        beta = (r.standard_normal(c) * 0.1).astype(np.float32)
        mean = (r.standard_normal(c) * 0.1).astype(np.float32)
        var = r.uniform(0.5, 1.5, c).astype(np.float32)
        if x in self.vals:  # use the statistics the input really has (see reference.py)
            v = self.vals[x]
            axes = (0,) + tuple(range(2, v.ndim))
            mean = v.mean(axis=axes).astype(np.float32)
            vv = v.var(axis=axes)
            # Shrink toward the layer's mean variance: deep layers see few probe samples
            # (2x2 maps), and a channel whose variance happened to be ~0 on the probe (dead
            # after ReLU, say) would otherwise amplify any other input enormously.
            var = (0.5 * vv + 0.5 * vv.mean() + 1e-6).astype(np.float32)
        ins = [x] + [self.const(a, f"{prefix}.{n}") for a, n in
                     ((gamma, "weight"), (beta, "bias"), (mean, "running_mean"), (var, "running_var"))]
        return self.node("BatchNormalization", ins, prefix=prefix, epsilon=1e-5, momentum=0.9)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def relu6(self, x: str) -> str:
        # PyTorch exports ReLU6 as Clip; since opset 11 the bounds are inputs.
        if self.opset >= 11:
            return self.node("Clip", [x, self.f32(0.0, "clip_min"), self.f32(6.0, "clip_max")])
        return self.node("Clip", [x], min=0.0, max=6.0)

    def silu(self, x: str) -> str:
        # Written out as x * sigmoid(x), the way YOLOv8 exports look (no SiLU op in ai.onnx).
        y = self.node("Mul", [x, self.node("Sigmoid", [x])])
        self.gain[y] = _SILU_GAIN
        return y

    def hardswish(self, x: str) -> str:
        return self.node("HardSwish", [x])

    def hardsigmoid(self, x: str) -> str:
        # alpha=1/6, beta=0.5 matches torch.nn.Hardsigmoid (ONNX default alpha is 0.2).
        return self.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)

    def act(self, x: str, kind: str | None) -> str:
        if kind is None:
            return x
        return {"relu": self.relu, "relu6": self.relu6, "silu": self.silu,
                "hardswish": self.hardswish, "hswish": self.hardswish}[kind](x)

    def conv_bn_act(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1,
                    act: str | None = "relu", dims: int = 2, pad: int | None = None,
                    gamma: tuple[float, float] = (0.5, 1.5)) -> str:
        y = self.bn(self.conv(x, cin, cout, k, stride=stride, group=group, dims=dims, pad=pad), cout,
                    gamma=gamma)
        return self.act(y, act)

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self.node("Mul", [a, b])

    def concat(self, xs: Sequence[str], axis: int = 1) -> str:
        return self.node("Concat", list(xs), axis=axis)

    def split(self, x: str, sizes: Sequence[int], axis: int = 1) -> list[str]:
        if self.opset >= 13:
            return self.node("Split", [x, self.i64(sizes, "split")], n_out=len(sizes), axis=axis)
        return self.node("Split", [x], n_out=len(sizes), axis=axis, split=list(sizes))

    def maxpool(self, x: str, k: int, stride: int, pad: int = 0, dims: int = 2) -> str:
        return self.node("MaxPool", [x], kernel_shape=[k] * dims, strides=[stride] * dims,
                         pads=[pad] * (2 * dims))

    def gap(self, x: str) -> str:
        return self.node("GlobalAveragePool", [x])

    def flatten(self, x: str, axis: int = 1) -> str:
        return self.node("Flatten", [x], axis=axis)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.node("Reshape", [x, self.i64(shape)])

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.node("Transpose", [x], perm=list(perm))

    def gemm(self, x: str, fin: int, fout: int, prefix: str = "fc") -> str:
        # Weight stored [out, in] with transB=1, as torch.nn.Linear exports.
        w = self.const(self.he([fout, fin], fin, self.gain.get(x, 1.0)), f"{prefix}.weight")
        b = self.const(self.small([fout]), f"{prefix}.bias")
        return self.node("Gemm", [x, w, b], prefix=prefix, alpha=1.0, beta=1.0, transB=1)

    def linear(self, x: str, fin: int, fout: int, prefix: str = "linear", scale: float = 1.0) -> str:
        """MatMul with a [in, out] weight plus Add bias (the transformer export pattern)."""
        w = self.const(self.he([fin, fout], fin, scale * self.gain.get(x, 1.0)), f"{prefix}.weight")
        b = self.const(self.small([fout]), f"{prefix}.bias")
        return self.node("Add", [self.node("MatMul", [x, w]), b])

    def resize(self, x: str, scale: int = 2, mode: str = "nearest") -> str:
        scales = self.f32([1.0, 1.0, float(scale), float(scale)], "resize_scales")
        attrs = dict(mode=mode, coordinate_transformation_mode="asymmetric")
        if mode == "nearest":
            attrs["nearest_mode"] = "floor"
        if self.opset >= 13:
            roi = ""  # optional since opset 13
        else:
            roi = self.f32(np.zeros(0, np.float32), "resize_roi")
        return self.node("Resize", [x, roi, scales], **attrs)

    def softmax(self, x: str, axis: int, rank: int) -> str:
        axis %= rank
        if self.opset >= 13 or axis == rank - 1:
            return self.node("Softmax", [x], axis=axis)
        # Before opset 13 Softmax normalised over all dims from `axis` on (2-D coercion);
        # move the axis last, as torch's opset-11 export does.
        perm = [i for i in range(rank) if i != axis] + [axis]
        inv = list(np.argsort(perm))
        return self.transpose(self.node("Softmax", [self.transpose(x, perm)], axis=rank - 1), inv)

    def reduce_mean(self, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.i64(axes, "axes")], keepdims=keepdims)
        return self.node("ReduceMean", [x], axes=list(axes), keepdims=keepdims)

    # ---- finish --------------------------------------------------------------------
    def build(self, outputs: Sequence[str], output_names: Sequence[str] | None = None,
              ir_version: int | None = None) -> onnx.ModelProto:
        """Make the model; graph outputs get their static shapes from shape inference."""
        outputs = list(outputs)
        if output_names:
            # Rename the producing node outputs so graph outputs have stable names.
            ren = dict(zip(outputs, output_names))
            for n in self.nodes:
                for i, o in enumerate(n.output):
                    if o in ren:
                        n.output[i] = ren[o]
                for i, o in enumerate(n.input):
                    if o in ren:
                        n.input[i] = ren[o]
            outputs = list(output_names)
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        g = helper.make_graph(self.nodes, self.graph_name, self.inputs, outs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)],
                              ir_version=ir_version or ir_version_for(self.opset),
                              producer_name="prunec.models")
        # onnx's shape inference leaves some ops untyped (GroupNormalization in onnx 1.23),
        # which makes strict inference -- and check_model(full_check=True) -- fail on
        # everything downstream. Declare those tensors from the probe's shapes.
        # Only the outputs of the ops inference can't handle (whose inputs are typed) get
        # declared; repeat since declaring one can unblock the next.
        while True:
            known = self._inferred_types(m) | {i.name for i in m.graph.input} | {t.name for t in self.inits}
            todo = [o for n in self.nodes if all(i == "" or i in known for i in n.input)
                    for o in n.output if o not in known and o not in outputs and o in self.vals]
            if not todo:
                break
            for o in todo:
                m.graph.value_info.append(helper.make_tensor_value_info(
                    o, TensorProto.FLOAT, [1, *self.vals[o].shape[1:]]))
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        shapes = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for o in m.graph.output:
            vi = shapes.get(o.name)
            if vi is not None and vi.type.tensor_type.HasField("shape"):
                o.type.CopyFrom(vi.type)
        return m

    @staticmethod
    def _inferred_types(m: onnx.ModelProto) -> set[str]:
        inf = onnx.shape_inference.infer_shapes(m, strict_mode=False)
        return {vi.name for vi in list(inf.graph.value_info) + list(inf.graph.output)
                if vi.type.tensor_type.elem_type}


def count_params(m: onnx.ModelProto) -> int:
    """Number of float weights (initializers and Constant-node tensors; int64 shapes excluded)."""
    n = 0
    tensors = list(m.graph.initializer)
    tensors += [a.t for node in m.graph.node if node.op_type == "Constant" for a in node.attribute if a.name == "value"]
    for t in tensors:
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
            n += int(np.prod(t.dims)) if len(t.dims) else 1
    return n


def input_shape(m: onnx.ModelProto, i: int = 0) -> list[int | str]:
    dims = m.graph.input[i].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]

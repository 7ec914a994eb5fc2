"""An ONNX graph as a differentiable JAX function, for distillation.

The graph is run node by node with jax.numpy; the float weights of the layers (Conv, Gemm, MatMul,
LSTM/GRU/RNN, normalization scale/bias, PRelu) are the function's parameters, everything else is a
constant. Values that depend on constants only (shape arithmetic: Shape -> Gather -> Concat ->
Reshape) are computed with numpy while tracing, so they stay static and `jax.jit` sees fixed
shapes. Trained parameters are written back into the same graph: structure, names and metadata of
the model are unchanged, only initializer values move.

jax is an optional dependency (`pip install 'prunec[distill]'`); this module imports it lazily.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from prunec.errors import PrunecError

from . import elementwise, nn, recurrent, shapes  # noqa: F401  (they register the ops)
from .registry import OPS, Ctx

# (op type, input slot) holding a trainable float tensor when it is a constant.
TRAINABLE_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3), "RNN": (1, 2, 3),
    "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2), "PRelu": (1,),
}


def require_jax():
    try:
        import jax
    except ImportError:
        raise PrunecError("distillation needs jax: pip install 'prunec[distill]' (or pip install jax), "
                          "or use --recover refit") from None
    jax.config.update("jax_enable_x64", False)
    return jax


def affine_constants(nodes, consts: dict[str, np.ndarray]) -> set[str]:
    """The weights that exports spell as plain Add/Mul: a linear layer's bias (MatMul -> Add; torch
    before opset 13, Paddle2ONNX, TensorFlow) and a LayerNorm spelled out as ops' scale and shift
    (... Div by Sqrt -> Mul gamma -> Add beta). Only such vectors: a constant Add or Mul elsewhere (an
    epsilon, HardSwish's 3, a detector's anchor grid) is part of the computation, not a weight."""
    producer = {o: n for n in nodes for o in n.output}

    def op_of(name):
        n = producer.get(name)
        return n.op_type if n is not None else None

    def normalized(name):  # x / sqrt(var + eps)
        n = producer.get(name)
        return n is not None and n.op_type == "Div" and op_of(n.input[1]) == "Sqrt"

    out = set()
    for node in nodes:
        if node.op_type not in ("Add", "Mul") or len(node.input) != 2:
            continue
        for c, x in ((node.input[1], node.input[0]), (node.input[0], node.input[1])):
            v = consts.get(c)
            if v is None or x in consts or v.dtype != np.float32 or v.size < 2:
                continue
            if node.op_type == "Add" and (op_of(x) == "MatMul" or
                                          (op_of(x) == "Mul" and any(normalized(i) for i in producer[x].input))):
                out.add(c)
            elif node.op_type == "Mul" and normalized(x):
                out.add(c)
    return out


class JaxGraph:
    """`params()` gives the trainable initializers; `run(params, inputs, names)` evaluates tensors."""

    def __init__(self, proto: onnx.ModelProto):
        self.jax = require_jax()
        self.proto = proto
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        self.nodes = list(proto.graph.node)
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
                raise PrunecError(f"distillation: op {node.domain + '.' if node.domain else ''}{node.op_type} "
                                  f"(node {node.name!r}) is not supported; use --recover refit")
        trainable = set()
        for node in self.nodes:
            for slot in TRAINABLE_SLOTS.get(node.op_type, ()):
                if slot < len(node.input) and node.input[slot] in self.consts:
                    if self.consts[node.input[slot]].dtype == np.float32:
                        trainable.add(node.input[slot])
        self.trainable = sorted(trainable | affine_constants(self.nodes, self.consts))
        self.inputs = [i.name for i in proto.graph.input if i.name not in self.consts]
        self.outputs = [o.name for o in proto.graph.output]
        self.tensors = {o for node in self.nodes for o in node.output if o}

    def params(self) -> dict[str, np.ndarray]:
        return {k: self.consts[k] for k in self.trainable}

    def run(self, params: dict, inputs: dict, names: list[str] | None = None) -> list:
        jnp = self.jax.numpy
        env: dict = dict(self.consts)
        env.update(params)
        env.update({k: jnp.asarray(v) for k, v in inputs.items()})
        names = names or self.outputs
        needed = _needed(self.nodes, names)
        for node in self.nodes:
            if not needed[id(node)]:
                continue
            args = [env[n] if n else None for n in node.input]
            outs = OPS[node.op_type](Ctx(node, self.opset, self.jax), *args)
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for name, value in zip(node.output, outs):
                if name:
                    env[name] = value
        return [env[n] for n in names]

    def write_back(self, params: dict) -> onnx.ModelProto:
        """A copy of the proto with the trained values in its initializers."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        for init in proto.graph.initializer:
            if init.name in params:
                value = np.asarray(params[init.name], dtype=np.float32)
                init.CopyFrom(numpy_helper.from_array(value, init.name))
        return proto


def _needed(nodes, names) -> dict[int, bool]:
    """Nodes on a path to the requested tensors (the rest is skipped)."""
    want, needed = set(names), {}
    for node in reversed(nodes):
        hit = any(o in want for o in node.output)
        needed[id(node)] = hit
        if hit:
            want.update(i for i in node.input if i)
    return needed



"""A small CNN with a symbolic batch dim (so calibration runs batched), a grouped conv and a Gemm head."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def small_cnn(seed: int = 0, batch: str | int = "N") -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = []

    def w(name, *shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        a = rng.standard_normal(shape) * (scale if scale is not None else np.sqrt(2.0 / fan_in))
        inits.append(numpy_helper.from_array(a.astype(np.float32), name))
        return name

    def b(name, n):
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(n)).astype(np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", w("c1.w", 16, 3, 3, 3), b("c1.b", 16)], ["c1"], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("Conv", ["r1", w("c2.w", 32, 16, 3, 3), b("c2.b", 32)], ["c2"], pads=[1, 1, 1, 1],
                         strides=[2, 2], name="c2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
        # grouped conv: 4 groups of 8 channels
        helper.make_node("Conv", ["r2", w("c3.w", 32, 8, 3, 3), b("c3.b", 32)], ["c3"], pads=[1, 1, 1, 1],
                         group=4, name="c3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="r3"),
        helper.make_node("Conv", ["r3", w("c4.w", 32, 32, 1, 1), b("c4.b", 32)], ["c4"], name="c4"),
        helper.make_node("Relu", ["c4"], ["r4"], name="r4"),
        helper.make_node("GlobalAveragePool", ["r4"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", w("fc.w", 10, 32, scale=0.3), b("fc.b", 10)], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def calib_arrays(n: int = 48, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # smooth-ish inputs with a non-zero mean, closer to images than white noise
    x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
    x = 0.5 + (x + np.roll(x, 1, axis=2) + np.roll(x, 1, axis=3)) / 3
    return {"x": x.astype(np.float32)}

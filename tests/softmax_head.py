"""A CTC-like softmax head for the tests of softmax scoring and distillation."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

import prunec


def softmax_head(bias_shift=0.0, axis=2, opset=13, seed=1):
    """x [1, 4, 8] -> MatMul -> Add -> Softmax(axis) -> y [1, T, 70], the time axis left open."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(8, 70)).astype(np.float32), "w")
    b = numpy_helper.from_array((rng.normal(size=70) + bias_shift).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"], name="mm"),
             helper.make_node("Add", ["xw", "b"], ["logits"], name="add"),
             helper.make_node("Softmax", ["logits"], ["y"], name="sm", axis=axis)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", 70])], [w, b])
    return prunec.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8))

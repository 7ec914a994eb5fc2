"""If/Loop/Scan bodies read outer tensors by name: those channels must not be pruned."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import prunec
from prunec.pipeline import PruneOptions, prune_model


def _if_net():
    """conv0 -> relu -> conv1 = h; If(sum(x) > 0) returns Relu(h) or Neg(h), both reading h from the
    enclosing graph; conv2 after it."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    vi = helper.make_tensor_value_info
    then_g = helper.make_graph([helper.make_node("Relu", ["h"], ["t_out"])], "then", [],
                               [vi("t_out", TensorProto.FLOAT, [1, 16, 8, 8])])
    else_g = helper.make_graph([helper.make_node("Neg", ["h"], ["e_out"])], "else", [],
                               [vi("e_out", TensorProto.FLOAT, [1, 16, 8, 8])])
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c0.w"], ["h0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["h0"], ["r0"]),
        n("Conv", ["r0", "c1.w"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("ReduceSum", ["x"], ["s"], keepdims=0),
        n("Greater", ["s", "zero"], ["cond"]),
        n("If", ["cond"], ["b"], then_branch=then_g, else_branch=else_g),
        n("Conv", ["b", "c2.w"], ["y"], kernel_shape=[1, 1]),
    ]
    g = helper.make_graph(nodes, "ifnet", [vi("x", TensorProto.FLOAT, [1, 3, 8, 8])], [vi("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [w("c0.w", 8, 3, 3, 3), w("c1.w", 16, 8, 3, 3), w("c2.w", 4, 16, 1, 1),
                           numpy_helper.from_array(np.array(0, np.float32), "zero")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_tensor_read_inside_a_branch_is_blocked_and_the_rest_prunes():
    model = prunec.from_proto(_if_net())
    analysis = prunec.analyze(model)
    read = analysis.group("c1.w[0]")
    assert not read.prunable and any("body of If" in r for r in read.blocked)
    assert analysis.group("c0.w[0]").prunable
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert report["verify"]["ok"]
    onnx.checker.check_model(pruned.to_proto(), full_check=True)
    assert report["groups"]["pruned"] == 1

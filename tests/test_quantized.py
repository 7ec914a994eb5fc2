"""Quantized graphs: QDQ with per-channel parameters, QLinear ops, dynamic quantization."""
import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

import prunec
from models.quantized import qdq_resnet
from prunec.pipeline import PruneOptions, prune_model

from exactness import check_exact


def test_qdq_per_channel_parameters_shrink_with_their_channels():
    model = prunec.from_proto(qdq_resnet())
    analysis = prunec.analyze(model)
    g = analysis.group("conv.weight_1_quantized[0]")
    roles = {(m.tensor, m.axis): m.role for m in g.members}
    # the stored int8 weight is the producer; its per-channel scale, zero point and int32 bias join
    assert roles[("conv.weight_1_quantized", 0)] == "out"
    assert ("conv.weight_1_scale", 0) in roles and ("conv.weight_1_zero_point", 0) in roles
    assert roles[("conv.bias_1_quantized", 0)] == "bias"
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert report["verify"]["ok"]
    consts = {t.name: t for t in pruned.graph.tensors().values() if isinstance(t, gs.Constant)}
    w = consts["conv.weight_1_quantized"]
    assert w.values.dtype == np.int8 and w.values.shape[0] == 8  # still stored as int8, half the rows
    assert consts["conv.weight_1_scale"].values.shape == (8,)
    assert consts["conv.weight_1_zero_point"].values.shape == (8,)


def _qlinear_net():
    """QuantizeLinear -> QLinearConv (per-channel int8 weight) -> QLinearConv -> QLinearMatMul
    (per-column weight scale) -> DequantizeLinear."""
    rng = np.random.default_rng(0)

    def q(name, shape):
        return numpy_helper.from_array(rng.integers(-100, 100, shape).astype(np.int8), name)

    def f(name, v):
        return numpy_helper.from_array(np.asarray(v, np.float32), name)

    def z(name, shape=()):
        return numpy_helper.from_array(np.zeros(shape, np.int8), name)

    inits = [f("s_in", 0.05), z("z_in"), f("s_act", 0.5), z("z_act"),
             q("w1", [16, 3, 3, 3]), f("w1_s", rng.uniform(0.001, 0.003, 16)), z("w1_z", [16]),
             numpy_helper.from_array(rng.integers(-500, 500, 16).astype(np.int32), "b1"),
             q("w2", [8, 16, 1, 1]), f("w2_s", rng.uniform(0.001, 0.003, 8)), z("w2_z", [8]),
             q("w3", [8, 6]), f("w3_s", rng.uniform(0.001, 0.003, 6)), z("w3_z", [6]),
             numpy_helper.from_array(np.array([1, 8], np.int64), "flat"), f("s_out", 0.05)]
    n = helper.make_node
    nodes = [
        n("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"]),
        n("QLinearConv", ["xq", "s_in", "z_in", "w1", "w1_s", "w1_z", "s_act", "z_act", "b1"], ["h1"],
          kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("QLinearConv", ["h1", "s_act", "z_act", "w2", "w2_s", "w2_z", "s_act", "z_act"], ["h2"],
          kernel_shape=[1, 1], strides=[4, 4]),
        n("DequantizeLinear", ["h2", "s_act", "z_act"], ["h2f"]),
        n("GlobalAveragePool", ["h2f"], ["p"]),
        n("Reshape", ["p", "flat"], ["pf"]),
        n("QuantizeLinear", ["pf", "s_act", "z_act"], ["pq"]),
        n("QLinearMatMul", ["pq", "s_act", "z_act", "w3", "w3_s", "w3_z", "s_out", "z_in"], ["yq"]),
        n("DequantizeLinear", ["yq", "s_out", "z_in"], ["y"]),
    ]
    g = helper.make_graph(nodes, "qlinear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_qlinear_ops_prune_exactly():
    n_groups, _ = check_exact(_qlinear_net())
    assert n_groups == 2  # both convs' output channels (the MatMul's columns reach the output)


def test_per_tensor_dequantize_keeps_its_scalar_parameters():
    model = prunec.from_proto(_qlinear_net())
    analysis = prunec.analyze(model)
    members = {m.tensor for g in analysis.groups for m in g.members}
    assert "s_act" not in members and "z_act" not in members
    assert {"w1_s", "w1_z", "b1", "w2"} <= members

"""If/Loop/Scan: channels flow through bodies where they enter and leave consistently; bodies read
outer tensors by name, and a body that uses a group in a way no rule follows keeps it blocked."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import prunec
from exactness import assert_verified, check_exact
from models.control_flow import if_conv_paths, loop_residual, scan_state
from prunec.pipeline import PruneOptions, prune_model
from prunec.runtime import run_model
from prunec.subgraphs import all_tensors


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


def test_outer_tensor_read_by_both_branches_prunes_through_them():
    model = prunec.from_proto(_if_net())
    analysis = prunec.analyze(model)
    assert analysis.group("c1.w[0]").prunable  # read in both branches by ops that keep channels
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert_verified(report, model)
    onnx.checker.check_model(pruned.to_proto(), full_check=True)
    assert report["groups"]["pruned"] == 2
    assert all_tensors(pruned.graph)["c1.w"].shape[0] == 8


@pytest.mark.parametrize("build", [
    lambda: if_conv_paths(), lambda: if_conv_paths(take_then_when_positive=False),
    lambda: loop_residual(), lambda: scan_state()], ids=["if-then", "if-else", "loop", "scan"])
def test_zeroed_channels_prune_away_exactly_through_bodies(build):
    n_groups, err = check_exact(build())
    assert n_groups >= 1 and err < 1e-5


@pytest.mark.parametrize("build, groups, shrunk", [
    (if_conv_paths, {"c0.w[0]", "pa.w[0]"}, {"pa.w": (8, 4, 3, 3), "pb.w": (8, 4, 1, 1), "pb.scale": (1, 8, 1, 1)}),
    (loop_residual, {"c0.w[0]"}, {"step.w": (4, 4, 3, 3), "step.b": (4,), "fc.w": (5, 12)}),
    (scan_state, {"in.w[1]"}, {"rec.w": (6, 6), "s0": (1, 6), "out.w": (6, 3)}),
], ids=["if", "loop", "scan"])
def test_body_weights_and_states_shrink_and_the_model_verifies(build, groups, shrunk):
    model = prunec.from_proto(build())
    assert {g.id for g in prunec.analyze(model).prunable_groups} == groups
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert_verified(report, model)
    tensors = all_tensors(pruned.graph)
    assert {name: tuple(tensors[name].shape) for name in shrunk} == shrunk
    assert report["macs"]["after"] < report["macs"]["before"] / 2  # the bodies' MACs are counted


def test_a_branch_that_normalizes_over_the_channels_keeps_them_blocked():
    model = prunec.from_proto(if_conv_paths(softmax_branch=True))
    analysis = prunec.analyze(model)
    blocked = analysis.group("pa.w[0]")
    assert not blocked.prunable and any("Softmax" in r for r in blocked.blocked)
    assert analysis.group("c0.w[0]").prunable  # the stem's channels reach only the branch convs
    _, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert_verified(report, model)


def test_dynamic_batch_stays_dynamic_in_the_branches():
    proto = if_conv_paths()
    for vi in list(proto.graph.input) + list(proto.graph.output) + [
            a.g.output[0] for a in proto.graph.node[4].attribute]:
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    model = prunec.from_proto(proto)
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert report["verify"]["ok"]
    saved = pruned.to_proto()
    branch_out = saved.graph.node[[n.op_type for n in saved.graph.node].index("If")].attribute[0].g.output[0]
    assert [d.dim_param or d.dim_value for d in branch_out.type.tensor_type.shape.dim] == ["N", 8, 8, 8]
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert run_model(saved, {"x": x})[0].shape == (3, 4, 8, 8)


def test_a_loop_state_that_changes_shape_blocks_what_it_touches():
    """The state doubles its length each step: the body has no static shapes, nothing flows."""
    vi, n = helper.make_tensor_value_info, helper.make_node
    body = helper.make_graph(
        [n("Identity", ["c_in"], ["c_out"]), n("Concat", ["s", "s"], ["s_out"], axis=2)], "grow",
        [vi("i", TensorProto.INT64, []), vi("c_in", TensorProto.BOOL, []), vi("s", TensorProto.FLOAT, [1, 8, None])],
        [vi("c_out", TensorProto.BOOL, []), vi("s_out", TensorProto.FLOAT, [1, 8, None])])
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 1)).astype(np.float32), "c0.w"),
             numpy_helper.from_array(rng.standard_normal((4, 8, 1)).astype(np.float32), "c1.w"),
             numpy_helper.from_array(np.array(2, np.int64), "steps"), numpy_helper.from_array(np.array(True), "true")]
    g = helper.make_graph(
        [n("Conv", ["x", "c0.w"], ["h"], kernel_shape=[1]), n("Loop", ["steps", "true", "h"], ["hs"], body=body),
         n("Conv", ["hs", "c1.w"], ["y"], kernel_shape=[1])],
        "grow", [vi("x", TensorProto.FLOAT, [1, 3, 5])], [vi("y", TensorProto.FLOAT, [1, 4, None])], inits)
    model = prunec.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    group = prunec.analyze(model).group("c0.w[0]")
    assert not group.prunable and any("not pruned through" in r for r in group.blocked)


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name, groups", [
    ("torch_cond.onnx", {"stem.weight[0]", "a.weight[0]"}),  # torch.cond, dynamo exporter: an If
    ("torch_loop.onnx", {"stem.weight[0]"}),  # a scripted for loop, TorchScript exporter: a Loop
])
def test_pytorch_control_flow_exports_prune_through_their_bodies(name, groups):
    """Made by models/export_control_flow.py (torch 2.14 CPU)."""
    proto = onnx.load(str(FIXTURES / name))
    model = prunec.from_proto(proto)
    assert {g.id for g in prunec.analyze(model).prunable_groups} == groups
    n_groups, err = check_exact(proto)
    assert n_groups == len(groups) and err < 1e-5
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert_verified(report, model)
    assert report["macs"]["after"] < report["macs"]["before"] / 2

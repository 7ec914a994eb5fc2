"""LSTM/GRU/RNN rules and shape vectors computed at run time (Shape -> Gather -> Concat -> Reshape)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import prunec
from models.recurrent import rnn_audio
from prunec.runtime import run_model

from exactness import random_plan, zero_channels


def _group_with(analysis, tensor):
    return next(g for g in analysis.groups if any(m.tensor == tensor and m.role == "out" for m in g.members))


def test_lstm_hidden_group_spans_gates_directions_and_states():
    model = prunec.from_proto(rnn_audio())
    analysis = prunec.analyze(model)
    lstm = next(n for n in model.graph.nodes if n.op == "LSTM")
    w, r, b, p = (lstm.inputs[i].name for i in (1, 2, 3, 7))
    g = _group_with(analysis, r)
    assert g.prunable and g.size == 48
    reps = {(m.tensor, m.axis): m.positions.shape[1] for m in g.members}
    # 4 gates in W and R, 8 bias rows (input and recurrent), 3 peepholes, one column of R
    assert reps[(w, 1)] == 4 and reps[(r, 1)] == 4 and reps[(r, 2)] == 1
    assert reps[(b, 1)] == 8 and reps[(p, 1)] == 3
    # the zero initial states (ConstantOfShape of a shape computed from the input) follow
    assert any(m.tensor == lstm.inputs[5].name and m.axis == 2 for m in g.members)
    # the GRU after it consumes both directions of each hidden unit
    gru = next(n for n in model.graph.nodes if n.op == "GRU")
    assert next(m for m in g.members if m.tensor == gru.inputs[1].name).positions.shape[1] == 2


def test_pruned_recurrent_ops_have_consistent_hidden_sizes():
    model = prunec.from_proto(rnn_audio())
    analysis = prunec.analyze(model)
    plan = prunec.make_plan(analysis, prunec.score(analysis, "l2"), 0.5, round_to=1)
    pruned = prunec.prune(analysis, plan)
    prunec.verify(model, pruned)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}
    for node in pruned.graph.nodes:
        if node.op in gates:
            h = node.attrs["hidden_size"]
            before = next(n for n in model.graph.nodes if n.name == node.name).attrs["hidden_size"]
            assert h == before // 2
            assert node.inputs[1].shape[1] == gates[node.op] * h
            assert tuple(node.inputs[2].shape[1:]) == (gates[node.op] * h, h)


def test_batch_major_layout_prunes_exactly():
    """layout=1 ([batch, seq, ...]): ONNX Runtime has no kernel for it, so compare with onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    model = prunec.from_proto(rnn_audio(layout=1, opset=17))
    analysis = prunec.analyze(model)
    plan = random_plan(analysis, 0.5, seed=1)
    assert len(plan.groups) == 4  # conv, LSTM, GRU and RNN hidden units
    zeroed = zero_channels(model, analysis, plan)
    pruned = prunec.prune(prunec.analyze(zeroed), plan)
    onnx.checker.check_model(pruned.to_proto(), full_check=True)
    x = np.random.default_rng(0).standard_normal([1, 40, 50]).astype(np.float32)
    ref = ReferenceEvaluator(zeroed.to_proto()).run(None, {"input": x})[0]
    out = ReferenceEvaluator(pruned.to_proto()).run(None, {"input": x})[0]
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- computed shapes

def _computed_reshape_net(width="W", heads=False):
    """conv -> [W, 1, C, H] -> Reshape to [Shape0, Shape1, Shape2*Shape3] (shape read at run time)
    -> MatMul; with heads, a token-major MatMul split into 4 heads of Shape2/4 and merged back."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    def i64(name, v):
        return numpy_helper.from_array(np.asarray(v, np.int64), name)

    inits = [init("c.w", 16, 3, 3, 3), init("c.b", 16), init("fc.w", 16 * 4, 32), init("out.w", 32, 5),
             i64("i0", 0), i64("i1", 1), i64("i2", 2), i64("i3", 3), i64("four", [4]), i64("four_s", 4)]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c.w", "c.b"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["h"], ["hr"]),
        n("Transpose", ["hr"], ["t"], perm=[3, 0, 1, 2]),
        n("Shape", ["t"], ["s"]),
        n("Gather", ["s", "i0"], ["s0"], axis=0), n("Gather", ["s", "i1"], ["s1"], axis=0),
        n("Gather", ["s", "i2"], ["s2"], axis=0), n("Gather", ["s", "i3"], ["s3"], axis=0),
        n("Mul", ["s2", "s3"], ["s23"]),
        n("Unsqueeze", ["s0", "ax0"], ["u0"]), n("Unsqueeze", ["s1", "ax0"], ["u1"]),
        n("Unsqueeze", ["s23", "ax0"], ["u23"]),
        n("Concat", ["u0", "u1", "u23"], ["shape"], axis=0),
        n("Reshape", ["t", "shape"], ["seq"]),                       # [W, 1, C*H]
        n("MatMul", ["seq", "fc.w"], ["f"]),
        n("Relu", ["f"], ["fr"]),
    ]
    inits.append(i64("ax0", [0]))
    last = "fr"
    if heads:
        inits += [init("q.w", 32, 32)]
        nodes += [
            n("MatMul", ["fr", "q.w"], ["q"]),                       # [W, 1, 32]
            n("Shape", ["q"], ["qs"]),
            n("Gather", ["qs", "i2"], ["q2"], axis=0),
            n("Div", ["q2", "four_s"], ["hd"]),
            n("Slice", ["qs", "zero1", "two1"], ["q01"]),
            n("Unsqueeze", ["hd", "ax0"], ["uhd"]),
            n("Concat", ["q01", "four", "uhd"], ["qshape"], axis=0),
            n("Reshape", ["q", "qshape"], ["qh"]),                   # [W, 1, 4, 8]
            n("Relu", ["qh"], ["qhr"]),
            n("Concat", ["q01", "q2u"], ["mshape"], axis=0),
            n("Unsqueeze", ["q2", "ax0"], ["q2u"]),
            n("Reshape", ["qhr", "mshape"], ["merged"]),             # [W, 1, 32]
        ]
        inits += [i64("zero1", [0]), i64("two1", [2])]
        last = "merged"
    nodes.append(n("MatMul", [last, "out.w"], ["y"]))
    g = helper.make_graph(nodes, "computed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    m.graph.ClearField("node")
    m.graph.node.extend(_toposorted(nodes))
    return m


def _toposorted(nodes):
    done, out, pending = set(), [], list(nodes)
    produced = {o for nd in nodes for o in nd.output}
    while pending:
        for nd in pending:
            if all(i in done or i not in produced for i in nd.input):
                out.append(nd)
                done.update(nd.output)
                pending.remove(nd)
                break
    return out


@pytest.mark.parametrize("heads", [False, True])
def test_computed_reshape_prunes_exactly_and_runs_at_other_widths(heads):
    proto = _dynamic_width(_computed_reshape_net(heads=heads))  # a fixed width would fold the shape chain
    model = prunec.from_proto(proto, input_shapes={"x": [1, 3, 4, 8]})
    analysis = prunec.analyze(model)
    conv = _group_with(analysis, "c.w")
    assert conv.prunable, conv.blocked
    if heads:
        heads_, within = (g for g in analysis.groups if g.id.startswith("q.w[1]"))
        assert heads_.size == 4 and any("divisor" in r for r in heads_.blocked)  # the head count is fixed
        assert within.prunable and within.size == 8  # the same dims of every head can go
    plan = random_plan(analysis, 0.5, seed=0)
    zeroed = zero_channels(model, analysis, plan)
    pruned = prunec.prune(prunec.analyze(zeroed), plan)
    prunec.verify(zeroed, pruned)
    protos = [_dynamic_width(zeroed.to_proto()), _dynamic_width(pruned.to_proto())]
    for width in (8, 13):
        x = np.random.default_rng(width).standard_normal([1, 3, 4, width]).astype(np.float32)
        ref, out = (run_model(p, {"x": x})[0] for p in protos)
        assert out.shape == ref.shape == (width, 1, 5)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def _dynamic_width(proto):
    proto.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    for vi in list(proto.graph.output):
        vi.type.tensor_type.ClearField("shape")
    return proto


def test_untraceable_shape_element_blocks_the_axis():
    proto = _computed_reshape_net()
    # the third element now goes through Abs: not something the tracer follows
    unsq = next(nd for nd in proto.graph.node if nd.op_type == "Unsqueeze" and nd.input[0] == "s23")
    unsq.input[0] = "abs23"
    nodes = list(proto.graph.node) + [helper.make_node("Abs", ["s23"], ["abs23"])]
    proto.graph.ClearField("node")
    proto.graph.node.extend(_toposorted(nodes))
    model = prunec.from_proto(proto, input_shapes={"x": [1, 3, 4, 8]})
    analysis = prunec.analyze(model)
    conv = _group_with(analysis, "c.w")
    assert not conv.prunable
    assert any("computed at run time" in r for r in conv.blocked)

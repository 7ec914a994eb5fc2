"""Run-time shape computations (window attention as torchvision's Swin exports it): folded when every
input size is fixed, traced when it is not; the hidden channels prune through both exactly."""
import numpy as np
import onnxruntime as ort
import pytest

import prunec
from exactness import check_exact
from models.window_attention import window_attention
from prunec.ops.reshape import segments
from prunec.pipeline import PruneOptions, prune_model


def test_reshape_segments_keep_the_channel_axis_apart():
    assert segments([1, 56, 56, 96], [1, 8, 7, 8, 7, 96]) == [(0, 1, 0, 1), (1, 2, 1, 3), (2, 3, 3, 5), (3, 4, 5, 6)]
    assert segments([4, 96], [4, 3, 32]) == [(0, 1, 0, 1), (1, 2, 1, 3)]
    assert segments([6, 4], [4, 6]) == [(0, 2, 0, 2)]  # no common boundary: one run


@pytest.mark.parametrize("torch_pads", [False, True], ids=["pads", "torch-pads"])
@pytest.mark.parametrize("dynamic", ["", "batch", "hw"])
def test_window_attention_prunes_exactly(dynamic, torch_pads):
    n_groups, err = check_exact(window_attention(dynamic=dynamic, torch_pads=torch_pads))
    assert n_groups == 2, n_groups  # the hidden channels (in, windows, out) and the q/k channels
    assert err < 1e-5


def test_static_shape_computations_are_folded():
    model = prunec.from_proto(window_attention())
    ops = {n.op for n in model.graph.nodes}
    assert "Shape" not in ops and "Mod" not in ops
    assert any("folded into constants" in n for n in model.notes)
    assert {g.id for g in prunec.analyze(model).prunable_groups} == {"w_in[1]", "w_k[1]"}


def test_with_only_the_batch_dynamic_the_batch_free_shape_reads_fold():
    model = prunec.from_proto(window_attention(dynamic="batch"))
    assert any("do not depend on the batch" in n for n in model.notes)
    ops = [n.op for n in model.graph.nodes]
    assert "Mod" not in ops and "Pad" in ops  # the pads (from H and W) are constants now
    assert "Shape" in ops  # the batch is still read at run time
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert report["groups"]["pruned"] == 2 and report["verify"]["other_input_size"]["checked"]
    sess = ort.InferenceSession(pruned.to_proto().SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": np.ones((3, 8, 8, 16), np.float32)})[0].shape == (3, 8, 8, 16)


@pytest.mark.parametrize("torch_pads", [False, True], ids=["pads", "torch-pads"])
def test_dynamic_window_attention_still_runs_at_other_sizes_after_pruning(torch_pads):
    """torch-pads: F.pad's list reshaped to (-1, 2), reversed, transposed (Swin-T with open H, W)."""
    model = prunec.from_proto(window_attention(dynamic="hw", torch_pads=torch_pads), input_shapes={"x": [1, 8, 8, 16]})
    assert "Shape" in {n.op for n in model.graph.nodes}  # nothing folded: H and W are open
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert report["groups"]["pruned"] == 2
    assert report["verify"]["other_input_size"]["checked"]
    sess = ort.InferenceSession(pruned.to_proto().SerializeToString(), providers=["CPUExecutionProvider"])
    for hw in ((8, 8), (10, 7), (5, 13)):  # padded to the window and cropped back at run time
        y = sess.run(None, {"x": np.ones((1, *hw, 16), np.float32)})[0]
        assert y.shape == (1, *hw, 16)


def _cosine_attention_qk(dynamic: bool):
    """q = x Wq + b; q / max(||q||_2 over the head dims, eps) expanded to q's shape (F.normalize as
    Swin-V2 exports it: ReduceL2 -> Clip -> Expand(Shape(q)) -> Div); then Wo."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    n = helper.make_node
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), name)
             for name, s in (("wq", (8, 12)), ("bq", (12,)), ("wo", (12, 8)))]
    inits.append(numpy_helper.from_array(np.array(1e-12, np.float32), "eps"))
    nodes = [n("MatMul", ["x", "wq"], ["q0"]), n("Add", ["q0", "bq"], ["q"]),
             n("ReduceL2", ["q"], ["norm"], axes=[-1], keepdims=1), n("Clip", ["norm", "eps"], ["safe"]),
             n("Shape", ["q"], ["q_shape"]), n("Expand", ["safe", "q_shape"], ["den"]),
             n("Div", ["q", "den"], ["qn"]), n("MatMul", ["qn", "wo"], ["y"])]
    tokens = "T" if dynamic else 5
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "cosine", [vi("x", TensorProto.FLOAT, [1, tokens, 8])],
                          [vi("y", TensorProto.FLOAT, [1, tokens, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-tokens"])
def test_l2_normalized_channels_prune_exactly(dynamic):
    """A zeroed channel adds nothing to an L2 norm, and the Expand to Shape(q) follows q's axes."""
    proto = _cosine_attention_qk(dynamic)
    model = prunec.from_proto(proto, {"x": [1, 5, 8]} if dynamic else None)
    assert "wq[1]" in {g.id for g in prunec.analyze(model).prunable_groups}
    n_groups, err = check_exact(proto)
    assert n_groups == 1 and err < 1e-5


def _chunked_qkv(dynamic: bool):
    """qkv = x Wqkv; q, k, v = qkv.chunk(3, -1) with open token count: each Slice's bounds are
    ceil(C / 3) * k computed from Shape(qkv) (MaxViT); softmax(q k^T) v, then Wo."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)
    n = helper.make_node
    c = 6
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), name)
             for name, s in (("wqkv", (8, 3 * c)), ("wo", (c, 8)))]
    inits += [numpy_helper.from_array(np.array(v, np.int64), name)
              for name, v in (("last", [-1]), ("two", [2]), ("three", [3]), ("one", [1]), ("zero", [0]))]
    nodes = [n("MatMul", ["x", "wqkv"], ["qkv"]), n("Shape", ["qkv"], ["s"]), n("Gather", ["s", "last"], ["cc"], axis=0),
             n("Add", ["cc", "two"], ["cc2"]), n("Div", ["cc2", "three"], ["chunk"]),
             n("Mul", ["chunk", "one"], ["e0"]), n("Mul", ["chunk", "two"], ["e1"]), n("Mul", ["chunk", "three"], ["e2"]),
             n("Slice", ["qkv", "zero", "e0", "last"], ["q"]), n("Slice", ["qkv", "e0", "e1", "last"], ["k"]),
             n("Slice", ["qkv", "e1", "e2", "last"], ["v"]),
             n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), n("MatMul", ["q", "kt"], ["scores"]),
             n("Softmax", ["scores"], ["attn"], axis=-1), n("MatMul", ["attn", "v"], ["mixed"]),
             n("MatMul", ["mixed", "wo"], ["y"])]
    tokens = "T" if dynamic else 5
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "chunked", [vi("x", TensorProto.FLOAT, [1, tokens, 8])],
                          [vi("y", TensorProto.FLOAT, [1, tokens, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-tokens"])
def test_chunk_with_computed_bounds_prunes_alike_in_every_chunk(dynamic):
    proto = _chunked_qkv(dynamic)
    model = prunec.from_proto(proto, {"x": [1, 5, 8]} if dynamic else None)
    groups = {g.id: g for g in prunec.analyze(model).groups}
    if dynamic:  # channel j of q, k and v is one group; the chunk count stays
        assert groups["wqkv[1].1"].prunable and groups["wqkv[1].1"].size == 6
        assert any("chunk count" in r for r in groups["wqkv[1].0"].blocked)
    n_groups, err = check_exact(proto)
    assert n_groups >= 1 and err < 1e-5
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert report["verify"]["ok"]
    if dynamic:
        sess = ort.InferenceSession(pruned.to_proto().SerializeToString(), providers=["CPUExecutionProvider"])
        assert sess.run(None, {"x": np.ones((1, 9, 8), np.float32)})[0].shape == (1, 9, 8)

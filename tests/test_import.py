"""Import and normalize: Constant-node weights, external data, symbolic dims, opsets, BN folding."""
import numpy as np
import pytest

import prunec
from models.variants import save_with_external_data, weights_as_constant_nodes, with_symbolic_batch
from models.zoo import build
from prunec.pipeline import PruneOptions, prune_model
from prunec.runtime import random_inputs, run_model
from tests.exactness import assert_verified


def _groups(proto):
    return sorted((g.id, g.size, g.prunable) for g in prunec.analyze(prunec.from_proto(proto)).groups)


def test_constant_node_weights_give_the_same_groups():
    base = build("mobilenetv2")
    paddle_style = weights_as_constant_nodes(base)
    assert not paddle_style.graph.initializer
    model = prunec.from_proto(paddle_style)
    assert any("Constant nodes" in n for n in model.notes)
    assert _groups(paddle_style) == _groups(base)
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5))
    assert report["macs"]["before"] / report["macs"]["after"] >= 2


def test_external_data_is_read(tmp_path):
    path = save_with_external_data(build("resnet18"), tmp_path)
    model = prunec.load(path)
    assert prunec.analyze(model).prunable_groups


def test_symbolic_batch_is_taken_as_one_and_kept_on_save(tmp_path):
    proto = with_symbolic_batch(build("resnet18"), "N")
    model = prunec.from_proto(proto)
    assert model.input_shapes["input"][0] == 1
    assert any("batch dim (N) taken as 1" in n for n in model.notes)
    pruned, _, _ = prune_model(model, PruneOptions(ratio=0.5))
    out = pruned.to_proto()
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    # the pruned model still runs at another batch size
    feeds = random_inputs(out, {"input": [3, 3, 64, 64]})
    assert run_model(out, feeds)[0].shape[0] == 3


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_opsets(opset):
    proto = build("resnet18", opset=opset)
    model = prunec.from_proto(proto)
    assert model.opset == opset
    _, report, _ = prune_model(model, PruneOptions(ratio=0.5))
    assert_verified(report, model)


def test_old_opset_is_upgraded_or_refused_clearly():
    proto = build("resnet18", opset=11)
    proto.opset_import[0].version = 9  # an opset-9 graph with opset-11 ops the converter can't map back
    model_or_error = None
    try:
        model_or_error = prunec.from_proto(proto)
    except prunec.PrunecError as exc:
        model_or_error = str(exc)
    if isinstance(model_or_error, str):
        assert "older than 11" in model_or_error
    else:
        assert model_or_error.opset == 11 and any("upgraded" in n for n in model_or_error.notes)


def test_split_with_opset_13_input_and_opset_11_attribute():
    for opset in (11, 18):
        converted = build("yolov8", opset=opset)
        assert any(n.op_type == "Split" for n in converted.graph.node)
        model = prunec.from_proto(converted)
        _, report, _ = prune_model(model, PruneOptions(ratio=0.5))
        assert_verified(report, model)


def test_fold_bn_is_exact():
    from prunec.passes import FoldBatchNorm

    model = prunec.from_proto(build("resnet18"))
    folded, result = FoldBatchNorm()(model)
    n = result.folded
    assert n == sum(1 for node in model.graph.nodes if node.op == "BatchNormalization") > 0
    assert not any(node.op == "BatchNormalization" for node in folded.graph.nodes)
    p0, p1 = model.to_proto(), folded.to_proto()
    feeds = random_inputs(p0, model.input_shapes)
    a, b = run_model(p0, feeds)[0], run_model(p1, feeds)[0]
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5)
    _, report, _ = prune_model(model, PruneOptions(ratio=0.5, fold_bn=True))
    assert any("folded" in n for n in report["notes"])

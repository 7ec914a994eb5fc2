"""The pass protocol: a pass takes a Model, returns a new Model and a record; annotations ride along."""
import numpy as np
import onnx

import prunec
from models.zoo import build
from prunec.graph import ANNOTATION_PREFIX
from prunec.passes import FoldBatchNorm, Pass, Prune, Shrink, run_passes
from prunec.pipeline import PruneOptions, pipeline_passes


def _unnamed(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for n in out.graph.node:
        n.name = ""
    return out


def test_passes_follow_the_protocol_and_leave_their_input_alone():
    model = prunec.from_proto(build("resnet18"))
    before = model.to_proto().SerializeToString()
    analysis = prunec.analyze(model)
    plan = prunec.make_plan(analysis, prunec.score(analysis, "l2"), 0.5)
    passes = [Shrink(plan), FoldBatchNorm()]
    assert all(isinstance(p, Pass) for p in passes + pipeline_passes(PruneOptions(fold_bn=True)))
    out, results = run_passes(model, passes)
    assert [r.name for r in results] == ["shrink", "fold_bn"]
    assert results[0].channels_removed == plan.removed_channels > 0
    assert results[1].folded == sum(n.op == "BatchNormalization" for n in model.graph.nodes) > 0
    assert model.to_proto().SerializeToString() == before
    assert out.graph is not model.graph and len(out.graph.nodes) < len(model.graph.nodes)


def test_prune_pass_reports_its_plan_and_groups():
    model = prunec.from_proto(build("mobilenetv2"))
    pruned, result = Prune(PruneOptions(ratio=0.5))(model)
    assert result.analysis.model is model and result.plan.groups
    assert result.criterion == "l2" and set(result.timing) == {"analyze", "plan", "shrink"}
    assert prunec.coverage(result.analysis)["macs_share"] > 0.9


def test_analysis_does_not_rename_the_callers_nodes():
    model = prunec.from_proto(build("resnet18"))
    assert all(n.name for n in model.graph.nodes)  # loading names them
    for n in model.graph.nodes:
        n.name = ""  # a graph edited by hand
    analysis = prunec.analyze(model)
    assert all(not n.name for n in model.graph.nodes)
    assert analysis.model is not model and all(n.name for n in analysis.graph.nodes)


def test_loading_names_unnamed_nodes_by_op_and_index():
    model = prunec.from_proto(_unnamed(build("resnet18")))
    names = [n.name for n in model.graph.nodes]
    assert names[:2] == [f"{model.graph.nodes[0].op}_0", f"{model.graph.nodes[1].op}_1"]
    assert len(set(names)) == len(names)


def test_annotations_ride_through_passes_into_the_file_and_back(tmp_path):
    model = prunec.from_proto(build("resnet18")).with_annotations(sparsity={"conv_0": "2:4"}, note="x")
    pruned, _ = Shrink(prunec.make_plan(prunec.analyze(model), prunec.score(prunec.analyze(model)), 0.5))(model)
    assert pruned.annotations == {"sparsity": {"conv_0": "2:4"}, "note": "x"}
    path = prunec.save(pruned, tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props[ANNOTATION_PREFIX + "sparsity"] == '{"conv_0": "2:4"}'
    assert prunec.load(path).annotations == pruned.annotations
    # no annotations: nothing written (files stay what they were)
    plain = prunec.save(prunec.from_proto(build("resnet18")), tmp_path / "p.onnx")
    assert not [p for p in onnx.load(str(plain)).metadata_props if p.key.startswith(ANNOTATION_PREFIX)]


def test_model_copy_is_independent():
    model = prunec.from_proto(build("resnet18"))
    copy = model.copy()
    w = next(t for t in copy.graph.tensors().values() if t.name == "conv.weight_0")
    w.values = np.zeros_like(w.values)
    assert np.any(model.graph.tensors()["conv.weight_0"].values)

"""Every test model prunes at ratio 0.5 to a verified model; CNNs lose at least half their MACs."""
import pytest

import prunec
from models.zoo import BUILDERS, build
from prunec.pipeline import PruneOptions, prune_model

CNNS = ["resnet18", "resnet50", "mobilenetv2", "mobilenetv3", "yolov8", "unet", "resnet18_opset11"]


@pytest.mark.parametrize("name", [n for n in BUILDERS if n != "resnet50_full"])
def test_prunes_and_verifies(name):
    model = prunec.from_proto(build(name))
    pruned, report, plan = prune_model(model, PruneOptions(ratio=0.5))
    assert report["verify"]["ok"]
    assert report["macs"]["after"] < report["macs"]["before"]
    assert report["params"]["after"] < report["params"]["before"]
    assert plan.groups


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenetv2", "mobilenetv3", "yolov8"])
def test_macs_fall_at_least_2x(name):
    model = prunec.from_proto(build(name))
    _, report, _ = prune_model(model, PruneOptions(ratio=0.5))
    assert report["macs"]["before"] / report["macs"]["after"] >= 2.0


@pytest.mark.parametrize("name", CNNS)
def test_coverage_of_cnns(name):
    info = prunec.inspect(prunec.from_proto(build(name)))
    assert info["coverage"]["macs_share"] >= 0.9
    for g in info["skipped"]:
        assert g["reasons"], f"group {g['id']} skipped without a reason"


def test_vit_heads_and_head_dims_are_separate_groups():
    analysis = prunec.analyze(prunec.from_proto(build("vit")))
    sizes = sorted(g.size for g in analysis.prunable_groups)
    assert 4 in sizes, "attention heads (4) should form a group"
    assert 16 in sizes, "head_dim (64/4) should form a group"
    heads = [g for g in analysis.prunable_groups if g.size == 4]
    # a head group spans Q, K, V weights and the output projection's input
    roles = {(m.tensor, m.role) for g in heads[:1] for m in g.members}
    assert sum(1 for _, r in roles if r == "out") >= 3 and any(r == "in" for _, r in roles)


def test_grouped_conv_attribute_shrinks():
    model = prunec.from_proto(build("conv1d_audio"))
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    before = {n.name: n.attrs.get("group", 1) for n in model.graph.nodes if n.op == "Conv"}
    after = {n.name: n.attrs.get("group", 1) for n in pruned.graph.nodes if n.op == "Conv"}
    assert any(after[k] < v for k, v in before.items() if v > 1)

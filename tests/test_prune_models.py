"""Every test model prunes at ratio 0.5 to a verified model; CNNs lose at least half their MACs."""
import pytest

import prunec
from models.zoo import BUILDERS, build
from prunec.pipeline import PruneOptions, prune_model
from tests.exactness import assert_verified

CNNS = ["resnet18", "resnet50", "mobilenetv2", "mobilenetv3", "yolov8", "unet", "resnet18_opset11"]


@pytest.mark.parametrize("name", [n for n in BUILDERS if n != "resnet50_full"])
def test_prunes_and_verifies(name):
    model = prunec.from_proto(build(name))
    pruned, report, plan = prune_model(model, PruneOptions(ratio=0.5))
    assert_verified(report, model)
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


def test_exclude_keeps_a_nodes_output_channels():
    model = prunec.from_proto(build("resnet18"))
    conv = next(n for n in model.graph.nodes if n.op == "Conv" and n.inputs[1].shape[0] == 64)
    analysis = prunec.analyze(model, exclude=[conv.name])
    blocked = [g for g in analysis.groups if any(m.tensor == conv.inputs[1].name and m.role == "out" for m in g.members)]
    assert blocked and not blocked[0].prunable
    assert any("excluded by user" in r for r in blocked[0].blocked)
    pruned, _, _ = prune_model(model, PruneOptions(ratio=0.5, exclude=[conv.name]))
    after = {n.name: n for n in pruned.graph.nodes}[conv.name]
    assert after.inputs[1].shape[0] == 64


def test_rounding_and_floor():
    from prunec.plan import keep_count

    assert keep_count(64, 0.5, 8, 1) == 32
    assert keep_count(60, 0.5, 8, 1) == 32  # 30 rounded up to a multiple of 8
    assert keep_count(10, 0.9, 8, 1) == 8
    assert keep_count(64, 0.9, 1, 16) == 16  # floor
    model = prunec.from_proto(build("resnet18"))
    pruned, _, _ = prune_model(model, PruneOptions(ratio=0.6, round_to=16))
    for n in pruned.graph.nodes:
        if n.op == "Conv" and n.inputs[1].shape[0] not in (10,):
            assert n.inputs[1].shape[0] % 16 == 0

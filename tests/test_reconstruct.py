"""Reconstruction, data criteria, MACs budgets and multi-round pruning on small models."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import prunec
from models.zoo import build
from prunec import criteria
from prunec.criteria import Evidence
from prunec.macs import graph_macs
from prunec.passes import shrink
from prunec.pipeline import PruneOptions, prune_model
from prunec.plan import make_plan
from prunec.recovery.allocation import Floors, budget_plan, protected_groups
from prunec.recovery.data import CalibData, load_calib
from prunec.recovery.refit import find_layers, reconstruct
from prunec.recovery.sensitivity import group_sensitivity
from prunec.recovery.statistics import collect_stats
from prunec.recovery.scoring import output_error
from tests.calib_helpers import calib_arrays, small_cnn
from tests.exactness import assert_verified


def with_c1(model, edit) -> prunec.Model:
    """A copy of the model whose conv c1 weight and bias went through edit(w, b) (in place)."""
    tensors = model.graph.tensors()
    w, b = np.array(tensors["c1.w"].values), np.array(tensors["c1.b"].values)
    edit(w, b)
    copy = prunec.from_proto(model.to_proto())
    t = copy.graph.tensors()
    t["c1.w"].values, t["c1.b"].values = w, b
    return prunec.from_proto(copy.to_proto())


def duplicate_channels(w, b):
    w[8:], b[8:] = w[:8], b[:8]  # channels 8..15 duplicate 0..7


@pytest.fixture(scope="module")
def setup():
    model = prunec.from_proto(small_cnn())
    data = load_calib(calib_arrays(48), model)
    analysis = prunec.analyze(model)
    return model, data, analysis


@pytest.mark.parametrize("mode", ["sequential", "local"])
def test_reconstruction_reduces_output_error(setup, mode):
    model, data, analysis = setup
    plan = make_plan(analysis, criteria.score_groups(analysis, "l2"), 0.5, round_to=1)
    pruned = shrink(analysis, plan)
    layers = {l.name: l for l in find_layers(analysis, plan)}
    assert {"c2", "c3", "c4", "fc"} <= set(layers)  # conv, grouped conv and Gemm consumers
    refit, info = reconstruct(model, analysis, plan, pruned, data, mode=mode)
    assert info["layers"] == len(layers)
    before, after = output_error(model, pruned, data), output_error(model, refit, data)
    assert after < 0.5 * before, (before, after)
    prunec.verify(model, refit)


def test_deep_model_refits_sequentially_in_at_most_max_levels_passes(setup):
    """More levels than max_levels: sequential in max_levels passes of consecutive levels; every layer
    is refitted, and the error ends between the one-pass-per-level result and the pruned model's."""
    model, data, analysis = setup
    plan = make_plan(analysis, criteria.score_groups(analysis, "l2"), 0.5, round_to=1)
    pruned = shrink(analysis, plan)
    layers = find_layers(analysis, plan)
    levels = len({l.level for l in layers})
    assert levels >= 3
    per_level, full = reconstruct(model, analysis, plan, pruned, data, mode="auto")
    chunked, info = reconstruct(model, analysis, plan, pruned, data, mode="auto", max_levels=2)
    assert full["mode"] == info["mode"] == "sequential"
    assert full["passes"] == levels and info["passes"] == 2 and info["layers"] == len(layers)
    err = output_error(model, chunked, data)
    assert err < 0.5 * output_error(model, pruned, data)
    prunec.verify(model, chunked)


def test_reconstruction_on_unbatched_resnet():
    model = prunec.from_proto(build("resnet18"))
    name, shape = next(iter(model.input_shapes.items()))
    rng = np.random.default_rng(0)
    data = load_calib({name: rng.standard_normal([24] + shape[1:]).astype(np.float32)}, model)
    analysis = prunec.analyze(model)
    plan = make_plan(analysis, criteria.score_groups(analysis, "l2"), 0.5)
    pruned = shrink(analysis, plan)
    refit, info = reconstruct(model, analysis, plan, pruned, data, mode="local")
    assert info["layers"] > 10
    assert output_error(model, refit, data) < output_error(model, pruned, data)


def test_lossless_when_channels_are_redundant(setup):
    """A channel that is an exact copy of another can be removed and refitted with (almost) no error."""
    model, data, analysis = setup
    g = analysis.group("c1.w[0]")
    dup = with_c1(model, duplicate_channels)
    a = prunec.analyze(dup)
    plan = prunec.Plan({g.id: list(range(8, 16))})
    pruned = shrink(a, plan)
    refit, _ = reconstruct(dup, a, plan, pruned, data, lam=1e-6)
    assert output_error(dup, pruned, data) > 1e-2
    assert output_error(dup, refit, data) < 1e-6


def test_compensated_probe_sees_what_refit_repairs(setup):
    """Zeroing the duplicated half of c1 changes the output; fed the consumers' least-squares
    compensation (as reconstruction will do), the probe measures (almost) no error for it, while a
    group whose channels are not redundant still costs."""
    model, data, analysis = setup
    dup = with_c1(model, duplicate_channels)
    a = prunec.analyze(dup)
    gid = "c1.w[0]"
    scores = {g.id: np.arange(g.size, dtype=float)[::-1].copy() for g in a.prunable_groups}  # last channels first
    zeroed = dict(group_sensitivity(dup, a, data, scores, samples=16, probes=(0.5,)))
    compensated = dict(group_sensitivity(dup, a, data, scores, samples=16, probes=(0.5,), fit=data))
    (n, err_zero), = zeroed[gid]
    (n2, err_comp), = compensated[gid]
    assert n == n2 == 8
    assert err_zero > 1e-2 and err_comp < 1e-3 * err_zero, (err_zero, err_comp)
    others = [gid2 for gid2 in compensated if gid2 != gid and compensated[gid2][0][1] > 1e-4]
    assert others  # the probe still rates groups without redundant channels as costly


@pytest.mark.parametrize("criterion", ["act", "apoz", "output", "output-var"])
def test_data_criteria_score_every_group(setup, criterion):
    model, data, analysis = setup
    stats = collect_stats(model, data, criteria.get("act").stat_keys(analysis, analysis.prunable_groups))
    scores = criteria.score_groups(analysis, criterion, evidence=Evidence(stats=stats))
    assert set(scores) == {g.id for g in analysis.prunable_groups}
    for g in analysis.prunable_groups:
        assert scores[g.id].shape == (g.size,) and np.all(np.isfinite(scores[g.id]))


def test_output_criterion_finds_dead_channels(setup):
    model, data, analysis = setup

    def kill(w, b):
        w[[3, 11]] = 0
        b[[3, 11]] = -1.0  # ReLU kills them: they never reach c2

    m2 = with_c1(model, kill)
    a2 = prunec.analyze(m2)
    stats = collect_stats(m2, data, criteria.get("act").stat_keys(a2, a2.prunable_groups))
    s = criteria.score_groups(a2, "output", evidence=Evidence(stats=stats))["c1.w[0]"]
    assert set(np.argsort(s)[:2]) == {3, 11}


def test_target_macs_budget_and_floors(setup):
    model, data, analysis = setup
    stats = collect_stats(model, data, criteria.get("act").stat_keys(analysis, analysis.prunable_groups))
    scores = criteria.score_groups(analysis, "output", evidence=Evidence(stats=stats))
    sens = group_sensitivity(model, analysis, data, scores, samples=16)
    assert set(sens) == set(scores) and all(e >= 0 and n > 0 for v in sens.values() for n, e in v)
    protected = protected_groups(analysis)
    assert protected.get("c1.w[0]") == "stem" and protected.get("c4.w[0]") == "head"
    for target in (0.7, 0.5):
        plan = budget_plan(analysis, scores, target, sens, round_to=1, floors=Floors(protect=False))
        pruned = shrink(analysis, plan)
        ratio = graph_macs(pruned.graph, pruned.shapes) / graph_macs(model.graph, model.shapes)
        assert ratio <= target + 1e-9 and ratio > target - 0.15, ratio
    # with floors this tiny model cannot reach 0.5: the plan says so and the floors hold
    plan = budget_plan(analysis, scores, 0.5, sens, round_to=1)
    assert plan.meta["estimated_macs"] > 0.5 * graph_macs(model.graph, model.shapes)
    assert "not reachable" in plan.meta["budget"]
    for gid in protected:
        assert len(plan.groups.get(gid, [])) <= 0.25 * analysis.group(gid).size
    for g in analysis.prunable_groups:
        if g.size <= 8:
            assert g.id not in plan.groups



def test_no_group_is_cut_past_its_deepest_probe(setup):
    """A group whose probes all cost almost nothing is still cut no further than its deepest probe:
    beyond it the curve would be an extrapolation, not a measurement."""
    _, _, analysis = setup
    groups = [g for g in analysis.prunable_groups if g.size >= 16]
    scores = {g.id: np.arange(g.size, dtype=float) for g in groups}
    cheap = groups[0]
    sens = {g.id: [(g.size // 4, 1.0), (g.size // 2, 2.0), (3 * g.size // 4, 3.0)] for g in groups}
    sens[cheap.id] = [(cheap.size // 4, 1e-6), (cheap.size // 2, 2e-6), (3 * cheap.size // 4, 3e-6)]
    plan = budget_plan(analysis, scores, 0.3, sens, round_to=1, floors=Floors(protect=False, max_ratio=0.95))
    assert len(plan.groups.get(cheap.id, [])) == 3 * cheap.size // 4
    for g in groups:
        assert len(plan.groups.get(g.id, [])) <= max(n for n, _ in sens[g.id])
    # without measured curves (data-free shares) only the floors' max_ratio limits the cut
    free = budget_plan(analysis, {**scores, cheap.id: np.r_[np.zeros(cheap.size - 1), 1e6]}, 0.3, round_to=1,
                       floors=Floors(protect=False, max_ratio=0.95))
    assert len(free.groups.get(cheap.id, [])) > 3 * cheap.size // 4

def test_prune_model_with_steps_and_target(setup):
    model, data, _ = setup
    _, r1, _ = prune_model(model, PruneOptions(target_macs=0.5, calib=data.arrays, round_to=1, protect=False, steps=1))
    pruned, r2, plan = prune_model(model, PruneOptions(target_macs=0.5, calib=data.arrays, round_to=1, steps=2,
                                                          protect=False))
    for r in (r1, r2):
        assert r["macs"]["after"] <= 0.5 * r["macs"]["before"] + 1
        assert_verified(r, model)
    assert len(r2["steps"]) == 2
    for step in r2["steps"]:
        rec = step["reconstruct"]
        assert rec["output_error_after"] <= rec["output_error_before"]


def test_rounds_for_auto_steps():
    from prunec.passes.prune import TWO_ROUNDS_BELOW, rounds_for

    cut = TWO_ROUNDS_BELOW - 0.1
    assert rounds_for(PruneOptions(target_macs=cut), cut, calibrated=True) == 2
    assert rounds_for(PruneOptions(target_macs=TWO_ROUNDS_BELOW), TWO_ROUNDS_BELOW, calibrated=True) == 1
    assert rounds_for(PruneOptions(target_macs=cut), cut, calibrated=False) == 1  # no refit between rounds
    assert rounds_for(PruneOptions(ratio=0.5), None, calibrated=True) == 1  # --ratio: one round unless asked
    assert rounds_for(PruneOptions(target_latency=cut), cut, calibrated=True) == 1
    assert rounds_for(PruneOptions(target_macs=0.9, steps=3), 0.9, calibrated=True) == 3


def test_auto_steps_prune_twice_at_2x_unless_the_budget_is_short(setup):
    model, data, _ = setup
    opts = PruneOptions(target_macs=0.5, calib=data.arrays, round_to=1, protect=False)
    _, r, _ = prune_model(model, opts)
    assert [s["step"] for s in r["steps"]] == [1, 2] and "steps_note" not in r
    assert r["macs"]["after"] <= 0.5 * r["macs"]["before"] + 1
    assert_verified(r, model)
    # a recovery budget the scores alone overrun: one round, and the report says why
    _, r, _ = prune_model(model, PruneOptions(target_macs=0.5, calib=data.arrays, round_to=1, protect=False,
                                              recover_budget=1e-3))
    assert [s["step"] for s in r["steps"]] == [1] and "one round, not two" in r["steps_note"]
    assert r["macs"]["after"] <= 0.5 * r["macs"]["before"] + 1


def test_auto_steps_run_a_later_round_on_fewer_samples_when_the_budget_is_short(monkeypatch):
    """Two rounds chosen, then the first round leaves too little of the recovery budget: the second
    runs on MIN_ROUND_SAMPLES fit samples, its refit taking more rows from each, and says so."""
    from prunec.passes import prune

    model = prunec.from_proto(small_cnn())
    data = calib_arrays(160)
    monkeypatch.setattr(prune, "MIN_ROUND_SAMPLES", 16)
    monkeypatch.setattr(prune._Calibrated, "_two_rounds_fit", lambda self, t: True)
    _, r, _ = prune_model(model, PruneOptions(target_macs=0.5, calib=data, round_to=1, protect=False,
                                              recover_budget=1e-3))
    first, second = r["steps"]
    fit = r["calibration"]["fit_samples"]
    assert "samples" not in first and second["samples"] == 16
    assert first["reconstruct"]["samples"] == fit and second["reconstruct"]["samples"] == 16
    assert second["reconstruct"]["rows_per_sample"] == prune.REFIT_ROWS * min(prune.MAX_ROWS_SCALE, round(fit / 16))
    assert f"round 2 on 16 of the {fit} fit samples" in r["steps_note"]
    assert r["macs"]["after"] <= 0.5 * r["macs"]["before"] + 1
    assert_verified(r, model)
    # with the time to spare, every sample in every round
    _, r, _ = prune_model(model, PruneOptions(target_macs=0.5, calib=data, round_to=1, protect=False))
    assert [s["reconstruct"]["samples"] for s in r["steps"]] == [fit, fit] and "steps_note" not in r


def test_reconstruct_off_and_data_free_budget(setup):
    model, data, _ = setup
    _, r, _ = prune_model(model, PruneOptions(target_macs=0.6, round_to=1, protect=False))  # no data: uniform sensitivity
    assert r["macs"]["after"] <= 0.6 * r["macs"]["before"] + 1
    assert r["calibration"]["used"] is False
    _, r, _ = prune_model(model, PruneOptions(ratio=0.5, calib=data.arrays, reconstruct=False, round_to=1))
    assert "reconstruct" not in r["steps"][0]


def test_protect_with_ratio_keeps_stem_and_head(setup):
    model, data, analysis = setup
    _, r, plan = prune_model(model, PruneOptions(ratio=0.5, protect=True, round_to=1))
    protected = protected_groups(analysis)
    assert protected
    for gid in protected:
        assert len(plan.groups.get(gid, [])) <= 0.25 * analysis.group(gid).size
    assert_verified(r, model)


def test_committed_fashion_mnist_model_prunes_to_half_the_macs():
    """The benchmark model (no dataset needed here: uniform noise as calibration data)."""
    from models.fashion_mnist import INPUT_NAME, MODEL_PATH

    model = prunec.load(MODEL_PATH)
    x = np.random.default_rng(0).random((64, 1, 28, 28)).astype(np.float32)
    _, r, _ = prune_model(model, PruneOptions(target_macs=0.5, calib={INPUT_NAME: x}))
    assert r["macs"]["after"] <= 0.5 * r["macs"]["before"]
    assert r["steps"][0]["reconstruct"]["kept"]


def test_lsq_criterion_removes_redundant_channels_first(setup):
    """Greedy elimination under least-squares refit: duplicated channels cost nothing once refitted."""
    from prunec.recovery.statistics import collect_grams

    model, data, analysis = setup
    dup = with_c1(model, duplicate_channels)
    a = prunec.analyze(dup)
    lsq = criteria.get("lsq")
    grams = collect_grams(dup, data, lsq.gram_jobs(a, a.prunable_groups), rows=lsq.rows)
    scores = criteria.score_groups(a, "lsq", evidence=Evidence(grams=grams))
    assert set(scores) == {g.id for g in a.prunable_groups}
    s = scores["c1.w[0]"]
    first = np.argsort(s, kind="stable")[:8]
    assert np.all(np.isfinite(s)) and np.sort(s)[7] < 1e-3 < np.sort(s)[8]  # 8 channels nearly free (ridge)
    assert len({int(i) % 8 for i in first}) == 8  # one of each duplicated pair
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, criterion="lsq", calib=calib_arrays(48)))
    assert report["criterion"] == "lsq"
    prunec.verify(model, pruned)


def _scaled_outputs(scales, keep=None, noise=0.0):
    """y = Concat of one [1, 1] piece per channel: scale_c * keep_c * x_c (+ noise on the last one),
    as a detector concatenates boxes and scores."""
    n = len(scales)
    keep = keep or (1.0,) * n
    nodes, inits, pieces = [], [], []
    for c in range(n):
        inits += [numpy_helper.from_array(np.array([c], np.int64), f"i{c}"),
                  numpy_helper.from_array(np.array([[scales[c] * keep[c]]], np.float32), f"s{c}"),
                  numpy_helper.from_array(np.array([[noise if c == n - 1 else 0.0]], np.float32), f"b{c}")]
        nodes += [helper.make_node("Gather", ["x", f"i{c}"], [f"g{c}"], axis=1),
                  helper.make_node("Mul", [f"g{c}", f"s{c}"], [f"m{c}"]),
                  helper.make_node("Add", [f"m{c}", f"b{c}"], [f"p{c}"])]
        pieces.append(f"p{c}")
    nodes.append(helper.make_node("Concat", pieces, ["y"], axis=1))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    return prunec.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))


def test_output_error_weighs_every_output_channel():
    """One output concatenating values in the thousands (boxes in pixels) and in hundredths (scores):
    losing the small channel costs half the error, not nothing; a channel that hardly varies beside
    others of its piece is scored against a tenth of the largest one's variation, so its noise does
    not dominate."""
    x = np.random.default_rng(0).normal(size=(64, 1, 3)).astype(np.float32)
    ref = _scaled_outputs([1000.0, 0.01])
    data = CalibData({"x": x.reshape(64, 3)[:, :2]})
    lost = _scaled_outputs([1000.0, 0.01], keep=(1.0, 0.0))
    assert output_error(ref, lost, data) == pytest.approx(0.5, rel=0.05)
    three = CalibData({"x": x.reshape(64, 3)})
    from prunec.recovery.stream import relative_error

    ref3 = _scaled_outputs([1.0, 1.0, 1e-6])
    shifted = _scaled_outputs([1.0, 1.0, 1e-6], noise=1e-6)  # the tiny channel moves by its own size
    assert output_error(ref3, shifted, three) > 0.1  # pieces of their own: each its own units
    # one piece (one tensor): the tiny channel is scored against a tenth of the others' variation
    den = [np.array([64.0, 64.0, 64e-12])]
    assert relative_error([np.array([0.0, 0.0, 64e-12])], den) < 1e-6
    assert relative_error([np.array([0.0, 0.0, 64e-12])], den, [[2, 1]]) == pytest.approx(1 / 3)

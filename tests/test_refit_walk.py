"""The sequential refit run as a walk (prunec/recovery/walk.py: each pass runs only the nodes earlier
passes have not, from tensors they kept) computes the refit the plain passes compute."""
import numpy as np
import pytest

import prunec
from prunec import criteria
from prunec.passes import shrink
from prunec.plan import make_plan
from prunec.recovery import refit as refit_module
from prunec.recovery import walk as walk_module
from prunec.recovery.data import load_calib
from prunec.recovery.refit import find_layers, reconstruct
from prunec.recovery.stream import OriginalValues, Tapper
from prunec.recovery.walk import Walk, model_proto, plan_walk
from tests.calib_helpers import calib_arrays, small_cnn
from tests.test_probes import _data, branchy


def _setup(proto, data=None):
    model = prunec.from_proto(proto)
    data = data or _data(model, 24)
    analysis = prunec.analyze(model)
    plan = make_plan(analysis, criteria.score_groups(analysis, "l2"), 0.5, round_to=1)
    return model, data, analysis, plan, shrink(analysis, plan)


def _weights(model) -> dict[str, np.ndarray]:
    return {name: np.array(t.values) for name, t in model.graph.tensors().items() if hasattr(t, "values")}


def assert_same_refit(a, b, exact: bool):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        if exact:
            assert np.array_equal(wa[name], wb[name]), name
        else:  # parts run with ONNX Runtime's fusions: float32 rounding, amplified by ill-posed solves
            scale = np.abs(wa[name]).max() + 1e-12
            assert np.abs(wa[name] - wb[name]).max() <= 1e-2 * scale, name


@pytest.fixture
def fused_parts(monkeypatch):
    """Part models run with all of ONNX Runtime's fusions (not what the refit does: see _walks)."""
    real = Walk.__init__
    monkeypatch.setattr(Walk, "__init__", lambda self, *a, **kw: real(self, *a, **dict(kw, optimize=True)))


MODELS = {"small_cnn": lambda: (small_cnn(), load_calib(calib_arrays(48), prunec.from_proto(small_cnn()))),
          "branchy": lambda: (branchy(), None), "branchy_unbatched": lambda: (branchy(1), None)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_walked_passes_refit_what_the_plain_passes_refit(name):
    proto, data = MODELS[name]()
    model, data, analysis, plan, pruned = _setup(proto, data)
    assert len({l.level for l in find_layers(analysis, plan)}) >= 2
    plain, pinfo = reconstruct(model, analysis, plan, pruned, data, walk_bytes=0)
    walked, winfo = reconstruct(model, analysis, plan, pruned, data)
    assert pinfo["walk"]["segments"] == [pinfo["passes"]] * 2
    assert winfo["walk"]["segments"] == [1, 1] and winfo["layers"] == pinfo["layers"] > 0
    assert_same_refit(plain, walked, exact=True)


def test_fused_parts_refit_the_same_to_float_precision(fused_parts):
    model, data, analysis, plan, pruned = _setup(*MODELS["small_cnn"]())
    plain, _ = reconstruct(model, analysis, plan, pruned, data, walk_bytes=0)
    walked, info = reconstruct(model, analysis, plan, pruned, data)
    assert info["walk"]["segments"] == [1, 1]
    assert_same_refit(plain, walked, exact=False)


def test_a_stale_refit_is_caught(monkeypatch):
    """The check the tests above rely on: a walk that ran the pruned model as it was before any refit
    (no pass seeing the earlier passes' refits) refits differently."""
    model, data, analysis, plan, pruned = _setup(*MODELS["small_cnn"]())
    plain, _ = reconstruct(model, analysis, plan, pruned, data, walk_bytes=0)
    real = Walk.step
    stale = lambda self, k, m: real(self, k, m if m is model else pruned)  # noqa: E731 - before any refit
    monkeypatch.setattr(Walk, "step", stale)
    wrong, _ = reconstruct(model, analysis, plan, pruned, data)
    with pytest.raises(AssertionError):
        assert_same_refit(plain, wrong, exact=False)


def test_a_small_budget_cuts_the_walk_and_no_budget_runs_the_plain_passes(monkeypatch):
    model, data, analysis, plan, pruned = _setup(branchy())
    plain, pinfo = reconstruct(model, analysis, plan, pruned, data, walk_bytes=0)
    passes = pinfo["passes"]
    # a budget below what any two passes keep: every pass from the input, by the plain path
    built = []
    monkeypatch.setattr(refit_module, "Tapper", lambda *a, **kw: built.append(1) or Tapper(*a, **kw))
    tiny, info = reconstruct(model, analysis, plan, pruned, data, walk_bytes=2)
    assert info["walk"] == {"segments": [passes, passes], "kept_bytes": 0} and len(built) == 2 * passes
    assert_same_refit(plain, tiny, exact=True)
    # a budget that holds some passes' frontiers but not all: several segments, each within it
    xs, nbytes = _targets(analysis, plan, data)
    proto = model_proto(pruned)
    budget = plan_walk(proto, xs, nbytes, 2**40)[1] - 1
    steps, peak = plan_walk(proto, xs, nbytes, budget)
    assert 1 < sum(s.start for s in steps) < passes and peak <= budget
    monkeypatch.setattr(refit_module, "Tapper", Tapper)
    half, info = reconstruct(model, analysis, plan, pruned, data, walk_bytes=2 * budget)
    assert 1 < info["walk"]["segments"][0] and info["walk"]["kept_bytes"] <= 2 * budget
    assert_same_refit(plain, half, exact=True)


def _targets(analysis, plan, data):
    """The current model's targets of the passes (one level each) and the walk's byte counter."""
    layers = find_layers(analysis, plan)
    levels = sorted({l.level for l in layers})
    xs = [sorted({l.x for l in layers if l.level == lvl}) for lvl in levels]
    pruned = shrink(analysis, plan)
    return xs, lambda names: OriginalValues.nbytes(pruned, data, names)


def test_walk_steps_yield_what_runs_from_the_input_yield():
    """Every step's tensors equal a plain Tapper's on the same batches, on a model with a skip tensor
    read far downstream, a shape tensor and a graph input read by a late part."""
    model = prunec.from_proto(branchy())
    data = _data(model, 10)
    targets = [["r1"], ["r2", "shape3"], ["s", "x"], ["y", "z"]]
    steps, _ = plan_walk(model_proto(model), targets, lambda names: OriginalValues.nbytes(model, data, names), 2**30)
    walk = Walk(steps, data, 4)
    assert walk.segments == 1 and walk.steps[2].frontier == ["r1", "r2"]
    assert "r1" in walk.steps[0].keep  # read again by the third step's Add
    for k, t in enumerate(targets):
        tap = Tapper(model, t, only_taps=True)
        for got, batch in zip(walk.step(k, model), data.batches(4), strict=True):
            want = tap.run(batch)
            assert all(np.array_equal(got[n], want[n]) for n in t), (k, t)


def test_a_change_to_a_node_the_walk_ran_starts_a_new_segment():
    model = prunec.from_proto(branchy())
    proto = model_proto(model)
    nbytes = lambda names: 1  # noqa: E731
    targets = [["r1"], ["r2"], ["s"]]
    steps, _ = plan_walk(proto, targets, nbytes, 10)
    assert [s.start for s in steps] == [True, False, False]
    # c1 (which produced r1) changes after the second step: the third must not read the kept r1
    steps, _ = plan_walk(proto, targets, nbytes, 10, changes=[set(), {"c1"}, set()])
    assert [s.start for s in steps] == [True, False, True]


def test_a_part_onnx_runtime_cannot_load_runs_from_the_input(monkeypatch):
    model, data, analysis, plan, pruned = _setup(branchy())
    plain, _ = reconstruct(model, analysis, plan, pruned, data, walk_bytes=0)

    def broken(*a, **kw):
        raise RuntimeError("no")
    monkeypatch.setattr(walk_module, "part_model", broken)
    walked, info = reconstruct(model, analysis, plan, pruned, data)
    assert info["walk"]["part_fallbacks"] >= 1
    assert_same_refit(plain, walked, exact=True)

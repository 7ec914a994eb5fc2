"""Distillation: the ONNX graph as a JAX function matches ONNX Runtime; training lowers the held-out
error of a pruned model and writes a verified model with the same structure."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

jax = pytest.importorskip("jax")

import prunec  # noqa: E402
from models.zoo import BUILDERS, LARGE, build  # noqa: E402
from prunec.recovery.data import CalibData  # noqa: E402
from prunec.errors import PrunecError  # noqa: E402
from prunec.onnx_jax import JaxGraph  # noqa: E402
from prunec.pipeline import PruneOptions, prune_model  # noqa: E402
from prunec.runtime import random_inputs, session  # noqa: E402

# one of each family in the default suite, the rest with -m slow
QUICK = ["mobilenetv3", "yolov8", "unet", "vit", "groupnorm_net", "conv1d_audio"]
ZOO = [pytest.param(n, marks=() if n in QUICK else pytest.mark.slow) for n in sorted(set(BUILDERS) - LARGE)]


@pytest.mark.parametrize("name", ZOO)
def test_jax_graph_matches_onnxruntime(name):
    model = prunec.from_proto(build(name))
    proto = model.to_proto()
    feeds = random_inputs(proto, model.input_shapes, seed=1)
    ref = session(proto).run(None, feeds)
    g = JaxGraph(proto)
    got = g.run(g.params(), feeds)
    for r, o in zip(ref, got):
        o = np.asarray(o)
        assert o.shape == r.shape
        np.testing.assert_allclose(o, r, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(r).max())))


@pytest.mark.parametrize("scale", [2.0, 3.0, 1.5])
@pytest.mark.parametrize("ctm", ["asymmetric", "half_pixel"])
def test_nearest_resize_and_pointwise_conv_match_onnxruntime(scale, ctm):
    """Integer nearest upsampling runs as broadcast + reshape and 1x1 convs as matmuls (their
    gradients are much faster on XLA's CPU backend): same values as ONNX Runtime, and the
    gradient of a sum of the output counts every copy of an input once per copy."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 1, 1)).astype(np.float32), "w")
    sc = numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "sc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Resize", ["c", "", "sc"], ["y"], mode="nearest", coordinate_transformation_mode=ctm)]
    n = int(5 * scale)
    g = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, n, n])], [w, sc])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = rng.normal(size=(1, 3, 5, 5)).astype(np.float32)
    ref = session(proto).run(None, {"x": x})[0]
    net = JaxGraph(proto)
    params = net.params()
    np.testing.assert_allclose(np.asarray(net.run(params, {"x": x})[0]), ref, rtol=1e-5, atol=1e-5)
    if scale == 2.0:
        grad = jax.grad(lambda xx: net.run(params, {"x": xx})[0].sum())(x)
        per_input = 4 * numpy_helper.to_array(w)[:, :, 0, 0].sum(0)  # 4 copies, each through every output
        np.testing.assert_allclose(np.asarray(grad), np.broadcast_to(per_input[None, :, None, None], x.shape), rtol=1e-5)


def _lstm_model(bidirectional=True, hidden=6, feat=5, seq=7):
    rng = np.random.default_rng(0)
    nd = 2 if bidirectional else 1
    w = numpy_helper.from_array(rng.normal(0, 0.4, (nd, 4 * hidden, feat)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.normal(0, 0.4, (nd, 4 * hidden, hidden)).astype(np.float32), "R")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (nd, 8 * hidden)).astype(np.float32), "B")
    p = numpy_helper.from_array(rng.normal(0, 0.1, (nd, 3 * hidden)).astype(np.float32), "P")
    gr = numpy_helper.from_array(rng.normal(0, 0.3, (1, 3 * hidden, hidden)).astype(np.float32), "GR")
    gb = numpy_helper.from_array(rng.normal(0, 0.1, (1, 6 * hidden)).astype(np.float32), "GB")
    shape = numpy_helper.from_array(np.array([seq, 1, nd * hidden], np.int64), "shape")
    gwt = numpy_helper.from_array(rng.normal(0, 0.3, (1, 3 * hidden, nd * hidden)).astype(np.float32), "GWT")
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "B", "", "", "", "P"], ["y", "yh", "yc"], hidden_size=hidden,
                         direction="bidirectional" if bidirectional else "forward"),
        helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["yt", "shape"], ["ys"]),
        helper.make_node("GRU", ["ys", "GWT", "GR", "GB"], ["z", "zh"], hidden_size=hidden, linear_before_reset=1),
    ]
    g = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, 1, feat])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [seq, 1, 1, hidden]),
                           helper.make_tensor_value_info("yh", TensorProto.FLOAT, [nd, 1, hidden])],
                          [w, r, b, p, gwt, gr, gb, shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_recurrent_layers_match_onnxruntime(bidirectional):
    proto = _lstm_model(bidirectional)
    onnx.checker.check_model(proto)
    x = np.random.default_rng(1).normal(size=(7, 1, 5)).astype(np.float32)
    ref = session(proto).run(None, {"x": x})
    g = JaxGraph(proto)
    assert {"W", "R", "B", "P", "GWT", "GR", "GB"} <= set(g.trainable)
    for r, o in zip(ref, g.run(g.params(), {"x": x})):
        np.testing.assert_allclose(np.asarray(o), r, rtol=1e-4, atol=1e-5)


def test_unsupported_op_is_a_clear_error():
    node = helper.make_node("NonMaxSuppression", ["b", "s"], ["i"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4, 4]),
                                        helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1, 4])],
                          [helper.make_tensor_value_info("i", TensorProto.INT64, None)])
    with pytest.raises(PrunecError, match="NonMaxSuppression.*--recover refit"):
        JaxGraph(helper.make_model(g, ir_version=8))


def test_distill_lowers_held_out_error_and_keeps_the_graph():
    from prunec.passes.distill import distill
    from prunec.recovery.scoring import output_error

    model = prunec.from_proto(build("resnet18"))
    rng = np.random.default_rng(0)
    name = next(iter(model.input_shapes))
    shape = model.input_shapes[name]
    x = rng.normal(size=(48, *shape[1:])).astype(np.float32)
    fit, check = CalibData({name: x[:40]}), CalibData({name: x[40:]})
    pruned, _, _ = prune_model(model, PruneOptions(ratio=0.5))
    out, res = distill(model, pruned, fit, check, epochs=6, lr=1e-3, batch=8)
    assert res.held_out_loss_after < 0.9 * res.held_out_loss_before
    assert output_error(model, out, check) < output_error(model, pruned, check)
    # same graph, new weights
    a, b = pruned.to_proto(), out.to_proto()
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    assert {i.name: tuple(i.dims) for i in a.graph.initializer} == {i.name: tuple(i.dims) for i in b.graph.initializer}
    prunec.verify(model, out)


def test_steps_too_large_go_back_to_the_best_weights_at_a_lower_rate():
    """A rate far too high for the model makes the held-out loss jump: distillation returns to the
    best weights and cuts the rate instead of spending its budget on a diverged model."""
    from prunec.passes.distill import BACKOFF, distill

    model = prunec.from_proto(build("resnet18"))
    name = next(iter(model.input_shapes))
    x = np.random.default_rng(0).normal(size=(24, *model.input_shapes[name][1:])).astype(np.float32)
    fit, check = CalibData({name: x[:16]}), CalibData({name: x[16:]})
    pruned, _, _ = prune_model(model, PruneOptions(ratio=0.5))
    logs = []
    _, res = distill(model, pruned, fit, check, epochs=3, lr=3.0, batch=4, log=logs.append)
    assert res.backoffs >= 1 and any("steps too large" in m for m in logs)
    assert res.lr == pytest.approx(3.0 * BACKOFF ** res.backoffs)
    assert res.held_out_loss_after <= res.held_out_loss_before


def test_inner_targets_match_the_teachers_kept_channels():
    """The student's refitted-layer outputs are pulled towards the teacher's kept channels: with the
    feature term the inner error falls further than with outputs alone, and the held-out error too."""
    from prunec.dependency import analyze
    from prunec.passes.distill import _feature_loss, distill, inner_targets
    from prunec.passes.shrink import shrink
    from prunec.plan import make_plan

    model = prunec.from_proto(build("resnet18"))
    rng = np.random.default_rng(0)
    name = next(iter(model.input_shapes))
    x = rng.normal(size=(48, *model.input_shapes[name][1:])).astype(np.float32)
    fit, check = CalibData({name: x[:40]}), CalibData({name: x[40:]})
    analysis = analyze(model)
    from prunec.criteria import get
    crit = get("l2")
    scores = crit.score_groups(analysis, analysis.prunable_groups, None)
    plan = make_plan(analysis, scores, 0.5)
    pruned = shrink(analysis, plan)
    features = inner_targets(analysis, plan)
    assert features and any(f.keep is not None for f in features)
    inner = _feature_loss(jax, model, features, fit)
    feeds = {name: check.arrays[name][:1]}

    def inner_error(student):
        net = JaxGraph(student.to_proto())
        one = [{name: check.arrays[name][i:i + 1]} for i in range(len(check))]
        return np.mean([float(inner(f, net.run(net.params(), f, [t.name for t in features]))) for f in one])

    # the teacher against itself: zero (kept channels all, same tensors)
    teacher_targets = [type(f)(f.name, f.axis, None) for f in features]
    assert float(_feature_loss(jax, model, teacher_targets, fit)(
        feeds, JaxGraph(model.to_proto()).run(JaxGraph(model.to_proto()).params(), feeds,
                                              [f.name for f in features]))) < 1e-8
    plain, r0 = distill(model, pruned, fit, check, epochs=4, batch=8)
    both, r1 = distill(model, pruned, fit, check, epochs=4, batch=8, features=features)
    assert r0.inner_targets == 0 and 0 < r1.inner_targets <= len(features)  # graph outputs count as outputs
    assert inner_error(both) < inner_error(plain) < inner_error(pruned)
    assert r1.held_out_loss_after < r1.held_out_loss_before


@pytest.mark.slow
def test_pipeline_recover_distill_reports_and_verifies():
    model = prunec.from_proto(build("resnet18"))
    name = next(iter(model.input_shapes))
    x = np.random.default_rng(0).normal(size=(40, *model.input_shapes[name][1:])).astype(np.float32)
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, calib={name: x}, recover="distill",
                                                        recover_epochs=2, criterion="l2"))
    rec = report["recovery"]
    assert rec["method"] == "distill" and rec["epochs"] <= 2
    assert report["calibration"]["output_error"] == pytest.approx(
        min(rec["output_error_after"], rec["output_error_before"]))
    prunec.verify(model, pruned)


def test_recover_distill_without_data_is_refused():
    model = prunec.from_proto(build("resnet18"))
    with pytest.raises(PrunecError, match="needs calibration data"):
        prune_model(model, PruneOptions(ratio=0.5, target_macs=0.5, recover="distill"))



def _tiny_run(monkeypatch, budget: float, refit_s: float):
    """prune_model with distillation on a small zoo CNN, the plan and refit made to look `refit_s`
    long; distillation replaced by a recorder of the budget it is given."""
    import time
    from types import SimpleNamespace

    import prunec.passes.distill as distill_pass
    import prunec.passes.prune as prune_pass

    model = prunec.from_proto(build("mobilenetv3"))
    name = next(iter(model.input_shapes))
    x = np.random.default_rng(0).normal(size=(24, *model.input_shapes[name][1:])).astype(np.float32)
    shift, given = {"s": 0.0}, {}
    monkeypatch.setattr(prune_pass, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + shift["s"]))
    orig_refit = prune_pass._Calibrated._refit

    def slow_refit(self, *a, **k):
        out = orig_refit(self, *a, **k)
        shift["s"] += refit_s  # the refit "took" refit_s more seconds
        return out

    class Recorder:
        def __init__(self, *a, budget_s=None, **k):
            given["budget_s"] = budget_s

        def __call__(self, m):
            return m, distill_pass.DistillResult(name="distill")
    monkeypatch.setattr(prune_pass._Calibrated, "_refit", slow_refit)
    monkeypatch.setattr(distill_pass, "Distill", Recorder)
    _, report, _ = prune_model(model, PruneOptions(ratio=0.3, calib={name: x}, recover="distill",
                                                   recover_budget=budget, criterion="l2"))
    return report["recovery"], given.get("budget_s")


def test_recover_budget_covers_plan_refit_and_distillation(monkeypatch):
    """--recover-budget is the whole recovery's: distillation gets what the plan and refit left."""
    rec, given = _tiny_run(monkeypatch, budget=200.0, refit_s=150.0)
    assert rec["method"] == "distill" and rec["budget_s"] == 200.0
    assert 20.0 <= given <= 50.0  # 200 s less the 150 s refit and the real seconds the plan took


def test_recover_budget_spent_by_the_refit_skips_distillation(monkeypatch):
    rec, given = _tiny_run(monkeypatch, budget=100.0, refit_s=95.0)
    assert given is None  # never called
    assert rec["method"] == "refit" and "distillation skipped" in rec["note"] and "100 s" in rec["note"]


def test_the_held_out_checks_around_distillation_are_in_its_budget(monkeypatch):
    """Distill times the check before training and gives training its budget less twice that (the
    check after costs the same), so the whole pass ends within the budget."""
    import time

    import prunec.passes.distill as distill_pass

    teacher = prunec.from_proto(build("mobilenetv3"))
    name = next(iter(teacher.input_shapes))
    x = np.random.default_rng(0).normal(size=(8, *teacher.input_shapes[name][1:])).astype(np.float32)
    data = CalibData({name: x})
    given = {}

    def slow_error(a, b, d):
        time.sleep(0.2)
        return 1.0

    def recorder(original, model, fit, check, budget_s=None, **kw):
        given["budget_s"] = budget_s
        return model, distill_pass.DistillResult(name="distill")
    monkeypatch.setattr(distill_pass, "output_error", slow_error)
    monkeypatch.setattr(distill_pass, "distill", recorder)
    distill_pass.Distill(teacher, data, data, budget_s=10.0)(teacher)
    assert 9.0 <= given["budget_s"] <= 9.6  # 10 s less twice the 0.2 s check


def test_the_unpruned_prefix_is_frozen_and_stays_the_teachers():
    """Layers that still compute the teacher's tensors exactly (here the stem, excluded from pruning)
    are not trained: their weights come back unchanged, the pruned layers' do not."""
    from prunec.passes.distill import distill, unpruned_prefix

    model = prunec.from_proto(build("resnet18"))
    teacher_net = JaxGraph(model.to_proto())
    assert unpruned_prefix(model, teacher_net) == set(teacher_net.trainable)  # the teacher is all prefix
    stem = next(n for n in model.graph.nodes if n.op == "Conv")
    pruned, _, _ = prune_model(model, PruneOptions(ratio=0.5, exclude=[stem.name]))
    net = JaxGraph(pruned.to_proto())
    frozen = unpruned_prefix(model, net)
    stem_weight = stem.inputs[1].name
    assert stem_weight in frozen and len(frozen) < len(net.trainable)
    for name in frozen:  # only tensors equal to the teacher's
        assert np.array_equal(net.consts[name], teacher_net.consts[name])
    rng = np.random.default_rng(0)
    name = next(iter(model.input_shapes))
    x = rng.normal(size=(24, *model.input_shapes[name][1:])).astype(np.float32)
    fit, check = CalibData({name: x[:16]}), CalibData({name: x[16:]})
    out, res = distill(model, pruned, fit, check, epochs=3, batch=8)
    assert res.frozen_tensors == len(frozen) and res.trained_tensors == len(net.trainable) - len(frozen)
    trained = JaxGraph(out.to_proto()).consts
    assert all(np.array_equal(trained[k], net.consts[k]) for k in frozen)
    assert any(not np.array_equal(trained[k], net.consts[k]) for k in set(net.trainable) - frozen)
    _, every = distill(model, pruned, fit, check, epochs=1, batch=8, freeze_exact=False)
    assert every.frozen_tensors == 0 and every.trained_tensors == len(net.trainable)


def test_an_unpruned_student_has_nothing_to_train():
    from prunec.passes.distill import distill

    model = prunec.from_proto(build("resnet18"))
    name = next(iter(model.input_shapes))
    x = np.random.default_rng(0).normal(size=(8, *model.input_shapes[name][1:])).astype(np.float32)
    out, res = distill(model, model, CalibData({name: x[:6]}), CalibData({name: x[6:]}), epochs=2, batch=4)
    assert out is model and res.steps == 0 and res.trained_tensors == 0
    assert res.frozen_tensors == len(JaxGraph(model.to_proto()).trainable) and "nothing to train" in res.stopped


def test_kth_largest_along_an_axis():
    from prunec.passes.distill import kth_largest

    t = np.random.default_rng(0).normal(size=(3, 5, 1, 40)).astype(np.float32)
    got = kth_largest(t, 3, 5)
    assert got.shape == (3, 5, 1, 1)
    assert np.array_equal(got[..., 0], np.sort(t, axis=3)[..., -5])
    assert np.array_equal(kth_largest(t[..., :3], 3, 5)[..., 0], t[..., :3].min(3))  # k past the axis: its smallest


def test_decision_term_weighs_the_rows_top_entries(monkeypatch):
    """A CTC-like head: with decision_weight the loss adds the mean error over each row's deciding
    entries (so the held-out loss starts higher), and training lowers it."""
    import prunec.passes.distill as D

    model = prunec.from_proto(build("crnn_unrolled"))  # [8 steps, 1, 20 classes]
    monkeypatch.setattr(D, "DECISION_MIN_CLASSES", 16)
    rng = np.random.default_rng(0)
    name = next(iter(model.input_shapes))
    x = rng.normal(size=(48, *model.input_shapes[name][1:])).astype(np.float32)
    fit, check = CalibData({name: x[:40]}), CalibData({name: x[40:]})
    pruned, _, _ = prune_model(model, PruneOptions(ratio=0.5))
    _, plain = D.distill(model, pruned, fit, check, epochs=1, batch=8, decision_weight=0.0)
    _, default = D.distill(model, pruned, fit, check, epochs=1, batch=8)
    assert default.held_out_loss_before > 1.05 * plain.held_out_loss_before  # on by default
    out, res = D.distill(model, pruned, fit, check, epochs=6, batch=8, decision_weight=1.0, decision_k=3)
    assert res.held_out_loss_before > 1.05 * plain.held_out_loss_before
    assert res.held_out_loss_after < 0.9 * res.held_out_loss_before
    monkeypatch.setattr(D, "DECISION_MIN_CLASSES", 64)  # 20 classes: no term
    _, short = D.distill(model, pruned, fit, check, epochs=1, batch=8, decision_weight=1.0)
    assert short.held_out_loss_before == pytest.approx(plain.held_out_loss_before)


def test_output_weights_are_per_class_when_classes_outnumber_time_steps():
    """A CTC recognizer exporting [1, time steps, classes] with more classes than steps (PaddleOCR:
    40 x 6625) is weighed per class, along the model's channel axis, not per time step."""
    from models.recognizer import text_recognizer
    from prunec.passes.distill import output_weights, teacher_outputs

    model = prunec.from_proto(text_recognizer(classes=80), input_shapes={"input": [1, 1, 32, 96]})
    x = np.random.default_rng(0).random((4, 1, 1, 32, 96), dtype=np.float32)
    names = [o.name for o in model.graph.outputs]
    targets = teacher_outputs(model, CalibData({"input": x.reshape(4, 1, 32, 96)}), names)
    steps, classes = targets[names[0]].shape[2:]
    assert steps < classes == 80
    w = output_weights(model, [targets], names)[names[0]]
    assert w.shape == (1, 1, 80)


def test_softmax_outputs_are_matched_by_their_centred_logits():
    """A Softmax output is distilled through its logits, centred per row: a student whose logits are
    the teacher's plus a constant (the same probabilities) has nothing left to learn; the rule applies
    only to a Softmax along the output's class axis."""
    from prunec.passes.distill import distill, softmax_logits
    from softmax_head import softmax_head as _softmax_head

    teacher, shifted = _softmax_head(), _softmax_head(bias_shift=3.0)
    assert softmax_logits(teacher, shifted, ["y"]) == {"y": ("logits", 2)}
    assert softmax_logits(_softmax_head(axis=1), _softmax_head(axis=1), ["y"]) == {}  # over time steps
    assert softmax_logits(_softmax_head(axis=1, opset=11), _softmax_head(axis=1, opset=11), ["y"]) == {}
    x = np.random.default_rng(0).normal(size=(24, 1, 4, 8)).astype(np.float32)
    fit, check = CalibData({"x": x[:16, 0]}), CalibData({"x": x[16:, 0]})
    logs = []
    _, res = distill(teacher, shifted, fit, check, epochs=1, batch=8, log=logs.append)
    assert res.held_out_loss_before < 1e-9 and any("logits" in m for m in logs)
    # probabilities of a really different head: matched by logits, the loss falls
    other = _softmax_head(bias_shift=0.0)
    other_graph = other.graph.copy()
    other_graph.tensors()["b"].values = np.random.default_rng(5).normal(size=70).astype(np.float32)
    other = other.with_graph(other_graph)
    out, res = distill(teacher, other, fit, check, epochs=20, batch=8, lr=0.1)
    assert res.held_out_loss_after < 0.5 * res.held_out_loss_before


def test_balanced_agreement_counts_each_teacher_class_alike():
    from prunec.passes.distill import balanced_agreement

    teacher = np.array([[0, 0, 0, 0, 0, 0, 1, 2]])  # a CTC-like row: mostly blanks (class 0)
    student = np.array([[0, 0, 0, 0, 0, 0, 0, 2]])  # drops the 1: 7 of 8 steps agree
    assert balanced_agreement([(teacher, student)]) == pytest.approx(2 / 3)
    assert balanced_agreement([(teacher, teacher), (teacher[:, :2], teacher[:, :2])]) == 1.0


def test_decision_guard_never_keeps_a_check_whose_winners_agree_less(monkeypatch):
    """A softmax head over 70 classes: distillation reports the held-out agreement of its winners;
    when every later check agrees less than the start (forced here), none is kept, whatever its loss."""
    import prunec.passes.distill as D
    from softmax_head import softmax_head as _softmax_head

    teacher, other = _softmax_head(), _softmax_head(bias_shift=0.0)
    g = other.graph.copy()
    g.tensors()["b"].values = np.random.default_rng(5).normal(size=70).astype(np.float32)
    other = other.with_graph(g)
    x = np.random.default_rng(0).normal(size=(24, 1, 4, 8)).astype(np.float32)
    fit, check = CalibData({"x": x[:16, 0]}), CalibData({"x": x[16:, 0]})
    _, res = D.distill(teacher, other, fit, check, epochs=20, batch=8, lr=0.1)
    assert res.best_epoch > 0 and res.held_out_loss_after < 0.5 * res.held_out_loss_before
    assert res.held_out_agreement_after >= res.held_out_agreement_before
    calls = []
    monkeypatch.setattr(D, "balanced_agreement", lambda pairs: calls.append(1) or (1.0 if len(calls) == 1 else 0.9))
    out, res = D.distill(teacher, other, fit, check, epochs=20, batch=8, lr=0.1)
    assert len(calls) > 2 and res.best_epoch == 0 and out is other
    _, res = D.distill(teacher, other, fit, check, epochs=20, batch=8, lr=0.1, decision_guard=False)
    assert res.best_epoch > 0 and res.held_out_agreement_before is None


def test_biases_and_spelled_out_layernorm_weights_are_trained():
    """MatMul -> Add's bias and a spelled-out LayerNorm's gamma/beta are weights to train; an epsilon,
    a constant Add after a Conv (an anchor grid) and scalars are not."""
    from prunec.onnx_jax.graph import affine_constants

    n = helper.make_node
    nodes = [n("MatMul", ["x", "w"], ["xw"]), n("Add", ["xw", "bias"], ["h"]),
             n("ReduceMean", ["h"], ["mu"], axes=[-1]), n("Sub", ["h", "mu"], ["d"]),
             n("Pow", ["d", "two"], ["d2"]), n("ReduceMean", ["d2"], ["var"], axes=[-1]),
             n("Add", ["var", "eps"], ["ve"]), n("Sqrt", ["ve"], ["sd"]), n("Div", ["d", "sd"], ["z"]),
             n("Mul", ["gamma", "z"], ["zg"]), n("Add", ["zg", "beta"], ["y"]),
             n("Conv", ["img", "k"], ["c"]), n("Add", ["c", "grid"], ["cg"]), n("Add", ["xw", "three"], ["x3"])]
    f = np.float32
    consts = {"w": np.ones((4, 6), f), "bias": np.ones(6, f), "two": np.array(2, f), "eps": np.array(1e-5, f),
              "gamma": np.ones(6, f), "beta": np.zeros(6, f), "k": np.ones((2, 1, 1, 1), f),
              "grid": np.ones((1, 2, 1, 1), f), "three": np.array([3.0], f)}
    assert affine_constants(nodes, consts) == {"bias", "gamma", "beta"}

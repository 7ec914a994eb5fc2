"""Allocation probes that run only the part of the model after each group give the curves the
whole-model probes give (prunec/recovery/downstream.py, sensitivity.group_sensitivity)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import prunec
from models import control_flow
from prunec import criteria
from prunec.recovery import sensitivity
from prunec.recovery.data import load_calib
from prunec.recovery.downstream import part_after
from prunec.recovery.sensitivity import group_sensitivity
from tests.calib_helpers import calib_arrays, small_cnn


def branchy(batch="N") -> onnx.ModelProto:
    """x -> c1 -> c2 -> c3 (+ c1's output) -> c4 -> reshaped to x's shape (+ x) -> y; c1's output also
    -> pool -> fc -> z. So a part reads a graph input, a skip tensor from far upstream and a shape
    computed upstream, and the groups after c1 leave the output z as it was."""
    rng = np.random.default_rng(3)
    inits = []

    def w(name, *shape):
        a = rng.standard_normal(shape) * np.sqrt(2.0 / max(int(np.prod(shape[1:])), 1))
        inits.append(numpy_helper.from_array(a.astype(np.float32), name))
        return name

    def b(name, k):
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(k)).astype(np.float32), name))
        return name

    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node("Conv", ["x", w("c1.w", 16, 3, 3, 3), b("c1.b", 16)], ["c1"], pads=pads, name="c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("Conv", ["r1", w("c2.w", 16, 16, 3, 3), b("c2.b", 16)], ["c2"], pads=pads, name="c2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
        helper.make_node("Conv", ["r2", w("c3.w", 16, 16, 3, 3)], ["c3"], pads=pads, name="c3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="r3"),
        helper.make_node("Add", ["r3", "r1"], ["s"], name="skip"),
        helper.make_node("Conv", ["s", w("c4.w", 3, 16, 1, 1), b("c4.b", 3)], ["c4"], name="c4"),
        helper.make_node("Shape", ["r1"], ["shape16"], name="shape"),
        helper.make_node("Gather", ["shape16", "idx"], ["dims"], axis=0, name="dims"),
        helper.make_node("Concat", ["dims", "three", "hw"], ["shape3"], axis=0, name="shape3"),
        helper.make_node("Reshape", ["c4", "shape3"], ["c4r"], name="reshape"),
        helper.make_node("Add", ["c4r", "x"], ["y"], name="residual"),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", w("fc.w", 5, 16), b("fc.b", 5)], ["z"], transB=1, name="fc"),
    ]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "idx"),
              numpy_helper.from_array(np.array([3], np.int64), "three"),
              numpy_helper.from_array(np.array([8, 8], np.int64), "hw")]
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 8, 8]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _data(model, n=24, seed=0):
    rng = np.random.default_rng(seed)
    return load_calib({k: (0.5 + rng.standard_normal([n] + s[1:])).astype(np.float32)
                       for k, s in model.input_shapes.items()}, model)


def assert_same_curves(a: dict, b: dict):
    assert set(a) == set(b)
    top = max(e for curve in a.values() for _, e in curve)
    for gid in a:
        assert [n for n, _ in a[gid]] == [n for n, _ in b[gid]], gid
        for (n, ea), (_, eb) in zip(a[gid], b[gid]):
            # float32 runs of differently scheduled kernels: errors agree to float precision
            assert abs(ea - eb) <= 1e-3 * abs(ea) + 1e-6 * top, (gid, n, ea, eb)


def _curves(model, data, compensated, **kw):
    analysis = prunec.analyze(model)
    scores = criteria.score_groups(analysis, "l2")
    return group_sensitivity(model, analysis, data, scores, samples=16, fit=data if compensated else None, **kw)


@pytest.mark.parametrize("batch", ["N", 1])
@pytest.mark.parametrize("compensated", [False, True])
def test_parts_give_the_whole_models_curves(batch, compensated):
    model = prunec.from_proto(branchy(batch))
    data = _data(model)
    whole = _curves(model, data, compensated, cache_bytes=0)
    parts = _curves(model, data, compensated)
    assert_same_curves(whole, parts)
    assert any(e > 1e-3 for curve in parts.values() for _, e in curve)  # the probes do measure something


def test_the_part_after_a_group_reads_the_original_where_it_must():
    model = prunec.from_proto(branchy())
    proto = model.to_proto()
    part = part_after(proto, {"c3.w"})  # the group of c2's channels: its consumer is c3
    names = [proto.graph.node[i].name for i in part.nodes]
    assert names[0] == "c3" and not {"c1", "c2", "gap", "fc"} & set(names)
    assert {"r2", "r1", "x"} <= set(part.frontier) and "c3.w" in part.fed
    assert part.outputs == ["y"]  # z does not depend on c2's channels


def test_a_small_budget_splits_the_cache_and_sends_big_frontiers_to_the_whole_model(monkeypatch):
    model = prunec.from_proto(small_cnn())
    data = load_calib(calib_arrays(24), model)
    whole = _curves(model, data, True, cache_bytes=0)
    # c2's part reads r1, 16x16x16 floats per sample (16 KiB); the later parts read 8x8 maps or less
    sent, chunks = [], []
    real_whole, real_tapper = sensitivity._whole_model_curves, sensitivity.Tapper

    def whole_curves(model, groups, *args):
        sent.extend(g.id for g in groups)
        return real_whole(model, groups, *args)

    def tapper(model, taps, **kw):
        if kw.get("only_taps"):
            chunks.append(taps)
        return real_tapper(model, taps, **kw)
    monkeypatch.setattr(sensitivity, "_whole_model_curves", whole_curves)
    monkeypatch.setattr(sensitivity, "Tapper", tapper)
    small = _curves(model, data, True, cache_bytes=16 * (16 * 16 * 16 * 4 - 1))
    assert sent == ["c1.w[0]"] and len(chunks) >= 1
    assert_same_curves(whole, small)
    sent.clear(), chunks.clear()
    tiny = _curves(model, data, True, cache_bytes=16 * (8 * 8 * 32 + 10) * 4 + 1)
    assert len(chunks) >= 2  # no two frontiers fit together: one pass of the original each
    assert_same_curves(whole, tiny)


def test_parts_with_control_flow_read_outer_tensors_in_bodies():
    model = prunec.from_proto(control_flow.if_conv_paths())
    data = _data(model, 16)
    assert_same_curves(_curves(model, data, True, cache_bytes=0), _curves(model, data, True))


def test_a_tensor_of_unknown_size_is_never_cached():
    """Memory budgets (probe frontiers, the refit cache) count a tensor without an inferred shape as
    too big, not as 0 bytes, so an odd model falls back to the slower path instead of unbounded memory."""
    from prunec.recovery.stream import UNKNOWN_BYTES, OriginalValues

    model = prunec.from_proto(small_cnn())
    data = load_calib(calib_arrays(4), model)
    known = next(t for t, s in model.shapes.items() if len(s) == 4)
    size = OriginalValues.nbytes(model, data, [known])
    assert 0 < size == 4 * 4 * int(np.prod(model.shapes[known][1:]))
    assert OriginalValues.nbytes(model, data, [known, "no_such_tensor"]) == UNKNOWN_BYTES

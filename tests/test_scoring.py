"""Softmax outputs are scored by their centred logits (prunec/recovery/scoring.py)."""
import numpy as np
import pytest
from onnx import numpy_helper

import prunec
from prunec.recovery.data import CalibData
from prunec.recovery.scoring import output_error, scoring_view, softmax_outputs
from prunec.runtime import session
from softmax_head import softmax_head as _head


@pytest.mark.parametrize("opset", [13, 18])
def test_the_view_outputs_centred_logits_under_the_output_name(opset):
    model = _head(opset=opset)
    assert softmax_outputs(model) == {"y": ("logits", 2)}
    view = scoring_view(model)
    x = np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32)
    (got,) = session(view.to_proto()).run(["y"], {"x": x})
    proto = model.to_proto()
    wv = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "w"))
    bv = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "b"))
    z = x @ wv + bv
    np.testing.assert_allclose(got, z - z.mean(-1, keepdims=True), rtol=1e-5, atol=1e-5)
    assert [o.name for o in view.graph.outputs] == ["y"]


def test_softmax_over_another_axis_or_flattened_is_left_alone():
    for model in (_head(axis=1), _head(axis=1, opset=11)):  # over the time steps; opset 11 flattens from axis 1
        assert softmax_outputs(model) == {}
        assert scoring_view(model) is model


def test_output_error_ignores_a_shift_of_the_logits_and_sees_a_change_the_probabilities_hide():
    teacher = _head()
    x = np.random.default_rng(0).normal(size=(16, 4, 8)).astype(np.float32)
    data = CalibData({"x": x})
    assert output_error(teacher, _head(bias_shift=3.0), data) < 1e-10
    # a head whose logits differ only in classes the softmax leaves near 0: probabilities barely move
    proto = teacher.to_proto()
    b = next(i for i in proto.graph.initializer if i.name == "b")
    bv = numpy_helper.to_array(b).copy()
    wv = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "w"))
    z = x @ wv + bv
    top = np.argsort(z, axis=-1)[..., -5:]  # classes in some row's top 5
    never = np.setdiff1d(np.arange(70), top.ravel())
    assert len(never) >= 8
    bv[never] -= 5.0
    b.CopyFrom(numpy_helper.from_array(bv, "b"))
    lowered = prunec.from_proto(proto)
    s0, s1 = session(teacher.to_proto()), session(lowered.to_proto())
    p0 = np.concatenate([s0.run(None, {"x": x[i:i + 1]})[0] for i in range(16)])
    p1 = np.concatenate([s1.run(None, {"x": x[i:i + 1]})[0] for i in range(16)])
    prob_err = float(((p1 - p0) ** 2).sum() / (p0 ** 2).sum())
    assert output_error(teacher, lowered, data) > 10 * prob_err

"""Transposed convs with kernel == stride (detector necks' 2x upsampling) compile as a 1x1 conv
and a depth-to-space copy (backend/cpu/conv_transpose.py); others stay conv2d_transpose."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from schedule_helpers import run_against_onnxruntime, schedule_onnx, scheduled_functions  # noqa: E402


def _net(c, o, k, stride, pads=(0, 0, 0, 0), bias=True, hw=6):
    """ConvTranspose c -> o, then ReLU (an epilogue after the depth-to-space)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((c, o, k, k)).astype("float32"), "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(o).astype("float32"), "b"))
        ins.append("b")
    out = (hw - 1) * stride - pads[0] - pads[2] + k
    nodes = [helper.make_node("ConvTranspose", ins, ["t"], kernel_shape=[k, k],
                              strides=[stride, stride], pads=list(pads)),
             helper.make_node("Relu", ["t"], ["y"])]
    g = helper.make_graph(nodes, "ct", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, c, hw, hw])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, o, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("c,o,k,bias", [(24, 24, 2, True), (24, 1, 2, False), (5, 3, 3, True)])
def test_kernel_equal_to_stride_runs_as_a_1x1_conv(tmp_path, c, o, k, bias):
    m = _net(c, o, k, k, bias=bias)
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "ct.onnx")
    funcs = scheduled_functions(scheduled, "")
    assert not any("conv2d_transpose" in n for n in funcs), sorted(funcs)
    assert all(funcs.values()), funcs  # no function left to TVM's unscheduled loops
    if c >= 16:  # prunec's packed 1x1 conv (tiny channel counts keep TVM's conv2d compute)
        assert any("prunec_conv2d" in n for n in funcs), sorted(funcs)
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    for got, want in zip(outs, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_overlapping_or_padded_transposed_convs_are_left_alone(tmp_path):
    m = _net(8, 8, 3, 2, pads=(1, 1, 1, 1))
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "ct.onnx")
    assert any("conv2d_transpose" in n for n in scheduled_functions(scheduled, ""))
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    for got, want in zip(outs, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

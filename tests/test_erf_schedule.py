"""erf and GELU as vector polynomials (cpu/compute/erf.py): accurate to float32 against the
exact erf and ONNX Runtime, over both branches and the far tails, standalone, as a product's
fused GELU epilogue (as torch exports it) and as ONNX's Gelu op; no libm erf call is left."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

from schedule_helpers import run_against_onnxruntime, schedule_onnx, scheduled_functions  # noqa: E402


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("e_x", f32, [4, 500]),
              helper.make_tensor_value_info("g_x", f32, [20, 48]),
              helper.make_tensor_value_info("o_x", f32, [3, 40])]
    w = (rng.standard_normal((48, 64)) / 4).astype(np.float32)
    inits = [numpy_helper.from_array(w, "g_w"),
             numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "g_b"),
             numpy_helper.from_array(np.array(math.sqrt(2), np.float32), "sqrt2"),
             numpy_helper.from_array(np.array(1, np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array(3, np.float32), "three")]
    nodes = [
        # erf over [-9, 9] and beyond: both branches, the clamp, the sign
        helper.make_node("Mul", ["e_x", "three"], ["e_s"]),
        helper.make_node("Erf", ["e_s"], ["e_y"]),
        # x @ w + b, then GELU the way torch exports it: fused into the product's write-back
        helper.make_node("MatMul", ["g_x", "g_w"], ["g_p"]),
        helper.make_node("Add", ["g_p", "g_b"], ["g_h"]),
        helper.make_node("Div", ["g_h", "sqrt2"], ["g_d"]),
        helper.make_node("Erf", ["g_d"], ["g_e"]),
        helper.make_node("Add", ["g_e", "one"], ["g_1"]),
        helper.make_node("Mul", ["g_h", "g_1"], ["g_m"]),
        helper.make_node("Mul", ["g_m", "half"], ["g_y"]),
        helper.make_node("Gelu", ["o_x"], ["o_y"]),  # opset 20
    ]
    outputs = [helper.make_tensor_value_info("e_y", f32, [4, 500]),
               helper.make_tensor_value_info("g_y", f32, [20, 64]),
               helper.make_tensor_value_info("o_y", f32, [3, 40])]
    g = helper.make_graph(nodes, "erf", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def test_erf_and_gelu_match_exact_and_onnxruntime(tmp_path):
    m = _model()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "erf.onnx")
    fused = scheduled_functions(scheduled, "prunec_matmul")
    assert any("erf" in name for name in fused) and all(fused.values()), fused
    for gv, f in scheduled.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            assert "T.erf(" not in f.script(), gv.name_hint  # a scalar libm call per element
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)

    rng = np.random.default_rng(1)  # the inputs run_against_onnxruntime fed, in order
    feeds = [rng.standard_normal(i["shape"]).astype(np.float32) for i in sig["inputs"]]
    x = (feeds[0] * np.float32(3)).astype(np.float64)
    exact = np.vectorize(math.erf)(x)
    assert np.abs(x).max() > 4 and (np.abs(x) < 1).sum() > 100  # both branches and the clamp
    err = np.abs(outs[0] - exact)
    assert err.max() < 3e-7, (err.max(), x.flat[err.argmax()])
    small = (np.abs(x) < 1) & (x != 0)
    assert (err[small] / np.abs(exact[small])).max() < 5e-7  # no cancellation near 0
    for name, got, want in zip(["erf", "gelu_epilogue", "gelu_op"], outs, ref):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)

    o = feeds[2].astype(np.float64)
    gelu = o * 0.5 * (1 + np.vectorize(math.erf)(o / math.sqrt(2)))
    np.testing.assert_allclose(outs[2], gelu, rtol=0, atol=3e-7)


def test_erf_expression_tails_and_signs():
    """Compiled alone: exact values at 0, signed zeros kept, +-1 beyond the clamp (inf too)."""
    from tvm import te

    from prunec.backend.cpu.compute.erf import fast_erf_expr

    x = te.placeholder((8,), "float32", name="x")
    y = te.compute(x.shape, lambda i: fast_erf_expr(x[i]), name="y")
    lib = tvm.compile(te.create_prim_func([x, y]), target={"kind": "llvm"})
    xs = np.array([0.0, -0.0, 1e-30, -1e-8, 3.9, -4.5, np.inf, -np.inf], np.float32)
    out = tvm.runtime.tensor(np.zeros(8, np.float32))
    lib(tvm.runtime.tensor(xs), out)
    got = out.numpy()
    assert got[0] == 0 and not np.signbit(got[0]) and got[1] == 0 and np.signbit(got[1])
    np.testing.assert_allclose(got[2:4], 2 / math.sqrt(math.pi) * xs[2:4], rtol=1e-6)
    np.testing.assert_allclose(got[4:], [math.erf(3.9), -1, 1, -1], rtol=0, atol=1e-7)

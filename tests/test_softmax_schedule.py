"""Softmax over the last axis as a row kernel (cpu/compute/softmax.py, cpu/schedule/softmax.py)
against ONNX Runtime and numpy: attention scores (196 = 4 chunks of 49), rows of whole vectors,
a 197-token row (one long vector), short rows, a mask added before it; rows with no fitting
chunk and other axes keep fastmath's softmax."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

tvm = pytest.importorskip("tvm")

from schedule_helpers import run_against_onnxruntime, schedule_onnx  # noqa: E402

F32 = TensorProto.FLOAT
# (name, shape, axis, row kernel expected)
CASES = [("scores", [1, 3, 196, 196], -1, True), ("vectors", [2, 5, 64], -1, True),
         ("cls", [4, 197], -1, True), ("short", [3, 37], -1, True),
         ("classes", [2, 8210], -1, False), ("dfl", [1, 16, 4, 30], 1, False)]


def _model() -> onnx.ModelProto:
    nodes, inputs, outputs = [], [], []
    for name, shape, axis, _ in CASES:
        inputs.append(helper.make_tensor_value_info(f"{name}_x", F32, shape))
        nodes.append(helper.make_node("Softmax", [f"{name}_x"], [f"{name}_y"], axis=axis))
        outputs.append(helper.make_tensor_value_info(f"{name}_y", F32, shape))
    inputs += [helper.make_tensor_value_info("m_x", F32, [2, 3, 40, 40]),
               helper.make_tensor_value_info("m_m", F32, [1, 1, 40, 40])]
    nodes += [helper.make_node("Add", ["m_x", "m_m"], ["m_s"]),
              helper.make_node("Softmax", ["m_s"], ["mask_y"], axis=-1)]
    outputs.append(helper.make_tensor_value_info("mask_y", F32, [2, 3, 40, 40]))
    g = helper.make_graph(nodes, "softmax", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_row_softmax_matches_onnxruntime_and_numpy(tmp_path):
    m = _model()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "softmax.onnx")
    funcs = {gv.name_hint: f for gv, f in scheduled.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc)}
    assert all(f.attrs.get("tirx.is_scheduled", False) for f in funcs.values()), list(funcs)
    rows = sum("prunec_rsoftmax" in f.script() for f in funcs.values())
    assert rows == sum(c[3] for c in CASES) + 1, rows  # + the masked one
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    rng = np.random.default_rng(1)  # run_against_onnxruntime's inputs, in order
    feeds = [rng.standard_normal(i["shape"]).astype(np.float64) for i in sig["inputs"]]
    want = [_softmax(feeds[i], c[2]) for i, c in enumerate(CASES)]
    want.append(_softmax(feeds[-2] + feeds[-1], -1))
    for name, got, r, w in zip([c[0] for c in CASES] + ["mask"], outs, ref, want):
        assert got.shape == r.shape == w.shape, name
        np.testing.assert_allclose(got, r, rtol=1e-5, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7, err_msg=name)


def test_chunk_divides_the_row():
    from prunec.backend.cpu.compute.softmax import chunk

    assert chunk(196, 16) == 49   # no multiple of 16 divides 196
    assert chunk(64, 16) == 64    # 4 vectors per chunk: independent accumulators
    assert chunk(96, 16) == 48
    assert chunk(197, 16) == 197  # prime: the row as one long vector
    assert chunk(37, 16) == 37
    assert chunk(8210, 16) == 0   # no divisor fits and too long for one vector
    assert chunk(197, 8) == 0 and chunk(127, 8) == 127  # AVX2: up to 16 vectors of 8

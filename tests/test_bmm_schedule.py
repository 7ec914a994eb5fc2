"""Products of two activations (cpu/compute/bmm.py, cpu/schedule/bmm.py) against ONNX Runtime
and numpy: attention's Q K^T (K transposed in the graph, a scaling epilogue, token counts that
fill no whole panel) and P V at the head dims pruning leaves (64, 48, 40), batch dims that
broadcast, and a one-row product that keeps TVM's own path."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

from schedule_helpers import run_against_onnxruntime, schedule_onnx, scheduled_functions  # noqa: E402

F32 = TensorProto.FLOAT
# (name, a shape, b shape): plain MatMul of two inputs
PLAIN = [
    ("av64", [1, 3, 50, 50], [1, 3, 50, 64]),   # P V, two whole panels of 32
    ("av48", [1, 2, 37, 37], [1, 2, 37, 48]),   # pruned head dim: 3 panels of 16, 37 rows (prime)
    ("av40", [1, 2, 30, 30], [1, 2, 30, 40]),   # 40 = 2.5 vectors: padded to 48, cropped
    ("b2d", [2, 5, 20], [20, 40]),              # the second operand broadcast over the batch
    ("bcast", [3, 1, 7, 24], [1, 2, 24, 48]),   # both broadcast
    ("one_row", [1, 3, 1, 16], [1, 3, 16, 20]),  # one row: not ours
    ("av48_3h", [1, 3, 28, 28], [1, 3, 28, 48]),  # 3 heads x 3 panels: odd on 2 threads
    ("b2d_3", [3, 28, 20], [20, 48]),           # the same with a broadcast second operand
]


def _model() -> onnx.ModelProto:
    nodes, inputs, outputs, inits = [], [], [], []
    for name, a, b in PLAIN:
        inputs += [helper.make_tensor_value_info(f"{name}_a", F32, a),
                   helper.make_tensor_value_info(f"{name}_b", F32, b)]
        nodes.append(helper.make_node("MatMul", [f"{name}_a", f"{name}_b"], [f"{name}_y"]))
        out = list(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))) + [a[-2], b[-1]]
        outputs.append(helper.make_tensor_value_info(f"{name}_y", F32, out))
    # Q K^T / sqrt(d) as exported: K [1, T, H, d] transposed to [1, H, d, T]; 50 tokens
    inputs += [helper.make_tensor_value_info("q", F32, [1, 2, 50, 24]),
               helper.make_tensor_value_info("k", F32, [1, 50, 2, 24])]
    inits.append(numpy_helper.from_array(np.array(24 ** 0.5, np.float32), "sqrt_d"))
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
              helper.make_node("MatMul", ["q", "kt"], ["s"]),
              helper.make_node("Div", ["s", "sqrt_d"], ["qk_y"])]
    outputs.append(helper.make_tensor_value_info("qk_y", F32, [1, 2, 50, 50]))
    g = helper.make_graph(nodes, "bmm", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("mcpu", [None, "haswell"])
def test_activation_products_match_onnxruntime_and_numpy(tmp_path, mcpu):
    m = _model()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "bmm.onnx", mcpu=mcpu)
    ours = scheduled_functions(scheduled, "prunec_bmm")
    assert len(ours) == len(PLAIN) - 1 + 1 and all(ours.values()), ours  # all but one_row, + QK
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    rng = np.random.default_rng(1)  # run_against_onnxruntime's inputs, in order
    feeds = [rng.standard_normal(i["shape"]).astype(np.float64) for i in sig["inputs"]]
    want = [feeds[2 * i] @ feeds[2 * i + 1] for i in range(len(PLAIN))]
    q, k = feeds[-2:]
    want.append(q @ k.transpose(0, 2, 3, 1) / 24 ** 0.5)
    names = [c[0] for c in PLAIN] + ["qk"]
    for name, got, r, w in zip(names, outs, ref, want):
        assert got.shape == r.shape == w.shape, name
        np.testing.assert_allclose(got, r, rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4, err_msg=name)


def test_panel_width_pads_least():
    from prunec.backend.cpu.compute.bmm import bmm_panel, broadcast_batch

    assert bmm_panel(196, 16) == 16   # 13 x 16 = 208 columns, not 7 x 32 = 224
    assert bmm_panel(64, 16) == 32    # whole panels either way: the wider
    assert bmm_panel(48, 16) == 16
    assert bmm_panel(40, 16) == 16    # 48: half vectors (5 x 8) ran QK^T at 196 1.2x slower
    assert bmm_panel(6, 16) == 8      # narrower than a vector: half a vector
    assert bmm_panel(40, 8) == 8
    assert bmm_panel(20, 4) == 4
    assert broadcast_batch([1, 3], [3]) == [1, 3]
    assert broadcast_batch([2, 1], [1, 5]) == [2, 5]
    assert broadcast_batch([2], [3]) is None


def test_head_panel_tasks_that_do_not_divide_among_the_threads_split_their_rows(tmp_path):
    """2 threads: 3 heads x 3 panels (9 tasks) run as 18 half-row tasks; 4 or 6 tasks stay."""
    import re

    scheduled, _, _ = schedule_onnx(_model(), tmp_path, "bmm.onnx")
    extents = sorted(int(e) for gv, f in scheduled.functions.items()
                     if "prunec_bmm" in gv.name_hint and isinstance(f, tvm.tirx.PrimFunc)
                     for e in re.findall(r"T\.parallel\((?:T\.int64\()?(\d+)", f.script()))
    # QK^T 2 x 2 panels; av64/av48/av40/b2d 6; bcast 6 batches x 3 panels; the two 9s split
    assert extents == [4, 6, 6, 6, 6, 18, 18, 18], extents

"""Products of several rows by a constant weight (cpu/compute/matmul.py, cpu/schedule/matmul.py)
against ONNX Runtime: column counts that fill whole panels or not (a recognizer's 8210-class
head), 2-D Gemm and 3-D MatMul (an LSTM's input projection over all steps), with and without an
epilogue; one-row products and products of two activations keep their own paths."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

from schedule_helpers import run_against_onnxruntime, schedule_onnx, scheduled_functions  # noqa: E402

# (name, x shape, N, op, bias)
CASES = [
    ("head_odd", [32, 96], 130, "Gemm", True),       # 130 = 4 panels of 32 + 2: cropped
    ("proj_3d", [6, 1, 40], 64, "MatMul", True),     # rows 6 x 1, whole panels, bias epilogue
    ("steps_batch", [5, 2, 6], 56, "MatMul", True),  # 5 steps x batch 2: tiles of 2 rows
    ("narrow", [5, 24], 20, "Gemm", False),          # narrower than two vectors, 5 rows
    ("crop_out", [4, 16], 50, "MatMul", False),      # the crop is the function's output
    ("one_row", [1, 64], 48, "Gemm", True),          # one row: the streamed gemv
    ("pruned_144", [14, 48], 144, "MatMul", True),   # 9 one-vector panels: odd on 2 threads
]


def _model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, inputs, outputs = [], [], [], []
    for name, xs, n, op, bias in CASES:
        k = xs[-1]
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, xs))
        w = rng.standard_normal((n, k) if op == "Gemm" else (k, n)).astype(np.float32) / k ** 0.5
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        ins = [f"{name}_x", f"{name}_w"]
        y = f"{name}_y" if not (bias and op == "MatMul") else f"{name}_p"
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32),
                                                 f"{name}_b"))
        if op == "Gemm":
            nodes.append(helper.make_node("Gemm", ins + ([f"{name}_b"] if bias else []), [y],
                                          transB=1))
        else:
            nodes.append(helper.make_node("MatMul", ins, [y]))
            if bias:
                nodes.append(helper.make_node("Add", [y, f"{name}_b"], [f"{name}_y"]))
        outputs.append(helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                     xs[:-1] + [n]))
    # two activations: no constant weight to pack
    inputs += [helper.make_tensor_value_info("act_a", TensorProto.FLOAT, [8, 24]),
               helper.make_tensor_value_info("act_b", TensorProto.FLOAT, [24, 40])]
    nodes.append(helper.make_node("MatMul", ["act_a", "act_b"], ["act_y"]))
    outputs.append(helper.make_tensor_value_info("act_y", TensorProto.FLOAT, [8, 40]))
    g = helper.make_graph(nodes, "products", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("mcpu", [None, "haswell"])
def test_packed_products_match_onnxruntime(tmp_path, mcpu):
    m = _model()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "products.onnx", mcpu=mcpu)
    packed = scheduled_functions(scheduled, "prunec_matmul")
    assert len(packed) == 6, packed  # every case but the one-row product and the activations
    assert all(packed.values()), packed
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    assert len(outs) == len(ref) == len(CASES) + 1
    for name, got, want in zip([c[0] for c in CASES] + ["act"], outs, ref):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_row_tile_fits_the_registers_and_is_a_box():
    from prunec.backend.cpu.schedule.matmul import row_tile

    assert row_tile([32], 16, 32) == 8        # 8 rows x 2 vectors: 16 of AVX-512's 32 registers
    assert row_tile([32, 1], 16, 32) == 8     # an LSTM's steps x batch 1
    assert row_tile([6], 16, 32) == 6
    assert row_tile([32], 8, 16) == 4         # AVX2: 4 rows x 2 vectors of its 16 registers
    assert row_tile([13], 16, 32) == 1        # a prime over the cap: one row per tile
    assert row_tile([5, 2], 16, 32) == 2      # 5 of 10 rows would span (0,0)..(2,0): not a box
    assert row_tile([4, 3], 16, 32) == 6      # two whole rows of 3
    assert row_tile([2, 2, 3], 16, 32) == 6


def test_panel_width_pads_least():
    from prunec.backend.cpu.compute.matmul import panel_width

    assert panel_width(144, 16) == 16     # 9 x 16, not 5 x 32 = 160 (a pruned ViT's width)
    assert panel_width(192, 16) == 32     # whole panels either way: the wider
    assert panel_width(130, 16) == 16     # 144 rather than 160
    assert panel_width(8210, 16) == 32    # 8224 either way
    assert panel_width(6625, 16) == 32    # 6640 vs 6656: 0.2% is not worth the narrower tile
    assert panel_width(360, 16) == 32     # 368 vs 384: 4%, still not
    assert panel_width(20, 16) == 16      # narrower than two vectors: one
    assert panel_width(144, 8) == 16      # AVX2: 9 x 16 = 18 x 8: the wider


def _parallel_extents(func) -> list[int]:
    """The extents of func's parallel loops, read off its TVMScript."""
    import re

    return [int(e) for e in re.findall(r"T\.parallel\((?:T\.int64\()?(\d+)", func.script())]


def test_panels_that_do_not_divide_among_the_threads_share_row_tiles(tmp_path):
    """2 threads: 9 panels are split with their row tiles (panels x tiles in one parallel
    loop), 2 panels stay the parallel loop alone (the fused index costs a little)."""
    m = _model()
    scheduled, _, _ = schedule_onnx(m, tmp_path, "products.onnx")
    extents = sorted(tuple(_parallel_extents(f)) for gv, f in scheduled.functions.items()
                     if "prunec_matmul" in gv.name_hint and isinstance(f, tvm.tirx.PrimFunc))
    assert extents == [(2,), (2,), (2,), (2,), (9,), (18,)], extents

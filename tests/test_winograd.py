"""Winograd F(m x m, 3 x 3) convs: the transform algebra, the per-layer choice, and the compiled
stages against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from prunec.backend.cpu.compute import winograd


@pytest.mark.parametrize("m", [2, 4])
def test_matrices_compute_a_correlation(m):
    bt, g, at = winograd.matrices(m)
    rng = np.random.default_rng(m)
    d, k = rng.standard_normal(m + 2), rng.standard_normal(3)
    want = np.array([d[i:i + 3] @ k for i in range(m)])
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), want, rtol=1e-12, atol=1e-12)


def _numpy_winograd(x, w, m, ob):
    """The four stages in numpy, with transform_weight's packed layout."""
    bt, _, at = winograd.matrices(m)
    a = m + 2
    c, h, wd = x.shape
    u = winograd.transform_weight(w, m, ob).astype(np.float64)  # [e, OC/ob, C, ob]
    u = u.transpose(0, 2, 1, 3).reshape(a, a, c, -1)  # [a, a, C, OC]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    y = np.zeros((w.shape[0], h, wd))
    for ty in range(h // m):
        for tx in range(wd // m):
            d = xp[:, ty * m:ty * m + a, tx * m:tx * m + a]
            v = np.einsum("ir,crs,js->ijc", bt, d, bt)
            mm = np.einsum("ijc,ijco->ijo", v, u)
            y[:, ty * m:ty * m + m, tx * m:tx * m + m] = np.einsum("pi,ijo,qj->opq", at, mm, at)
    return y


@pytest.mark.parametrize("m,ob", [(2, 8), (4, 16)])
def test_packed_weight_reproduces_the_direct_conv(m, ob):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 12))
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    direct = np.einsum("oikl,iyxkl->oyx", w.astype(np.float64),
                       np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2)))
    # U is stored in float32; F(4)'s output transform (coefficients up to 8) amplifies its rounding
    np.testing.assert_allclose(_numpy_winograd(x, w, m, ob), direct, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,want", [
    ((64, 64, 56, 56), 4),      # ResNet-18 stage 1: 0.6 MB of transformed weight
    ((128, 128, 28, 28), 2),    # F(4) would be 2.4 MB: F(2), 1 MB
    ((256, 256, 14, 14), 2),    # 14 is not a multiple of 4; F(2) 4.2 MB
    ((512, 512, 7, 7), 0),      # odd size, and 9.4 MB of weights for 25 KB of input: direct
    ((8, 16, 56, 56), 0),       # too few input channels to amortize the transforms
    ((64, 24, 56, 56), 0),      # output channels not whole vectors
    ((64, 64, 8, 8), 4),        # 4 tiles already gain: 20 us vs 46 direct (MIN_TILES)
    ((32, 32, 20, 20), 4),      # pruned YOLOv8n at 320: 25 tiles of F(4), not 100 of F(2)
    ((128, 128, 10, 10), 2),    # YOLOv8n's 10x10 convs: F(2), 25 tiles
    ((64, 64, 2, 2), 0),        # one tile
])
def test_choose_tile(shape, want):
    c, oc, oh, ow = shape
    assert winograd.choose_tile(c, oc, oh, ow, 16) == want


def test_output_channels_pad_to_whole_vectors_by_at_most_half():
    assert winograd.padded_out_channels(24, 16) == 32  # PP-OCRv4's detector head
    assert winograd.padded_out_channels(48, 16) == 48
    assert winograd.padded_out_channels(24, 8) == 24
    assert winograd.padded_out_channels(20, 16) == 0  # 32 would be 1.6x the work
    assert winograd.padded_out_channels(8, 16) == 0


def test_tile_rows_without_a_divisor_are_padded():
    # 52x52, F(4): 13 tiles a row; AVX-512's 28 accumulators hold the row, AVX2's 12 hold no
    # divisor of 13 (1-tile register tiles; before, the schedule failed there, then F(2) had
    # 2-tile ones): the row is computed as 2 x 7 tiles, the 14th cropped
    from prunec.backend.cpu.facts import wino_row_tiles

    assert winograd.choose_tile(48, 48, 52, 52, 16) == 4
    assert winograd.choose_tile(48, 48, 52, 52, 8) == 4
    assert wino_row_tiles(13, 16, 16) == (13, 13)
    assert wino_row_tiles(13, 8, 8) == (7, 14)
    assert wino_row_tiles(26, 8, 8) == (9, 27)
    assert wino_row_tiles(20, 8, 8) == (10, 20)  # YOLOv8n at 320: unpadded


# (name, channels in, channels out, size, residual, activation): F(4) rows of tiles first; F(2);
# F(2) with more channels than tiles (channel blocks first); channel counts of a pruned model;
# YOLO's conv + SiLU (x * sigmoid(x) reads x twice), also before a residual add; F(2) where F(4)
# with a tile row no register tile divides (13 tiles on AVX2's 12 accumulators: padded to 14)
CASES = [("f4_res", 16, 32, 24, True, "Relu"), ("f2", 32, 16, 14, False, "Relu"),
         ("f2_wide", 64, 128, 10, True, "Relu"), ("pruned", 20, 48, 20, False, "Relu"),
         ("f4_silu", 16, 16, 40, False, "SiLU"), ("f2_silu_res", 32, 32, 10, True, "SiLU"),
         ("f4_5_tiles", 32, 32, 20, True, "SiLU"),  # pruned YOLOv8n: 5 tiles a row
         ("f4_at_52", 48, 48, 52, True, "SiLU"),  # ddddocr's detector: F(4) has 13 tiles a row
         ("padded_oc", 32, 24, 20, True, "Relu")]  # 24 outputs: 32 on AVX-512, cropped


def _model(seed=0):
    rng = np.random.default_rng(seed)
    nodes, inits, inputs, outputs = [], [], [], []
    for name, cin, cout, size, residual, act in CASES:
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, [1, cin, size, size]))
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * (2.0 / (9 * cin)) ** 0.5
        inits += [numpy_helper.from_array(w, f"{name}_w"),
                  numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}_b")]
        nodes.append(helper.make_node("Conv", [f"{name}_x", f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        last = f"{name}_c"
        if act == "SiLU":  # YOLOv8: x + silu(conv(x)) in its bottlenecks
            nodes += [helper.make_node("Sigmoid", [last], [f"{name}_s"]),
                      helper.make_node("Mul", [last, f"{name}_s"], [f"{name}_m"])]
            last = f"{name}_m"
        if residual:
            inputs.append(helper.make_tensor_value_info(f"{name}_r", TensorProto.FLOAT, [1, cout, size, size]))
            nodes.append(helper.make_node("Add", [last, f"{name}_r"], [f"{name}_a"]))
            last = f"{name}_a"
        if act == "Relu":
            nodes.append(helper.make_node("Relu", [last], [f"{name}_y"]))
        else:
            nodes.append(helper.make_node("Identity", [last], [f"{name}_y"]))
        outputs.append(helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, cout, size, size]))
    g = helper.make_graph(nodes, "wino", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("mcpu", [None, "haswell"])  # this host (AVX-512 here) and AVX2
def test_compiled_winograd_matches_onnxruntime(tmp_path, mcpu):
    pytest.importorskip("tvm")
    from schedule_helpers import run_against_onnxruntime, schedule_onnx, scheduled_functions

    from prunec.backend import frontend
    from prunec.backend.targets.cpu import fuse

    m = _model()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "wino.onnx", mcpu)
    wino = scheduled_functions(scheduled, "winograd")
    assert len(wino) == len(CASES) and all(wino.values()), wino
    # two parallel regions each: the input transform, then GEMM + output transform + the whole
    # epilogue (bias, activation, residual); an epilogue op left out makes a pass of its own.
    # One where a single block of output channels lets each chunk transform its own input tiles.
    from prunec.backend.cpu.facts import vector_lanes

    lanes = vector_lanes(tgt)
    regions = {}
    for gv, f in scheduled.functions.items():
        if "winograd" in gv.name_hint:
            regions[gv.name_hint] = f.script().count("T.parallel")
    want = []
    for name, cin, cout, *_ in CASES:
        cout = winograd.padded_out_channels(cout, lanes)
        ob = 2 * lanes if lanes >= 16 and cout % (2 * lanes) == 0 else lanes
        want.append(1 if cout == ob else 2)
    assert sorted(regions.values()) == sorted(want), regions
    shapes = {i["name"]: i["shape"] for i in sig["inputs"]}
    direct = fuse(frontend.import_onnx(str(tmp_path / "wino.onnx"), shapes)[0], tgt,
                  winograd=False)  # --no-winograd
    assert not scheduled_functions(direct, "winograd")
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    for (name, *_), got, want in zip(CASES, outs, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)

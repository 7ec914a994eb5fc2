"""The zero-trial CPU schedules against ONNX Runtime, one layer shape per code path.

Each case is a branch of one multi-input model (one compile): pointwise convs over rows that are
or are not whole vectors (row-block tiles), depthwise convs whose rows are padded up to whole
vectors, strided depthwise convs (every column computed, every sw-th kept), 5x5 kernels, and the
epilogues (bias, clip, residual add) fused into them; matrix-vector products (classifier heads); max pools."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

from schedule_helpers import run_against_onnxruntime, schedule_onnx, scheduled_functions  # noqa: E402

# (name, channels in, channels out, size, kernel, stride, groups, residual)
CASES = [
    ("pw_rows2", 24, 144, 56, 1, 1, 1, False),   # 56-wide rows: 2 rows = 7 whole vectors
    ("pw_res", 144, 24, 56, 1, 1, 1, True),      # long reduction, odd channel count, residual
    ("pw_28", 32, 40, 28, 1, 1, 1, False),       # 4 rows of 28
    ("pw_20", 16, 24, 20, 1, 1, 1, True),        # YOLO at 320: 20x20
    ("pw_14", 64, 96, 14, 1, 1, 1, False),       # no row block: channel tile
    ("pw_wide", 16, 24, 32, 1, 1, 1, False),     # rows already whole vectors
    ("pw_cols_80", 48, 16, 80, 1, 1, 1, True),   # YOLOv8n at 320: column tiles, rows first
    ("dw_56", 24, 24, 56, 3, 1, 24, False),      # row padded 56 -> 64
    ("dw_28", 32, 32, 28, 3, 1, 32, True),       # 28 -> 32, residual epilogue
    ("dw_7", 40, 40, 7, 3, 1, 40, False),        # half vectors
    ("dw_112", 8, 8, 112, 3, 1, 8, False),       # 7 vectors padded to 8 (tiles of 4)
    ("dw_s2_112", 8, 8, 112, 3, 2, 8, False),    # strided: 111 columns computed, 56 kept
    ("dw_s2_56", 16, 16, 56, 3, 2, 16, False),
    ("dw_s2_14", 24, 24, 14, 3, 2, 24, False),
    ("dw_5x5_s2", 16, 16, 28, 5, 2, 16, False),  # MobileNetV3
    ("dw_5x5", 16, 16, 14, 5, 1, 16, True),
    ("dw_5x5_40", 16, 16, 40, 5, 1, 16, False),  # 2-row tiles, 5 bands of 8 rows (2-row halo)
    ("dw_s2_63", 8, 8, 63, 3, 2, 8, True),       # stride 2, odd width, 4 bands
    ("conv3_s2", 8, 16, 30, 3, 2, 1, False),     # odd size, stride 2, dense
    ("stem_s2", 3, 16, 64, 3, 2, 1, False),      # stride-2 stem: column tile, taps by shuffles
    ("stem_5x5_s2", 2, 16, 63, 5, 2, 1, True),   # odd padded width, residual epilogue
    # inputs over 512 KB are padded band by band inside the parallel loop
    ("stem_s2_big", 3, 16, 255, 3, 2, 1, True),  # odd width: 128 columns out of 255 + 2 pad
    ("conv_s2_big", 16, 24, 96, 3, 2, 1, False),  # long reduction: channel tile, 6 bands of 8
]

# (name, K, N): matrix-vector products
# K / 8 parts: 160 rows (4 streamed at a time), 130 (2 at a time), 65 (one)
GEMV = [("gemv_1000", 1280, 1000), ("gemv_pairs", 1040, 80), ("gemv_odd", 520, 72)]
# (name, channels, size, kernel, stride, pad): max pools take the depthwise path
POOLS = [("pool_sppf", 32, 10, 5, 1, 2), ("pool_stem", 8, 112, 3, 2, 1), ("pool_odd", 8, 15, 3, 2, 0),
         ("pool_2x2", 16, 28, 2, 2, 0)]


def _model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, inputs, outputs = [], [], [], []
    for name, cin, cout, size, k, stride, groups, residual in CASES:
        x = f"{name}_x"
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, cin, size, size]))
        w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32) * (2.0 / (cin // groups * k * k)) ** 0.5
        b = rng.standard_normal(cout).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4, group=groups))
        out = f"{name}_y"
        osize = (size + 2 * (k // 2) - k) // stride + 1
        if residual:  # a second input of the output's shape (the skip branch)
            inputs.append(helper.make_tensor_value_info(f"{name}_r", TensorProto.FLOAT, [1, cout, osize, osize]))
            nodes.append(helper.make_node("Add", [f"{name}_c", f"{name}_r"], [out]))
        else:
            inits += [numpy_helper.from_array(np.float32(0.0), f"{name}_lo"),
                      numpy_helper.from_array(np.float32(6.0), f"{name}_hi")]
            nodes.append(helper.make_node("Clip", [f"{name}_c", f"{name}_lo", f"{name}_hi"], [out]))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, cout, osize, osize]))
    for name, k, n in GEMV:  # classifier heads: y = x W^T + b, streamed row by row (rfactor)
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, [1, k]))
        inits += [numpy_helper.from_array(rng.standard_normal((n, k)).astype(np.float32) / k ** 0.5, f"{name}_w"),
                  numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"{name}_b")]
        nodes.append(helper.make_node("Gemm", [f"{name}_x", f"{name}_w", f"{name}_b"], [f"{name}_y"], transB=1))
        outputs.append(helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, n]))
    for name, c, size, k, stride, pad in POOLS:
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, [1, c, size, size]))
        nodes.append(helper.make_node("MaxPool", [f"{name}_x"], [f"{name}_y"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[pad] * 4))
        osize = (size + 2 * pad - k) // stride + 1
        outputs.append(helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, c, osize, osize]))
    g = helper.make_graph(nodes, "kernels", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("blocked,mcpu", [(False, None), (True, None), (False, "haswell")])
def test_fast_schedules_match_onnxruntime(tmp_path, blocked, mcpu):
    """blocked: the depthwise convs make this a graph that gets NCHW16c (NCHW8c on AVX2) where
    channel counts allow (backend/layout.py); False keeps every case on its NCHW path. haswell:
    AVX2's 8-lane vectors and 16 registers (other tiles, 8-lane shuffles)."""
    m = _model()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "kernels.onnx", mcpu=mcpu, blocked=blocked)
    convs = scheduled_functions(scheduled, "conv") | scheduled_functions(scheduled, "pool")
    unscheduled = [name for name, done in convs.items() if not done]
    assert not unscheduled, f"convs left to TVM's naive default: {unscheduled}"
    # stride-2 depthwise rows and pools keep their even columns by vector shuffles
    shuffled = [gv.name_hint for gv, f in scheduled.functions.items()
                if isinstance(f, tvm.tirx.PrimFunc) and "T.Shuffle" in f.script()]
    # (blocked, every depthwise case is NCHW8c or NCHW16c, its channels all multiples of 8: no
    # NCHW rows; on AVX-512 too since 8-channel blocks, layout.channel_blocks)
    if not blocked:
        assert any("dwconv" in n for n in shuffled), shuffled
    assert any("pool" in n for n in shuffled), shuffled
    # stride-2 stems over wide rows with NCHW outputs read their taps' columns by shuffles too
    # (blocked, they write NCHW16c from the channel tile: no transpose to avoid)
    assert any("prunec_conv2d" in n for n in shuffled) != blocked, shuffled
    # large inputs: the padding split into a fill and an interior copy per band of rows
    banded = [gv.name_hint for gv, f in scheduled.functions.items()
              if isinstance(f, tvm.tirx.PrimFunc) and "prunec_pad_pad_const" in f.script()
              and "prunec_conv2d" in gv.name_hint]
    assert len(banded) >= 2, banded
    assert any("nchwc" in n for n in convs) == blocked
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    assert len(outs) == len(ref) == len(CASES) + len(GEMV) + len(POOLS)
    for (name, *_), got, want in zip(CASES + GEMV + POOLS, outs, ref):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_register_tiles_fit_the_vector_registers():
    """Accumulators of the pointwise tiles: at most 12 of AVX2's 16 registers (24 spilled the
    tile to the stack), 24 of AVX-512's and NEON's 32."""
    from prunec.backend.cpu.compute.conv import _row_block, _spatial_tile, tile_registers

    assert (tile_registers(8), tile_registers(16), tile_registers(4)) == (12, 24, 24)
    for lanes in (4, 8, 16):
        for oc in (16, 18, 24, 32, 48, 64, 96, 128):
            for size in (20, 40, 56, 80, 112, 160):
                cols = _spatial_tile(oc, size, 1, lanes)
                if cols:
                    assert cols[0] // lanes * cols[1] <= tile_registers(lanes), (lanes, oc, size)
                rows = _row_block(oc, size, size, lanes)
                if rows:
                    assert rows[0] * size // lanes * rows[1] <= tile_registers(lanes), (lanes, oc, size)
    assert _spatial_tile(32, 80, 1, 8) == (16, 4)   # was 16 columns x 8 channels: 16 registers
    assert _row_block(64, 20, 20, 8) == (2, 2)      # 2 rows of 20 = 5 vectors x 2 channels


@pytest.mark.parametrize("axis", [1, -1])
def test_softmax_matches_numpy(tmp_path, axis):
    """exp computed once, one reciprocal per reduced row (YOLO's DFL: axis 1; attention: -1)."""
    from tvm import relax

    from prunec.backend import frontend
    from schedule_helpers import host_target
    from prunec.backend.cpu import schedule_module
    from prunec.backend.targets.cpu import fuse

    shape = [1, 16, 4, 70]
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=axis)], "sm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    mod, sig = frontend.import_onnx(str(path), {"x": shape})
    tgt = host_target()
    scheduled = schedule_module(fuse(mod, tgt), tgt)
    vm = relax.VirtualMachine(tvm.compile(scheduled, target=tgt,
                                          relax_pipeline=relax.get_pipeline("default_build")), tvm.cpu())
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 4
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(axis=axis, keepdims=True), rtol=1e-5, atol=1e-6)


def test_concat_along_the_innermost_axis_is_cut_per_source(tmp_path):
    """YOLOv8's head: per level box and class rows joined along channels, flattened, joined
    along anchors and split back into box and class (one fused copy, scheduled in one loop per
    source)."""
    from tvm import relax

    from prunec.backend import frontend
    from schedule_helpers import host_target
    from prunec.backend.cpu import schedule_module
    from prunec.backend.targets.cpu import fuse

    sizes, box, cls = (40, 20, 10), 16, 6
    nodes, inputs, inits, flat = [], [], [], []
    for k, s in enumerate(sizes):
        for part, c in (("b", box), ("c", cls)):
            inputs.append(helper.make_tensor_value_info(f"{part}{k}", TensorProto.FLOAT, [1, c, s, s]))
        nodes.append(helper.make_node("Concat", [f"b{k}", f"c{k}"], [f"l{k}"], axis=1))
        inits.append(numpy_helper.from_array(np.array([1, box + cls, -1], np.int64), f"shape{k}"))
        nodes.append(helper.make_node("Reshape", [f"l{k}", f"shape{k}"], [f"f{k}"]))
        flat.append(f"f{k}")
    nodes.append(helper.make_node("Concat", flat, ["all"], axis=2))
    inits.append(numpy_helper.from_array(np.array([box, cls], np.int64), "split"))
    nodes.append(helper.make_node("Split", ["all", "split"], ["box", "cls"], axis=1))
    n = sum(s * s for s in sizes)
    g = helper.make_graph(nodes, "head", inputs,
                          [helper.make_tensor_value_info("box", TensorProto.FLOAT, [1, box, n]),
                           helper.make_tensor_value_info("cls", TensorProto.FLOAT, [1, cls, n])],
                          inits)
    path = tmp_path / "head.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs}
    mod, sig = frontend.import_onnx(str(path), shapes)
    tgt = host_target()
    scheduled = schedule_module(fuse(mod, tgt), tgt)
    assert "_common" in scheduled.script()  # the copy was cut into pieces (loop_partition)
    vm = relax.VirtualMachine(tvm.compile(scheduled, target=tgt,
                                          relax_pipeline=relax.get_pipeline("default_build")), tvm.cpu())
    rng = np.random.default_rng(0)
    feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in sig["inputs"]}
    got = vm["main"](*[tvm.runtime.tensor(feeds[i["name"]]) for i in sig["inputs"]])
    want_all = np.concatenate([np.concatenate([feeds[f"b{k}"], feeds[f"c{k}"]], 1).reshape(1, box + cls, -1)
                               for k in range(len(sizes))], 2)
    np.testing.assert_array_equal(got[0].numpy(), want_all[:, :box])
    np.testing.assert_array_equal(got[1].numpy(), want_all[:, box:])


@pytest.mark.parametrize("form,cut", [
    ("x <= c", 6), ("x < c", 5), ("x >= c", 5), ("x > c", 6),
    ("c <= x", 5), ("c < x", 6), ("c >= x", 6), ("c > x", 5),
])
def test_concat_bounds_reads_every_comparison_form(form, cut):
    """The cut is the first index of the upper source, whichever side of the comparison the
    loop variable is on (c = 5)."""
    tvm = pytest.importorskip("tvm")
    from tvm import s_tir, te, tirx

    from prunec.backend.cpu.schedule.common import blocks
    from prunec.backend.cpu.schedule.concat import concat_bounds

    a = te.placeholder((16,), name="a")
    b = te.placeholder((16,), name="b")
    c = tirx.const(5, "int32")

    def cond(x):
        return {"x <= c": x <= c, "x < c": x < c, "x >= c": x >= c, "x > c": x > c,
                "c <= x": c <= x, "c < x": c < x, "c >= x": c >= x, "c > x": c > x}[form]

    out = te.compute((16,), lambda x: tirx.Select(cond(x), a[x], b[x]), name="cat")
    sch = s_tir.Schedule(te.create_prim_func([a, b, out]))
    assert concat_bounds(sch, blocks(sch)[0], 16) == [cut]


def _edge_model() -> onnx.ModelProto:
    """Shapes that once left functions to TVM's naive loops: a 1x1 stride-2 conv whose input
    needs no padding (no padded copy to lay out as column pairs), SE-style 1x1 convs on a
    1x1 map (one-pixel register tiles), and a 3x3 max pool of a 1x1 map."""
    rng = np.random.default_rng(3)
    w = lambda *s: numpy_helper.from_array(  # noqa: E731
        (rng.standard_normal(s) * 0.3).astype(np.float32), f"w{len(inits)}")
    inits: list = []
    nodes = []

    def conv(x, y, cout, cin, stride=1):
        inits.append(w(cout, cin, 1, 1))
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32),
                                             f"b{len(inits)}"))
        nodes.append(helper.make_node("Conv", [x, inits[-2].name, inits[-1].name], [y],
                                      strides=[stride, stride]))

    conv("x", "down", 32, 16, stride=2)                      # 32x32 -> 16x16, no padding
    nodes.append(helper.make_node("GlobalAveragePool", ["down"], ["pooled"]))
    conv("pooled", "se1", 16, 32)
    nodes.append(helper.make_node("Relu", ["se1"], ["se1r"]))
    conv("se1r", "se2", 32, 16)
    nodes.append(helper.make_node("HardSigmoid", ["se2"], ["gate"], alpha=1 / 6, beta=0.5))
    nodes.append(helper.make_node("MaxPool", ["gate"], ["pool"], kernel_shape=[3, 3],
                                  pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Mul", ["down", "gate"], ["y"]))
    graph = helper.make_graph(
        nodes, "edges", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 16]),
         helper.make_tensor_value_info("pool", TensorProto.FLOAT, [1, 32, 1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("mcpu", [None, "haswell"])
def test_one_pixel_tiles_and_unpadded_stride2_are_scheduled(tmp_path, mcpu):
    m = _edge_model()
    onnx.checker.check_model(m, full_check=True)
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "edges.onnx", mcpu=mcpu)
    funcs = scheduled_functions(scheduled, "")
    assert any("maxpool" in f for f in funcs) and sum("conv2d" in f for f in funcs) == 3, funcs
    assert all(funcs.values()), [f for f, ok in funcs.items() if not ok]
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    for got, want in zip(outs, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_row_tiles_pad_rows_without_a_divisor():
    """13, 26 and 52 columns have no divisor that fills half the accumulators (1, 2 and 4 on
    AVX2: FMA-latency bound, ~6 GMAC/s on ddddocr's detector); they are computed padded to a
    multiple of a tile that does. Rows that have one keep it, unpadded."""
    from prunec.backend.cpu.facts import conv_row_tile

    assert [conv_row_tile(w, 8, 8) for w in (13, 26, 52)] == [(7, 14), (9, 27), (9, 54)]
    for w, t in ((7, 7), (10, 10), (14, 7), (20, 10), (28, 7), (40, 10), (56, 8), (3, 3)):
        assert conv_row_tile(w, 8, 8) == (t, w)
    for lanes, ob in ((8, 8), (16, 32), (4, 8), (16, 16)):
        for w in range(1, 120):
            t, width = conv_row_tile(w, ob, lanes)
            assert width % t == 0 and w <= width < w + t


def _padded_rows_model() -> onnx.ModelProto:
    """Convs whose output rows get padded register tiles: 3x3 at 13x13, stride 2 from 26x26,
    a 1x1 at 13x13 with a residual add, all with SiLU or the residual in the epilogue."""
    rng = np.random.default_rng(5)
    nodes, inits, inputs, outputs = [], [], [], []
    # 32 output channels: two-vector tiles on AVX-512 (12 columns at most), so 13 pads there too
    for name, cin, cout, size, k, stride in (("c3_13", 24, 32, 13, 3, 1),
                                             ("s2_26", 16, 32, 26, 3, 2),
                                             ("pw_13", 40, 32, 13, 1, 1)):
        osize = (size + 2 * (k // 2) - k) // stride + 1
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, [1, cin, size, size]))
        inits += [numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.2).astype(np.float32), f"{name}_w"),
                  numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}_b")]
        nodes.append(helper.make_node("Conv", [f"{name}_x", f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        if k == 1:
            inputs.append(helper.make_tensor_value_info(f"{name}_r", TensorProto.FLOAT, [1, cout, osize, osize]))
            nodes.append(helper.make_node("Add", [f"{name}_c", f"{name}_r"], [f"{name}_y"]))
        else:
            nodes += [helper.make_node("Sigmoid", [f"{name}_c"], [f"{name}_g"]),
                      helper.make_node("Mul", [f"{name}_c", f"{name}_g"], [f"{name}_y"])]
        outputs.append(helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, cout, osize, osize]))
    g = helper.make_graph(nodes, "padded_rows", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("mcpu", [None, "haswell"])
def test_padded_row_tiles_match_onnxruntime(tmp_path, mcpu):
    m = _padded_rows_model()
    onnx.checker.check_model(m, full_check=True)
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "padded.onnx", mcpu=mcpu, blocked=False)
    funcs = scheduled_functions(scheduled, "conv2d")
    assert len(funcs) == 3 and all(funcs.values()), funcs
    padded = [gv.name_hint for gv, f in scheduled.functions.items()
              if isinstance(f, tvm.tirx.PrimFunc) and "prunec_ow_tile" in f.script()]
    assert len(padded) == 3, padded
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    for got, want in zip(outs, ref):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

"""Channel-blocked activations (NCHW{b}c) in depthwise-separable nets: which convs go blocked,
Clip as Relax ops, and compiled MobileNets against ONNX Runtime on AVX-512 and AVX2 blocks."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from models.mobilenet import mobilenetv2, mobilenetv3  # noqa: E402
from models.resnet import resnet_basic  # noqa: E402
from prunec.backend.cpu import layout  # noqa: E402
from schedule_helpers import run_against_onnxruntime, schedule_onnx, scheduled_functions  # noqa: E402


@pytest.mark.parametrize("c,oc,groups,kernel,strides,want", [
    (96, 96, 96, (3, 3), (2, 2), ("NCHW16c", "OIHW16o", "NCHW16c")),  # depthwise, stride 2
    (24, 24, 24, (3, 3), (1, 1), ("NCHW8c", "OIHW8o", "NCHW8c")),     # 24: 8-channel blocks
    (20, 20, 20, (3, 3), (1, 1), layout.NCHW),                         # no multiple of 8
    (32, 96, 1, (1, 1), (1, 1), ("NCHW16c", "OIHW16o", "NCHW16c")),   # pointwise expand
    (20, 144, 1, (1, 1), (1, 1), ("NCHW", "OIHW16o", "NCHW16c")),     # reads NCHW, writes blocked
    (24, 144, 1, (1, 1), (1, 1), ("NCHW8c", "OIHW16o", "NCHW16c")),   # 8-channel blocks in
    (144, 168, 1, (1, 1), (1, 1), ("NCHW16c", "OIHW8o", "NCHW8c")),   # 8-channel blocks out
    (144, 20, 1, (1, 1), (1, 1), layout.NCHW),                         # projection to 20: NCHW
    (3, 32, 1, (3, 3), (2, 2), ("NCHW", "OIHW16o", "NCHW16c")),       # stem
    (32, 32, 1, (3, 3), (1, 1), layout.NCHW),                          # Winograd candidate
    (64, 64, 2, (3, 3), (1, 1), layout.NCHW),                          # grouped
])
def test_conv_layouts(c, oc, groups, kernel, strides, want):
    assert layout.conv_layouts(c, oc, groups, kernel, strides, 16) == want


def test_half_blocks_only_on_16_lanes():
    """8-channel blocks where 16 does not divide; on 8-lane targets (AVX2) no 4-channel ones."""
    assert [layout.channel_blocks(c, 16) for c in (32, 168, 24, 20, 3)] == [16, 8, 8, 0, 0]
    assert [layout.channel_blocks(c, 8) for c in (32, 24, 20, 12)] == [8, 8, 0, 0]
    assert layout.channel_blocks(12, 4) == 4 and layout.channel_blocks(6, 4) == 0


def _all_scheduled(scheduled) -> dict:
    """Every function of the compiled module has a prunec schedule (none left to TVM's default)."""
    funcs = scheduled_functions(scheduled, "")
    assert all(funcs.values()), [f for f, ok in funcs.items() if not ok]
    return funcs


def _assert_matches_onnxruntime(m, scheduled, sig, tgt):
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    for got, want in zip(outs, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _relax(model, tmp_path):
    import onnx

    from prunec.backend import frontend

    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    return frontend.import_onnx(str(path), shapes)[0]


def _activation_layout_changes(mod) -> int:
    """Layout changes of activations in a module's main; those of weights (constants) are
    folded later (fold.fold_weight_transforms) and cost nothing at run time."""
    from tvm import relax

    return relax.transform.FoldConstant()(mod)["main"].script().count("R.layout_transform(")


def test_only_depthwise_graphs_change(tmp_path):
    """ResNet-style graphs (no depthwise conv) keep NCHW everywhere: blocked pointwise convs
    between their Winograd 3x3 convs would only add layout changes."""
    mod = _relax(resnet_basic((1, 1), (16, 32), image=32, num_classes=10), tmp_path)
    assert not layout.has_depthwise(mod)
    out = layout.blocked_layout_pass(16)(mod)
    assert "NCHW16c" not in out["main"].script()


def test_clip_becomes_relax_ops_and_layouts_flow(tmp_path):
    mod = _relax(mobilenetv2(image=32, num_classes=10), tmp_path)
    assert layout.has_depthwise(mod)
    before = mod["main"].script()
    assert "R.maximum" not in before  # the importer's Clip: opaque TIR calls
    out = layout.blocked_layout_pass(16)(mod)
    txt = out["main"].script()
    assert len(re.findall(r"R\.maximum\(", txt)) == len(re.findall(r"R\.minimum\(", txt)) > 0
    assert "NCHW16c" in txt
    # the body stays blocked: layout changes only where a conv's channels force them
    assert _activation_layout_changes(out) <= 6


def test_depthwise_convs_before_an_nchw_projection_write_nchw(tmp_path):
    """A projection to 20 channels (no multiple of 8) reads NCHW; the depthwise conv before it
    writes NCHW from its register tile, instead of a layout change as a pass of its own. A
    projection to 24 is blocked in 8-channel blocks on both 16- and 8-lane targets."""
    from tvm import relax

    from models.mobilenet import V2_SETTINGS

    def folded(settings):
        mod = _relax(mobilenetv2(image=32, num_classes=10, settings=settings), tmp_path)
        return mod, tvm.transform.Sequential([relax.transform.FoldConstant(),
                                              layout.clip_to_relax()])(mod)

    _, with24 = folded(V2_SETTINGS)
    assert not layout.unblocked_outputs(with24, 16) and not layout.unblocked_outputs(with24, 8)
    mod, with20 = folded(tuple((t, 20 if c == 24 else c, n, st) for t, c, n, st in V2_SETTINGS))
    assert layout.unblocked_outputs(with20, 16) and layout.unblocked_outputs(with20, 8)
    out = layout.blocked_layout_pass(16)(mod)
    # the one layout change left: the pooled features before the classifier (the 20-channel
    # tensors are written NCHW by the depthwise convs and projections, read so by expansions)
    assert _activation_layout_changes(out) == 1, _activation_layout_changes(out)


@pytest.mark.parametrize("mcpu", [None, "haswell"])  # 16-lane blocks (this host), 8-lane (AVX2)
def test_mobilenetv2_blocked_matches_onnxruntime(tmp_path, mcpu):
    m = mobilenetv2(image=64, num_classes=10)
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "mbv2.onnx", mcpu)
    funcs = scheduled_functions(scheduled, "")
    assert not [n for n, done in funcs.items() if not done and "conv" in n]
    assert any("dwconv_nchwc" in n for n in funcs), sorted(funcs)
    # border taps are guarded loads: a Select evaluates its load even where it is outside the
    # input (the simplifier drops index clamps under the Select's condition)
    for gv, f in scheduled.functions.items():
        if "dwconv_nchwc" in gv.name_hint:
            assert "T.Select" not in f.script() and "T.if_then_else" in f.script()
    _assert_matches_onnxruntime(m, scheduled, sig, tgt)


def test_mobilenetv3_blocked_matches_onnxruntime(tmp_path):
    """Squeeze-excitation (pooled 1x1 convs, a broadcast gate) and HardSwish in blocked layout."""
    m = mobilenetv3(image=64, num_classes=10)
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "mbv3.onnx")
    # the SE convs on a 1x1 map included (one-pixel register tiles once failed there)
    _all_scheduled(scheduled)
    _assert_matches_onnxruntime(m, scheduled, sig, tgt)


def test_blocked_layout_can_be_turned_off(tmp_path):
    scheduled, _, _ = schedule_onnx(mobilenetv2(image=32, num_classes=10), tmp_path, "m.onnx",
                                    blocked=False)
    assert not any("nchwc" in n for n in scheduled_functions(scheduled, ""))


def test_a_layout_failure_leaves_the_graph_nchw(tmp_path, monkeypatch, caplog):
    """An op ConvertLayout cannot carry must not fail the compile: the graph stays NCHW."""
    from tvm import relax

    def broken(*args, **kwargs):
        raise RuntimeError("Invalid SLayout: can't find S in source layout")

    monkeypatch.setattr(relax.transform, "ConvertLayout", broken)
    mod = _relax(mobilenetv2(image=32, num_classes=10), tmp_path)
    out = layout.blocked_layout_pass(16)(mod)
    assert "NCHW16c" not in out["main"].script()
    assert "activations stay NCHW" in caplog.text


def test_blocked_pointwise_tiles_span_the_packed_weight_block(tmp_path):
    """The register tile of a conv reading NCHW16c covers all ob output channels of one packed
    weight block (2 vectors on AVX-512), not the input's 16-channel block: MobileNetV2 ran 12%
    faster single-threaded once its 1x1 convs over blocked inputs had 2-vector tiles."""
    from tvm import s_tir

    from prunec.backend.cpu.schedule.conv import conv_operands

    # AVX-512 named (schedules only, nothing runs): on an AVX2 host ob is 8 lanes, no 2-vector tile
    scheduled, _, _ = schedule_onnx(mobilenetv2(image=64, num_classes=10), tmp_path, "mbv2.onnx",
                                    mcpu="skylake-avx512")
    checked = 0
    for gv, f in scheduled.functions.items():
        if "prunec_conv2d" not in gv.name_hint:
            continue
        sch = s_tir.Schedule(tvm.IRModule({"main": f}))
        update = sch.get_sblock("prunec_conv_update")
        inp, weight = conv_operands(sch, update)
        if len(inp.shape) != 5:
            continue  # NCHW input: its tiles may run along rows instead
        ob = int(weight.shape[-1])
        inner = sch.get(sch.get_loops(update)[-1])
        assert int(inner.extent) == ob, (gv.name_hint, int(inner.extent), ob)
        checked += ob == 32
    assert checked >= 3  # several blocked 1x1 convs with 32-channel weight blocks


def _net(name, weights, nodes, inputs, outputs, extra=()):
    """An opset-13 model: `weights` {name: shape} drawn at random (seed 0) plus `extra`
    initializers; `inputs`/`outputs` {name: shape}, float32."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype("float32"), n) for n, s in weights]
    inits += list(extra)
    info = lambda d: [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in d.items()]  # noqa: E731
    g = helper.make_graph(nodes, name, info(inputs), info(outputs), inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _affine_net(scale_shape):
    """depthwise 3x3 (32 ch) -> y = w x + b with one-element w, b of `scale_shape` (PP-OCRv4's
    learnable affine blocks) -> pointwise 32 -> 32."""
    from onnx import helper

    weights = (("dw", (32, 1, 3, 3)), ("pw", (32, 32, 1, 1)), ("w", scale_shape), ("b", scale_shape))
    nodes = [helper.make_node("Conv", ["x", "dw"], ["d"], group=32, pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["w", "d"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Conv", ["a", "pw"], ["y"])]
    return _net("affine", weights, nodes, {"x": [1, 32, 8, 8]}, {"y": [1, 32, 8, 8]})


def test_one_element_constants_keep_the_blocked_layout(tmp_path):
    """A (1,)-shaped scale between two blocked convs is a scalar to ConvertLayout: the
    activations change layout only at the graph's input and output (it used to add a change on
    both sides of the scale)."""
    from tvm import relax

    mod = _relax(_affine_net((1,)), tmp_path)
    out = layout.blocked_layout_pass(16)(mod)
    assert _activation_layout_changes(out) == 2
    # a one-element constant of higher rank than the other operand sets the result's rank: kept
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.multiply(x, relax.const(np.full((1, 1), 2, "float32"))))
            z = bb.emit_output(relax.op.add(y, relax.const(np.full((1,), 3, "float32"))))
        bb.emit_func_output(z)
    txt = layout.scalar_operands()(bb.get())["main"].script()
    assert "R.Tensor((1, 4)" in txt.split("R.multiply(")[0].splitlines()[-1]
    assert 'R.add(lv, R.const(3.0, "float32"))' in txt  # rank 1 against rank 2: a scalar


@pytest.mark.slow
def test_affine_blocks_compiled_blocked_match_onnxruntime(tmp_path):
    m = _affine_net((1,))
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "affine.onnx")
    funcs = _all_scheduled(scheduled)
    assert any("dwconv_nchwc" in n and "multiply" in n for n in funcs), sorted(funcs)
    _assert_matches_onnxruntime(m, scheduled, sig, tgt)


def _uneven_net():
    """48 -> 24 pointwise, depthwise 3x3 stride 2 on 24, ReLU, 24 -> 48 pointwise: the middle
    tensors have 24 channels (a pruned count, a multiple of 8 but not of 16)."""
    from onnx import helper

    weights = (("p1", (24, 48, 1, 1)), ("dw", (24, 1, 3, 3)), ("db", (24,)), ("p2", (48, 24, 1, 1)))
    nodes = [helper.make_node("Conv", ["x", "p1"], ["a"]),
             helper.make_node("Conv", ["a", "dw", "db"], ["d"], group=24, pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Relu", ["d"], ["r"]),
             helper.make_node("Conv", ["r", "p2"], ["y"])]
    return _net("uneven", weights, nodes, {"x": [1, 48, 16, 16]}, {"y": [1, 48, 8, 8]})


def test_eight_channel_blocks_compiled_match_onnxruntime(tmp_path):
    """24 channels on a 16-lane target: the depthwise conv runs on NCHW8c (blocked kernels,
    one 8-float vector per pixel) between convs that read and write 8-channel blocks."""
    from prunec.backend.cpu.facts import vector_lanes

    m = _uneven_net()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "uneven.onnx")
    funcs = _all_scheduled(scheduled)
    dw = [f for gv, f in scheduled.functions.items() if "dwconv_nchwc" in gv.name_hint]
    assert dw, sorted(funcs)
    if vector_lanes(tgt) == 16:
        head = dw[0].script().split("def main(")[1].split("):")[0]
        # the input: 3 blocks of 8 channels
        assert "T.int64(3), T.int64(16), T.int64(16), T.int64(8))" in head, head
    _assert_matches_onnxruntime(m, scheduled, sig, tgt)


def _fpn_net():
    """Two depthwise-separable branches at 8x8 and 16x16 (32 channels), the 8x8 one upsampled
    2x (nearest, as PP-OCRv4's detector FPN does) and added to the other, then a 1x1 conv."""
    from onnx import helper, numpy_helper

    weights = (("dw1", (32, 1, 3, 3)), ("pw1", (32, 32, 1, 1)), ("dw2", (32, 1, 3, 3)),
               ("pw2", (32, 32, 1, 1)), ("pw3", (32, 32, 1, 1)))
    extra = [numpy_helper.from_array(np.array([1, 1, 2, 2], "float32"), "scales"),
             numpy_helper.from_array(np.zeros(0, "float32"), "roi")]
    nodes = [helper.make_node("Conv", ["a", "dw1"], ["a1"], group=32, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a1", "pw1"], ["a2"]),
             helper.make_node("Conv", ["b", "dw2"], ["b1"], group=32, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b1", "pw2"], ["b2"]),
             helper.make_node("Resize", ["a2", "roi", "scales"], ["up"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("Add", ["up", "b2"], ["s"]),
             helper.make_node("Conv", ["s", "pw3"], ["y"])]
    return _net("fpn", weights, nodes, {"a": [1, 32, 8, 8], "b": [1, 32, 16, 16]}, {"y": [1, 32, 16, 16]},
                extra)


def test_nearest_upsampling_keeps_the_blocked_layout(tmp_path):
    """The upsampling runs on NCHW16c: the activations change layout only at the graph's two
    inputs and its output (ConvertLayout alone leaves Resize NCHW: two changes more)."""
    mod = _relax(_fpn_net(), tmp_path)
    out = layout.blocked_layout_pass(16)(mod)
    txt = out["main"].script()
    assert 'layout="NCHW16c", method="nearest_neighbor"' in txt
    assert _activation_layout_changes(out) == 3, _activation_layout_changes(out)
    m = _fpn_net()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "fpn.onnx")
    _all_scheduled(scheduled)
    _assert_matches_onnxruntime(m, scheduled, sig, tgt)

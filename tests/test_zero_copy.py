"""Split and concat as views (backend/zero_copy.py): which ones become free, and that the
compiled module still computes what ONNX Runtime does, in place or not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

from schedule_helpers import host_target  # noqa: E402


def _conv(nodes, inits, rng, x, out, cin, cout, k=1):
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.3).astype(np.float32),
                                f"{out}_w")
    inits.append(w)
    nodes.append(helper.make_node("Conv", [x, w.name], [f"{out}_c"], pads=[k // 2] * 4))
    nodes.append(helper.make_node("Sigmoid", [f"{out}_c"], [f"{out}_s"]))
    nodes.append(helper.make_node("Mul", [f"{out}_c", f"{out}_s"], [out]))  # SiLU, as YOLO


def _model(nodes, inits, c, hw, out, out_c):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, c, hw, hw])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                         [1, out_c, hw, hw])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def c2f(c: int = 16, hw: int = 8, inner: int = 8, skip_input: bool = False):
    """YOLOv8's C2f: conv, split in halves, a bottleneck on the second, concat of all, conv.
    skip_input adds the graph input to the concat (a parameter: it cannot be written in place)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    _conv(nodes, inits, rng, "x", "cv1", c, 2 * inner)
    inits.append(numpy_helper.from_array(np.array([inner, inner], np.int64), "halves"))
    nodes.append(helper.make_node("Split", ["cv1", "halves"], ["y0", "y1"], axis=1))
    _conv(nodes, inits, rng, "y1", "m0", inner, inner, k=3)
    _conv(nodes, inits, rng, "m0", "m1", inner, inner, k=3)
    parts = ["y0", "y1", "m0", "m1"] + (["x"] if skip_input else [])
    nodes.append(helper.make_node("Concat", parts, ["cat"], axis=1))
    width = 4 * inner + (c if skip_input else 0)
    _conv(nodes, inits, rng, "cat", "out", width, c)
    return _model(nodes, inits, c, hw, "out", c)


def sppf(c: int = 16, hw: int = 8):
    """YOLOv8's SPPF: a conv, three chained 5x5 max pools, the four concatenated, a conv."""
    rng = np.random.default_rng(1)
    nodes, inits = [], []
    _conv(nodes, inits, rng, "x", "cv1", c, c // 2)
    prev = "cv1"
    for k in range(3):
        nodes.append(helper.make_node("MaxPool", [prev], [f"p{k}"], kernel_shape=[5, 5],
                                      pads=[2, 2, 2, 2], strides=[1, 1]))
        prev = f"p{k}"
    nodes.append(helper.make_node("Concat", ["cv1", "p0", "p1", "p2"], ["cat"], axis=1))
    _conv(nodes, inits, rng, "cat", "out", 2 * c, c)
    return _model(nodes, inits, c, hw, "out", c)


def _build_and_compare(model, tmp_path):
    """(zero_copy stats, max abs error against ONNX Runtime) of the x86 build of model."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from prunec.backend import build, frontend

    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    mod, _ = frontend.import_onnx(str(path), {"x": shape})
    stats = {}
    ex = build.build(mod, host_target(), "x86", stats=stats)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    return stats["zero_copy"], float(np.abs(got - want).max())


def test_c2f_split_and_concat_cost_no_copies(tmp_path):
    """Both halves of the split are views of cv1's output, and cv1 and both bottleneck convs
    write into the concat's buffer: neither copy kernel runs."""
    views, err = _build_and_compare(c2f(), tmp_path)
    assert views == {"split": 2, "concat": 1}
    assert err < 1e-4


def test_sppf_pools_write_into_the_concat(tmp_path):
    views, err = _build_and_compare(sppf(), tmp_path)
    assert views == {"split": 0, "concat": 1}
    assert err < 1e-4


def test_a_graph_input_in_the_concat_keeps_the_copy(tmp_path):
    """The graph input is not written by a kernel of the module, so the concat stays a copy;
    the split is still free."""
    views, err = _build_and_compare(c2f(skip_input=True), tmp_path)
    assert views == {"split": 2, "concat": 0}
    assert err < 1e-4


def test_unaligned_parts_keep_their_copies(tmp_path):
    """At 5x5 with 3-channel halves, the second half starts 300 bytes in: not a multiple of the
    runtime's 64-byte alignment, so a view would need a copy; split and concat stay kernels."""
    views, err = _build_and_compare(c2f(c=6, hw=5, inner=3), tmp_path)
    assert views == {"split": 0, "concat": 0}
    assert err < 1e-4

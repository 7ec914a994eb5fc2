"""Op rules not exercised by the model zoo: each small graph prunes exactly (zeroed channels)."""
import numpy as np
import pytest

import prunec
from models.common import Builder
from prunec.pipeline import PruneOptions, prune_model

from exactness import check_exact
from tests.exactness import assert_verified


def _finish(b, y):
    return b.build([y])


def conv_transpose_net(group=1):
    b = Builder("convt", seed=1)
    x = b.input([1, 3, 8, 8])
    h = b.relu(b.bn(b.conv(x, 3, 16, 3), 16))
    w = b.he([16, 16 // group, 2, 2], 16)
    h = b.node("ConvTranspose", [h, b.const(w, "up.weight"), b.const(b.small([16]), "up.bias")],
               kernel_shape=[2, 2], strides=[2, 2], group=group)
    h = b.relu(h)
    return _finish(b, b.conv(h, 16, 4, 1))


def conv3d_net():
    """Written with onnx.helper directly (the builder's numeric probe is 2D only)."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(2)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [w("c1.w", 16, 2, 3, 3, 3), w("c1.b", 16), w("c2.w", 16, 4, 3, 3, 3), w("c2.b", 16), w("c3.w", 3, 16, 1, 1, 1)]
    same = dict(kernel_shape=[3, 3, 3], pads=[1] * 6)
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h1"], **same),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["h2"], group=4, **same),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Conv", ["r2", "c3.w"], ["y"], kernel_shape=[1, 1, 1]),
    ]
    g = helper.make_graph(nodes, "c3d", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def prelu_slice_pad_net():
    b = Builder("misc", seed=3)
    x = b.input([1, 3, 16, 16])
    h = b.conv(x, 3, 32, 3, bias=True)
    h = b.node("PRelu", [h, b.const(np.full([32, 1, 1], 0.1, np.float32), "slope")])
    lo = b.node("Slice", [h, b.i64([0], "s"), b.i64([16], "e"), b.i64([1], "a")])  # first 16 channels
    hi = b.node("Slice", [h, b.i64([16], "s"), b.i64([2**62], "e"), b.i64([1], "a")])
    h = b.add(b.conv(lo, 16, 16, 1), b.conv(hi, 16, 16, 1))
    h = b.node("Pad", [h, b.i64([0, 0, 1, 1, 0, 0, 1, 1], "pads")], mode="constant")
    h = b.node("LeakyRelu", [h], alpha=0.1)
    return _finish(b, b.conv(h, 16, 2, 3, pad=0))


def fused_qkv_attention():
    """One Gemm produces Q, K and V; Split separates them; heads via Reshape/Transpose."""
    b = Builder("qkv", seed=4)
    t, d, heads = 8, 32, 4
    x = b.input([1, t, d])
    qkv = b.linear(x, d, 3 * d, prefix="qkv")
    q, k, v = b.split(qkv, [d, d, d], axis=2)
    q = b.transpose(b.reshape(q, [1, t, heads, d // heads]), [0, 2, 1, 3])
    k = b.transpose(b.reshape(k, [1, t, heads, d // heads]), [0, 2, 3, 1])
    v = b.transpose(b.reshape(v, [1, t, heads, d // heads]), [0, 2, 1, 3])
    att = b.node("Softmax", [b.node("MatMul", [q, k])], axis=-1)
    o = b.reshape(b.transpose(b.node("MatMul", [att, v]), [0, 2, 1, 3]), [1, t, d])
    y = b.add(b.linear(o, d, d, prefix="proj"), x)
    return _finish(b, b.linear(b.node("Tanh", [y]), d, 5, prefix="out"))


def tile_expand_net():
    b = Builder("te", seed=5)
    x = b.input([1, 4, 8, 8])
    h = b.relu(b.conv(x, 4, 16, 3, bias=True))
    gate = b.node("Sigmoid", [b.conv(b.gap(h), 16, 16, 1, bias=True)])
    gate = b.node("Expand", [gate, b.i64([1, 16, 8, 8], "shape")])
    h = b.mul(h, gate)
    return _finish(b, b.conv(h, 16, 3, 1))


NETS = {
    "conv_transpose": conv_transpose_net,
    "conv_transpose_grouped": lambda: conv_transpose_net(group=4),
    "conv3d_grouped": conv3d_net,
    "prelu_slice_pad": prelu_slice_pad_net,
    "fused_qkv_attention": fused_qkv_attention,
    "expand_gate": tile_expand_net,
}


@pytest.mark.parametrize("name", NETS)
def test_exact_and_verified(name):
    proto = NETS[name]()
    n_groups, _ = check_exact(proto)
    assert n_groups > 0
    model = prunec.from_proto(proto)
    _, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert_verified(report, model)
    assert report["macs"]["after"] < report["macs"]["before"]


def test_fused_qkv_heads_are_coupled():
    analysis = prunec.analyze(prunec.from_proto(fused_qkv_attention()))
    qkv_groups = [g for g in analysis.prunable_groups if g.id.startswith("qkv")]
    # Q/K heads, Q/K head_dim, V heads are tied to Q/K heads; V head_dim is its own group
    sizes = sorted(g.size for g in qkv_groups)
    assert 4 in sizes and 8 in sizes


def dynamic_shape_attention():
    """PyTorch-style export: Reshape targets built at run time from Shape/Gather plus constant head sizes."""
    b = Builder("dyn", seed=6)
    t, d, heads = 8, 32, 4
    x = b.input([1, t, d])
    shape = b.node("Shape", [x])
    batch = b.node("Unsqueeze", [b.node("Gather", [shape, b.i64([0], "i0")], axis=0)], axes=[0]) \
        if b.opset < 13 else b.node("Gather", [shape, b.i64([0], "i0")], axis=0)
    seq = b.node("Gather", [shape, b.i64([1], "i1")], axis=0)
    target = b.node("Concat", [batch, seq, b.i64([heads], "h"), b.i64([d // heads], "hd")], axis=0)
    merged = b.node("Concat", [batch, seq, b.i64([-1], "m1")], axis=0)
    q = b.transpose(b.node("Reshape", [b.linear(x, d, d, prefix="q"), target]), [0, 2, 1, 3])
    k = b.transpose(b.node("Reshape", [b.linear(x, d, d, prefix="k"), target]), [0, 2, 3, 1])
    v = b.transpose(b.node("Reshape", [b.linear(x, d, d, prefix="v"), target]), [0, 2, 1, 3])
    att = b.node("Softmax", [b.node("MatMul", [q, k])], axis=-1)
    o = b.node("Reshape", [b.transpose(b.node("MatMul", [att, v]), [0, 2, 1, 3]), merged])
    y = b.add(b.linear(o, d, d, prefix="proj"), x)
    return _finish(b, b.linear(y, d, 3, prefix="out"))


def test_runtime_reshape_targets_with_constant_head_sizes():
    proto = dynamic_shape_attention()
    analysis = prunec.analyze(prunec.from_proto(proto))
    head_groups = [g for g in analysis.prunable_groups if g.size == 4]
    assert head_groups, "heads stay prunable: their sizes are constant pieces of the runtime shape"
    n_groups, _ = check_exact(proto)
    assert n_groups >= 2


def spelled_out_layernorm():
    """LayerNorm as Paddle2ONNX, TensorFlow and torch before opset 17 export it, on a residual
    stream between two linear layers: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add."""
    b = Builder("ln", seed=7)
    t, d = 6, 32
    x = b.input([1, t, 8])
    h = b.linear(x, 8, d, prefix="inp")
    c = b.node("Sub", [h, b.reduce_mean(h, [-1])])
    var = b.reduce_mean(b.node("Pow", [c, b.f32(2.0, "two")]), [-1])
    y = b.node("Div", [c, b.node("Sqrt", [b.add(var, b.f32(1e-5, "eps"))])])
    gamma = b.const(b.rng.uniform(0.5, 1.5, d).astype(np.float32), "ln.weight")
    y = b.add(b.mul(y, gamma), b.const(b.small([d]), "ln.bias"))
    return _finish(b, b.linear(y, d, 4, prefix="out"))


def test_a_spelled_out_layernorm_prunes_like_layernormalization():
    """The hidden axis the means are taken over is prunable, marked approximate, and the pruned
    graph normalizes over the kept channels: LayerNorm of the kept channels, as a
    LayerNormalization node would compute it."""
    import onnx.numpy_helper as nh

    proto = spelled_out_layernorm()
    model = prunec.from_proto(proto)
    hidden = [g for g in prunec.analyze(model).prunable_groups if g.size == 32]
    assert len(hidden) == 1 and any("takes a mean" in r for r in hidden[0].inexact)
    pruned, report, plan = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert_verified(report, model)
    removed = set(plan.groups[hidden[0].id])
    keep = np.array([i for i in range(32) if i not in removed])
    assert 0 < len(keep) < 32
    w = {i.name: nh.to_array(i) for i in proto.graph.initializer}
    name = {k: next(n for n in w if n.startswith(k)) for k in
            ("inp.weight", "inp.bias", "ln.weight", "ln.bias", "out.weight", "out.bias")}
    x = np.random.default_rng(0).standard_normal([1, 6, 8]).astype(np.float32)
    from prunec.runtime import run_model

    got = run_model(pruned.to_proto(), {"input": x})[0]
    w_in, b_in = w[name["inp.weight"]], w[name["inp.bias"]]
    h = (x @ w_in if w_in.shape[0] == 8 else x @ w_in.T) + b_in
    h = h[..., keep]
    z = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    z = z * w[name["ln.weight"]][keep] + w[name["ln.bias"]][keep]
    w_out = w[name["out.weight"]]
    want = (z @ (w_out[keep] if w_out.shape[0] == 32 else w_out[:, keep].T)) + w[name["out.bias"]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

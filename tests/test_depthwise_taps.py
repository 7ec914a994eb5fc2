"""Distillation's depthwise convolution (shifted slices with a hand-written gradient) computes what
XLA's grouped convolution computes, values and both gradients, for strides, dilations and uneven
padding; and the Conv op uses it only for one-channel-per-group 2-D convs."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")

from prunec.onnx_jax.depthwise import depthwise_fn  # noqa: E402

CASES = [  # channels, H, W, kernel, strides, dilations, pads
    (8, 9, 11, (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1))),
    (6, 10, 13, (5, 5), (2, 2), (1, 1), ((2, 2), (2, 2))),
    (4, 12, 12, (3, 3), (2, 1), (2, 2), ((2, 1), (0, 3))),
    (5, 7, 9, (3, 1), (1, 2), (1, 1), ((0, 0), (1, 0))),
    (3, 8, 8, (2, 2), (2, 2), (1, 1), ((0, 0), (0, 0))),  # stride leaves the last row/column unread
]


@pytest.mark.parametrize("case", CASES)
def test_taps_match_grouped_convolution_and_its_gradients(case):
    C, H, W, k, s, d, pads = case
    jnp = jax.numpy
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, C, H, W), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((C, *k), dtype=np.float32))

    def ref(x, w):
        return jax.lax.conv_general_dilated(x, w[:, None], s, pads, rhs_dilation=d, feature_group_count=C,
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    taps = depthwise_fn(jax, s, d, pads)
    want = ref(x, w)
    np.testing.assert_allclose(taps(x, w), want, rtol=1e-5, atol=1e-5)
    t = jnp.asarray(rng.standard_normal(want.shape, dtype=np.float32))
    g_ref = jax.grad(lambda x, w: jnp.sum(ref(x, w) * t), (0, 1))(x, w)
    g_taps = jax.jit(jax.grad(lambda x, w: jnp.sum(taps(x, w) * t), (0, 1)))(x, w)
    for a, b in zip(g_taps, g_ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # distillation runs the graph per sample under vmap
    per_sample = jax.vmap(jax.grad(lambda xi, w: jnp.sum(taps(xi[None], w) * t[:1]), 1), in_axes=(0, None))(x, w)
    np.testing.assert_allclose(per_sample[0], jax.grad(lambda w: jnp.sum(ref(x[:1], w) * t[:1]))(w), rtol=1e-4, atol=1e-4)


def test_conv_op_uses_taps_only_for_depthwise(monkeypatch):
    import prunec.onnx_jax.nn as nn
    from prunec.onnx_jax.registry import OPS, Ctx
    from onnx import helper

    calls = []
    real = nn.depthwise_fn
    monkeypatch.setattr(nn, "depthwise_fn", lambda *a: calls.append(a) or real(*a))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    for group, w_shape, used in ((4, (4, 1, 3, 3), True), (2, (4, 2, 3, 3), False), (1, (4, 4, 3, 3), False)):
        node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, pads=[1, 1, 1, 1])
        w = rng.standard_normal(w_shape).astype(np.float32)
        before = len(calls)
        y = OPS["Conv"](Ctx(node, 13, jax), x, w)
        want = jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], feature_group_count=group,
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        assert (len(calls) > before) == used

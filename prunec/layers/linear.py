"""Gemm and MatMul: Y = alpha * A' B' + beta * C, and Y = A B (batched, channels on the last axis)."""
from __future__ import annotations

from math import prod

import numpy as np

from . import LayerKind, const_bias, register


def _token_rows(x, y, rows, rng):
    """One sample: every row of x [..., C] against y [..., M], subsampled to `rows`."""
    patches = x.reshape(-1, x.shape[-1])[:, :, None]
    targets = y.reshape(-1, y.shape[-1])
    if len(patches) > rows:
        pick = rng.choice(len(patches), rows, replace=False)
        patches, targets = patches[pick], targets[pick]
    return patches, targets


@register
class Gemm(LayerKind):
    op = "Gemm"
    refit = True

    def macs(self, node, ins, outs) -> int:
        if ins[0] and ins[1] and outs[0]:
            k = ins[0][0] if node.attrs.get("transA", 0) else ins[0][-1]
            return prod(outs[0]) * k
        return 0

    def refittable(self, node, x, x_rank) -> bool:
        return not node.attrs.get("transA", 0) and node.inputs[0] is x

    def matrices(self, node, groups):
        w = np.asarray(node.inputs[1].values, np.float64)
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        W = (w.T if node.attrs.get("transB", 0) else w) * alpha
        m = W.shape[1]
        b = const_bias(node)
        bias = np.zeros(m) if b is None else np.broadcast_to(np.asarray(b, np.float64) * beta, (m,)).copy()
        return W[None], bias[None]

    def arrays(self, node, W, b, w_shape):
        dtype = node.inputs[1].values.dtype
        w = W[0] / float(node.attrs.get("alpha", 1.0))
        beta = float(node.attrs.get("beta", 1.0)) if len(node.inputs) > 2 else 1.0
        return (np.ascontiguousarray(w.T if node.attrs.get("transB", 0) else w, dtype=dtype),
                (b.reshape(-1) / beta).astype(dtype))

    def write(self, node, W, b, w_shape) -> None:
        if len(node.inputs) <= 2:
            node.attrs["beta"] = 1.0  # the bias input is added with the refitted intercept
        super().write(node, W, b, w_shape)

    def rows(self, node, x, y, w_shape, rows, rng):
        return _token_rows(x, y, rows, rng)


@register
class MatMul(LayerKind):
    op = "MatMul"
    refit = True

    def macs(self, node, ins, outs) -> int:
        if ins[0] and ins[1] and outs[0]:
            k = ins[0][-1] if len(ins[0]) > 1 else ins[0][0]
            return prod(outs[0]) * k
        return 0

    def channel_axis(self, rank: int) -> int:
        return rank - 1

    def refittable(self, node, x, x_rank) -> bool:
        return node.inputs[0] is x

    def matrices(self, node, groups):
        w = np.asarray(node.inputs[1].values, np.float64)
        return w[None], np.zeros((1, w.shape[1]))

    def arrays(self, node, W, b, w_shape):
        # no bias input: the intercept is dropped (a following Add keeps the original one)
        return np.ascontiguousarray(W[0], dtype=node.inputs[1].values.dtype), None

    def rows(self, node, x, y, w_shape, rows, rng):
        return _token_rows(x, y, rows, rng)

"""Depthwise convolution for distillation, written as a sum of shifted slices ("taps").

XLA's CPU backend runs a convolution with one input channel per group at well under 1 GMAC/s, and
its gradient slower still (a 5x5 depthwise layer of PP-OCR's recognizer, 16 x 240 x 6 x 80: 76 ms
forward, 265 ms forward + backward, against 1.4 ms and ~2 ms as taps). Autodiff of the taps builds
its input gradient from k*k pads, so the gradient is written by hand here: the input gradient is
the same taps over the output gradient (spread by the stride) with the kernel flipped, and the
weight gradient one reduction per tap.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def _taps(jnp, lax, xp, w, stride, dil, out_hw):
    """y[n,c,h,w] = sum_ij xp[n, c, s*h + i*d, s*w + j*d] * w[c, i, j] (xp already padded)."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dil, out_hw
    y = None
    for i in range(w.shape[1]):
        for j in range(w.shape[2]):
            tap = lax.slice(xp, (0, 0, i * dh, j * dw),
                            (xp.shape[0], xp.shape[1], i * dh + sh * (ho - 1) + 1, j * dw + sw * (wo - 1) + 1),
                            (1, 1, sh, sw))
            term = tap * w[None, :, i, j, None, None]
            y = term if y is None else y + term
    return y


@lru_cache(maxsize=None)
def depthwise_fn(jax, stride: tuple, dil: tuple, pads: tuple):
    """A differentiable f(x NCHW, w (C, kh, kw)) for one stride, dilation and padding."""
    jnp, lax = jax.numpy, jax.lax
    (pt, pb), (pl, pr) = pads

    def pad_input(x):
        return lax.pad(x, np.float32(0).astype(x.dtype), ((0, 0, 0), (0, 0, 0), (pt, pb, 0), (pl, pr, 0)))

    def out_hw(xp, w):
        return tuple((xp.shape[2 + a] - dil[a] * (w.shape[1 + a] - 1) - 1) // stride[a] + 1 for a in (0, 1))

    @jax.custom_vjp
    def f(x, w):
        xp = pad_input(x)
        return _taps(jnp, lax, xp, w, stride, dil, out_hw(xp, w))

    def fwd(x, w):
        return f(x, w), (x, w)

    def bwd(res, g):
        x, w = res
        xp = pad_input(x)
        (kh, kw), (ho, wo) = w.shape[1:], g.shape[2:]
        # Input gradient: spread g by the stride, pad it so a stride-1 correlation with the flipped
        # kernel covers every padded input position, then crop the padding off.
        span = [(k - 1) * d for k, d in zip((kh, kw), dil)]
        right = [xp.shape[2 + a] - stride[a] * (g.shape[2 + a] - 1) - 1 for a in (0, 1)]
        gp = lax.pad(g, np.float32(0).astype(g.dtype),
                     ((0, 0, 0), (0, 0, 0), (span[0], right[0], stride[0] - 1), (span[1], right[1], stride[1] - 1)))
        dxp = _taps(jnp, lax, gp, w[:, ::-1, ::-1], (1, 1), dil, xp.shape[2:])
        dx = dxp[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]]
        # Weight gradient: one reduction per tap (dead code, removed by XLA, when w is not trained).
        dw = []
        for i in range(kh):
            for j in range(kw):
                tap = lax.slice(xp, (0, 0, i * dil[0], j * dil[1]),
                                (xp.shape[0], xp.shape[1], i * dil[0] + stride[0] * (ho - 1) + 1,
                                 j * dil[1] + stride[1] * (wo - 1) + 1), (1, 1, stride[0], stride[1]))
                dw.append(jnp.sum(tap * g, axis=(0, 2, 3)))
        return dx, jnp.stack(dw, -1).reshape(w.shape)

    f.defvjp(fwd, bwd)
    return f

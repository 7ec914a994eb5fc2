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


def _tap(lax, xp, i, j, stride, dil, out_hw):
    """xp[n, c, s*h + i*d, s*w + j*d] over the output's (h, w): the input one kernel tap reads."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dil, out_hw
    return lax.slice(xp, (0, 0, i * dh, j * dw),
                     (xp.shape[0], xp.shape[1], i * dh + sh * (ho - 1) + 1, j * dw + sw * (wo - 1) + 1),
                     (1, 1, sh, sw))


def _taps(lax, xp, w, stride, dil, out_hw):
    """y[n,c,h,w] = sum_ij xp[n, c, s*h + i*d, s*w + j*d] * w[c, i, j] (xp already padded)."""
    y = None
    for i in range(w.shape[1]):
        for j in range(w.shape[2]):
            term = _tap(lax, xp, i, j, stride, dil, out_hw) * w[None, :, i, j, None, None]
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

    def forward(x, w):
        xp = pad_input(x)
        return _taps(lax, xp, w, stride, dil, out_hw(xp, w)), xp

    @jax.custom_vjp
    def f(x, w):
        return forward(x, w)[0]

    def fwd(x, w):
        y, xp = forward(x, w)
        return y, (xp, w)  # the padded input: the backward pass reads it, not x

    def bwd(res, g):
        xp, w = res
        kh, kw = w.shape[1:]
        # Input gradient: spread g by the stride, pad it so a stride-1 correlation with the flipped
        # kernel covers every padded input position, then crop the padding off.
        span = [(k - 1) * d for k, d in zip((kh, kw), dil)]
        right = [xp.shape[2 + a] - stride[a] * (g.shape[2 + a] - 1) - 1 for a in (0, 1)]
        gp = lax.pad(g, np.float32(0).astype(g.dtype),
                     ((0, 0, 0), (0, 0, 0), (span[0], right[0], stride[0] - 1), (span[1], right[1], stride[1] - 1)))
        dxp = _taps(lax, gp, w[:, ::-1, ::-1], (1, 1), dil, xp.shape[2:])
        dx = dxp[:, :, pt:xp.shape[2] - pb, pl:xp.shape[3] - pr]
        # Weight gradient: one reduction per tap (dead code, removed by XLA, when w is not trained).
        dw = [jnp.sum(_tap(lax, xp, i, j, stride, dil, g.shape[2:]) * g, axis=(0, 2, 3))
              for i in range(kh) for j in range(kw)]
        return dx, jnp.stack(dw, -1).reshape(w.shape)

    f.defvjp(fwd, bwd)
    return f

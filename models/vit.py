"""ViT/BERT-style encoder written the way PyTorch exports attention (no fused ops)."""

from __future__ import annotations

import math

import numpy as np
import onnx

from .common import DEFAULT_OPSET, Builder


def _layernorm(b: Builder, x: str, d: int, prefix: str) -> str:
    g = b.const(b.rng.uniform(0.8, 1.2, d).astype(np.float32), f"{prefix}.weight")
    beta = b.const(b.small([d]), f"{prefix}.bias")
    return b.node("LayerNormalization", [x, g, beta], prefix=prefix, axis=-1, epsilon=1e-5)


def _gelu(b: Builder, x: str) -> str:
    # Exact GELU as torch exports it before opset 20: x * 0.5 * (1 + erf(x / sqrt(2))).
    e = b.node("Erf", [b.node("Div", [x, b.f32(math.sqrt(2.0), "sqrt2")])])
    y = b.mul(b.mul(x, b.add(e, b.f32(1.0, "one"))), b.f32(0.5, "half"))
    b.gain[y] = 1.0 / math.sqrt(0.425)  # E[gelu(z)^2] for z ~ N(0,1)
    return y


def _attention(b: Builder, x: str, t: int, d: int, heads: int) -> str:
    hd = d // heads
    q = b.transpose(b.reshape(b.linear(x, d, d, "q"), [1, t, heads, hd]), [0, 2, 1, 3])  # [1,H,T,hd]
    k = b.transpose(b.reshape(b.linear(x, d, d, "k"), [1, t, heads, hd]), [0, 2, 3, 1])  # [1,H,hd,T]
    v = b.transpose(b.reshape(b.linear(x, d, d, "v"), [1, t, heads, hd]), [0, 2, 1, 3])  # [1,H,T,hd]
    s = b.node("Div", [b.node("MatMul", [q, k]), b.f32(math.sqrt(hd), "sqrt_hd")])
    p = b.softmax(s, axis=-1, rank=4)
    o = b.reshape(b.transpose(b.node("MatMul", [p, v]), [0, 2, 1, 3]), [1, t, d])
    return b.linear(o, d, d, "attn_out", scale=0.5)


def vit(image: int = 32, patch: int = 8, dim: int = 64, heads: int = 4, depth: int = 2,
        mlp_ratio: int = 4, num_classes: int = 10, seed: int = 0, opset: int = DEFAULT_OPSET,
        pos_embed: bool = True) -> onnx.ModelProto:
    if opset < 17:
        raise ValueError("vit needs opset >= 17 (LayerNormalization)")
    b = Builder("vit", seed, opset)
    g = image // patch
    t = g * g
    x = b.conv(b.input([1, 3, image, image]), 3, dim, patch, stride=patch, pad=0, bias=True,
               prefix="patch_embed")                             # [1, D, g, g]
    x = b.transpose(b.reshape(x, [1, dim, t]), [0, 2, 1])        # [1, T, D] token-major
    if pos_embed:
        x = b.add(x, b.const(b.small([1, t, dim], 0.1), "pos_embed"))
    for _ in range(depth):
        x = b.add(x, _attention(b, _layernorm(b, x, dim, "ln1"), t, dim, heads))
        h = _gelu(b, b.linear(_layernorm(b, x, dim, "ln2"), dim, mlp_ratio * dim, "mlp_fc1"))
        x = b.add(x, b.linear(h, mlp_ratio * dim, dim, "mlp_fc2", scale=0.5))
    x = b.reduce_mean(_layernorm(b, x, dim, "ln_final"), [1], keepdims=0)  # [1, D]
    return b.build([b.gemm(x, dim, num_classes, prefix="head")], ["output"])

"""Conv and ConvTranspose: weights [out, in/groups, *kernel] and [in, out/groups, *kernel]."""
from __future__ import annotations

from math import prod

import numpy as np
import onnx_graphsurgeon as gs

from . import LayerKind, const_bias, register


def _geometry(node: gs.Node, x_shape, w_shape, y_shape):
    """Kernel, strides, dilations and explicit pads (auto_pad resolved) of a Conv."""
    nd = len(x_shape) - 2
    k = list(w_shape[2:])
    s = list(node.attrs.get("strides", [1] * nd))
    d = list(node.attrs.get("dilations", [1] * nd))
    pads = list(node.attrs.get("pads", [0] * (2 * nd)))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nd):
            total = max(0, (y_shape[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x_shape[2 + i])
            small, big = total // 2, total - total // 2
            pads[i], pads[nd + i] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    return k, s, d, pads


def im2col(node: gs.Node, x: np.ndarray, w_shape, y: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sample: x [C, *spatial], y [M, *out spatial] -> patches [P, C, K] and targets [P, M]
    at the output positions `pos` (flat indices)."""
    k, s, d, pads = _geometry(node, (1,) + x.shape, w_shape, (1,) + y.shape)
    nd = len(k)
    xp = np.pad(x, [(0, 0)] + [(pads[i], pads[nd + i]) for i in range(nd)])
    out_sp = y.shape[1:]
    coords = np.unravel_index(pos, out_sp)
    koffs = np.unravel_index(np.arange(int(np.prod(k))), k)
    idx = tuple(coords[i][:, None] * s[i] + koffs[i][None, :] * d[i] for i in range(nd))  # [P, K] each
    patches = xp[(slice(None),) + idx]  # [C, P, K]
    targets = y.reshape(y.shape[0], -1)[:, pos].T
    return patches.transpose(1, 0, 2), targets


@register
class Conv(LayerKind):
    op = "Conv"
    refit = True

    def macs(self, node, ins, outs) -> int:
        if len(ins) > 1 and ins[1] and outs[0] and ins[0]:
            return prod(outs[0]) * prod(ins[1][1:])  # every output element reads Cin/g * kernel inputs
        return 0

    def refittable(self, node, x, x_rank) -> bool:
        return x_rank >= 3

    def groups(self, node) -> int:
        return int(node.attrs.get("group", 1))

    def patch_width(self, w_shape) -> int:
        return prod(w_shape[2:])

    def matrices(self, node, groups):
        w = np.asarray(node.inputs[1].values, np.float64)
        m = w.shape[0]
        cog = m // groups
        b = const_bias(node)
        bias = np.zeros(m) if b is None else np.asarray(b, np.float64).reshape(m)
        return w.reshape(groups, cog, -1).transpose(0, 2, 1), bias.reshape(groups, cog)

    def arrays(self, node, W, b, w_shape):
        # written under the same tensor names: group ids (anchored on weight names) stay stable across --steps rounds
        dtype = node.inputs[1].values.dtype
        return np.ascontiguousarray(W.transpose(0, 2, 1).reshape(w_shape), dtype=dtype), b.reshape(-1).astype(dtype)

    def rows(self, node, x, y, w_shape, rows, rng):
        n_pos = int(np.prod(y.shape[1:]))
        pos = rng.choice(n_pos, min(rows, n_pos), replace=False)
        return im2col(node, x, w_shape, y, pos)


@register
class ConvTranspose(LayerKind):
    op = "ConvTranspose"

    def macs(self, node, ins, outs) -> int:
        if len(ins) > 1 and ins[1] and outs[0] and ins[0]:
            return prod(ins[0]) * prod(ins[1][1:])  # every input element is scattered into Cout/g * kernel outputs
        return 0

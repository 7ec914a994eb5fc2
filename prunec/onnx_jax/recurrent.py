"""LSTM, GRU and RNN as jax.lax.scan over the sequence."""
from __future__ import annotations

import numpy as np

from prunec.errors import PrunecError

from .registry import register, static_value


_ACT = {"sigmoid": lambda j, x: j.nn.sigmoid(x), "tanh": lambda j, x: j.numpy.tanh(x),
        "relu": lambda j, x: j.numpy.maximum(x, 0)}


def _activations(c, defaults):
    names = [a.decode().lower() if isinstance(a, bytes) else a.lower() for a in (c.get("activations") or [])]
    names = names or defaults * (2 if c.get("direction", "forward") == "bidirectional" else 1)
    for n in names:
        if n not in _ACT:
            raise PrunecError(f"distillation: {c.node.op_type} activation {n!r} is not supported")
    return names


def _recurrence(c, x, w, r, b, h0, cell0, step, gates, defaults):
    """Shared driver of LSTM/GRU/RNN: per direction, scan `step` over the sequence."""
    jax = c.jax
    jnp = jax.numpy
    if c.get("layout", 0):
        raise PrunecError(f"distillation: {c.node.op_type} with layout=1 is not supported")
    hidden = c.get("hidden_size")
    ndir = np.shape(w)[0]
    batch = np.shape(x)[1]
    acts = _activations(c, defaults)
    per_dir = len(acts) // ndir
    ys, hs, cs = [], [], []
    for d in range(ndir):
        rb = b[d][gates * hidden:] if b is not None else jnp.zeros(gates * hidden)
        wbias = b[d][:gates * hidden] if b is not None else jnp.zeros(gates * hidden)
        h = h0[d] if h0 is not None else jnp.zeros((batch, hidden), x.dtype)
        cc = cell0[d] if cell0 is not None else jnp.zeros((batch, hidden), x.dtype)
        xs = x[::-1] if (c.get("direction", "forward") == "reverse" or d == 1) else x
        xw = jnp.einsum("tbi,gi->tbg", xs, w[d]) + wbias
        fns = [(lambda v, n=n: _ACT[n](jax, v)) for n in acts[d * per_dir:(d + 1) * per_dir]]

        def body(carry, xt, d=d, fns=fns, rb=rb):
            h, cc = carry
            h, cc = step(xt, h, cc, r[d], rb, fns, d)
            return (h, cc), h

        (h, cc), y = jax.lax.scan(body, (h, cc), xw)
        if xs is not x:
            y = y[::-1]
        ys.append(y)
        hs.append(h)
        cs.append(cc)
    y = jnp.stack(ys, axis=1)  # [seq, dirs, batch, hidden]
    return y, jnp.stack(hs), jnp.stack(cs)


@register("LSTM")
def _lstm(c, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    if c.get("input_forget", 0) or c.get("clip") is not None:
        raise PrunecError(f"distillation: LSTM {c.node.name!r} with input_forget/clip is not supported")
    _full_lengths(seq_lens, x)
    H = c.get("hidden_size")

    def step(xt, h, cc, rd, rb, fns, d):
        g = xt + h @ rd.T + rb
        i, o, f, cand = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        if p is not None:
            i = i + p[d][:H] * cc
            f = f + p[d][2 * H:] * cc
        i, f = fns[0](i), fns[0](f)
        cand = fns[1](cand)
        cc = f * cc + i * cand
        if p is not None:
            o = o + p[d][H:2 * H] * cc
        h = fns[0](o) * fns[2](cc)
        return h, cc

    return _recurrence(c, x, w, r, b, h0, c0, step, 4, ["sigmoid", "tanh", "tanh"])


@register("GRU")
def _gru(c, x, w, r, b=None, seq_lens=None, h0=None):
    _full_lengths(seq_lens, x)
    H = c.get("hidden_size")
    lbr = c.get("linear_before_reset", 0)

    def step(xt, h, cc, rd, rb, fns, d):
        hr = h @ rd[:2 * H].T + rb[:2 * H]
        z = fns[0](xt[:, :H] + hr[:, :H])
        rr = fns[0](xt[:, H:2 * H] + hr[:, H:])
        if lbr:
            hh = fns[1](xt[:, 2 * H:] + rr * (h @ rd[2 * H:].T + rb[2 * H:]))
        else:
            hh = fns[1](xt[:, 2 * H:] + (rr * h) @ rd[2 * H:].T + rb[2 * H:])
        return (1 - z) * hh + z * h, cc

    y, hs, _ = _recurrence(c, x, w, r, b, h0, None, step, 3, ["sigmoid", "tanh"])
    return y, hs


@register("RNN")
def _rnn(c, x, w, r, b=None, seq_lens=None, h0=None):
    _full_lengths(seq_lens, x)

    def step(xt, h, cc, rd, rb, fns, d):
        return fns[0](xt + h @ rd.T + rb), cc

    y, hs, _ = _recurrence(c, x, w, r, b, h0, None, step, 1, ["tanh"])
    return y, hs


def _full_lengths(seq_lens, x):
    if seq_lens is None:
        return
    lens = static_value(seq_lens, "sequence_lens")
    if np.any(lens != np.shape(x)[0]):
        raise PrunecError("distillation: recurrent layers with per-sample sequence lengths are not supported")


@register("Einsum")
def _einsum(c, *xs):
    return c.xp(*xs).einsum(c.get("equation"), *xs)


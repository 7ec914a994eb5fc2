"""Time one distillation training step (forward + gradient of a squared-output loss, batch under
jax.vmap, as passes/distill.py runs it) and one forward pass on an ONNX model.

    python -m benchmarks.bench_distill_step out/model.pruned.onnx [--batch 16] [--repeat 3] [--dim width=192]

Prints the compile time (first call) and each step's seconds; dynamic input dims are taken as 1
unless given with --dim NAME=SIZE (a recognizer's width).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import prunec
from prunec.onnx_jax import JaxGraph, require_jax


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                    help="size of a named dynamic input dim (repeatable); others are 1")
    args = ap.parse_args()
    jax = require_jax()
    jnp = jax.numpy
    model = prunec.load(args.model)
    net = JaxGraph(model.to_proto())
    params = {k: jnp.asarray(v) for k, v in net.params().items()}
    rng = np.random.default_rng(0)
    sizes = {k: int(v) for k, v in (d.split("=", 1) for d in args.dim)}
    xs = {}
    for name in net.inputs:
        shape = [d if isinstance(d, int) and d > 0 else sizes.get(str(d), 1) for d in model.shapes[name]]
        xs[name] = rng.random((args.batch, *shape)).astype(np.float32)

    def loss(p, batch):
        def one(x):
            return sum(jnp.mean(jnp.square(y)) for y in net.run(p, x, net.outputs))
        return jnp.mean(jax.vmap(one)(batch))

    step = jax.jit(jax.value_and_grad(loss))
    forward = jax.jit(loss)
    t = time.perf_counter()
    jax.block_until_ready(step(params, xs))
    print(f"compile + first step: {time.perf_counter() - t:.1f} s")
    for _ in range(args.repeat):
        t = time.perf_counter()
        jax.block_until_ready(step(params, xs))
        print(f"training step ({args.batch} samples): {time.perf_counter() - t:.2f} s")
    jax.block_until_ready(forward(params, xs))
    t = time.perf_counter()
    jax.block_until_ready(forward(params, xs))
    print(f"forward ({args.batch} samples): {time.perf_counter() - t:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

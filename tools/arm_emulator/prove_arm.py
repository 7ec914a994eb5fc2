#!/usr/bin/env python3
"""Prove that TVM's aarch64 build of an ONNX model computes what ONNX Runtime computes.

    sudo .venv/bin/python tools/arm_emulator/prove_arm.py MODEL.onnx [--input-shape NAME=1,3,64,64 ...]

Compiles MODEL.onnx with TVM for aarch64 + NEON, cross-links it with aarch64-linux-gnu-g++,
runs it in the emulated arm64 root made by setup.sh (TVM RPC server under qemu, loopback
only, started and stopped here) through prunec's RPC path, and compares every output with
ONNX Runtime on the host on the same seeded random inputs. With --rpc or --tracker/--key it
uses that device instead of starting the emulator (e.g. a real board).

Prints max abs and rel error per output; exit status 0 when all are within tolerance, 1
when not, 2 on a usage or setup error. Emulated timings are not performance figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for prunec

import arm_emu  # noqa: E402


def _parse_shapes(items: list[str]) -> dict[str, list[int]]:
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            shapes[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise SystemExit(f"prove_arm: --input-shape wants NAME=D1,D2,... got {item!r}") from None
        if not sep or not name:
            raise SystemExit(f"prove_arm: --input-shape wants NAME=D1,D2,... got {item!r}")
    return shapes


def _model_inputs(model, given: dict[str, list[int]]) -> dict[str, tuple[list[int], np.dtype]]:
    """Graph inputs (initializers excluded), in order, with shapes (given ones win) and dtypes."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        if vi.name in given:
            shape = given[vi.name]
            fixed = [(i, d, g) for i, (d, g) in enumerate(zip(dims, shape)) if d is not None and d != g]
            if len(shape) != len(dims) or fixed:
                raise SystemExit(
                    f"prove_arm: --input-shape {vi.name}={','.join(map(str, shape))} contradicts the "
                    f"model's static shape {dims}; it can only fill in dynamic dimensions (None)"
                )
        else:
            if any(d is None for d in dims):
                raise SystemExit(
                    f"prove_arm: input {vi.name!r} has a dynamic shape {dims}; "
                    f"give it with --input-shape {vi.name}=1,3,224,224"
                )
            shape = dims
        out[vi.name] = (shape, dtype)
    unknown = set(given) - set(out)
    if unknown:
        raise SystemExit(f"prove_arm: no model input named {sorted(unknown)} (inputs: {list(out)})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="ONNX file")
    ap.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...")
    ap.add_argument("--root", default=arm_emu.DEFAULT_ROOT, help="emulated arm64 root (setup.sh)")
    ap.add_argument("--rpc", help="use this RPC server HOST:PORT instead of the emulator")
    ap.add_argument("--tracker", help="use this RPC tracker HOST:PORT (with --key) instead of the emulator")
    ap.add_argument("--key", help="device key at the tracker")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--keep", metavar="DIR", help="keep the .so and logs in DIR")
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort

    from prunec.backend.rpc import measure_over_rpc
    from prunec.errors import PrunecError
    from prunec.runtime import random_array

    use_emulator = not (args.rpc or args.tracker)
    if use_emulator:
        reason = arm_emu.unavailable_reason(args.root)
        if reason:
            print(f"prove_arm: {reason}", file=sys.stderr)
            return 2
    model = onnx.load(args.model)
    inputs_spec = _model_inputs(model, _parse_shapes(args.input_shape))
    rng = np.random.default_rng(args.seed)
    feeds = {name: random_array(shape, dtype, rng) for name, (shape, dtype) in inputs_spec.items()}
    shapes = {n: s for n, (s, _) in inputs_spec.items()}

    work_ctx = tempfile.TemporaryDirectory(prefix="prove-arm-") if not args.keep else None
    work = Path(args.keep or work_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        refs = sess.run(None, feeds)

        t0 = time.perf_counter()
        ex = arm_emu.compile_onnx(model, shapes)
        lib = arm_emu.cross_export(ex, work / (Path(args.model).stem + "_aarch64.so"))
        print(f"compiled for {arm_emu.AARCH64_TARGET} and cross-linked in {time.perf_counter() - t0:.1f} s: {lib}")

        first_dtype = str(next(iter(inputs_spec.values()))[1])
        kw = dict(lib_path=lib, input_shapes=shapes, dtype=first_dtype, repeat=args.repeat,
                  log=lambda m: print(m, flush=True), inputs=feeds)
        t0 = time.perf_counter()
        if use_emulator:
            print("starting the emulated arm64 RPC server (qemu; importing tvm takes a while) ...", flush=True)
            with arm_emu.EmulatedServer(args.root, arm_emu.free_port(), work / "rpc_server.log").start() as srv:
                res = measure_over_rpc(rpc=srv.address, tracker=None, key=None, **kw)
        else:
            res = measure_over_rpc(rpc=args.rpc, tracker=args.tracker, key=args.key, **kw)
        print(f"ran on {res['device']} in {time.perf_counter() - t0:.1f} s")
    except PrunecError as err:
        print(f"prove_arm: {err}", file=sys.stderr)
        return 2
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()

    outs = res["outputs"]
    if len(outs) != len(refs):
        print(f"FAIL: {len(outs)} outputs from TVM, {len(refs)} from ONNX Runtime")
        return 1
    ok = True
    names = [o.name for o in sess.get_outputs()]
    for name, out, ref in zip(names, outs, refs):
        if out.shape != ref.shape:
            print(f"FAIL {name}: shape {out.shape} vs ONNX Runtime {ref.shape}")
            ok = False
            continue
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        max_rel = max_abs / scale if scale > 0 else max_abs  # relative to the output's largest magnitude
        good = bool(np.allclose(out, ref, rtol=args.rtol, atol=args.atol))
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {name}: shape {list(out.shape)} max abs error {max_abs:.3g}, "
              f"max rel error {max_rel:.3g} (rtol {args.rtol:g}, atol {args.atol:g})")
    lat = res["latency_ms"]
    note = arm_emu.EMULATED_NOTE if use_emulator else "remote device timings"
    print(f"latency median {lat['median']:.1f} ms, p10 {lat['p10']:.1f}, p90 {lat['p90']:.1f} ({note})")
    if use_emulator:
        print(arm_emu.EMULATED_NOTE)
    print("PASS: aarch64 outputs match ONNX Runtime" if ok else "FAIL: aarch64 outputs differ from ONNX Runtime")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

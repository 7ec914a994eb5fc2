"""TVM backend: compile the original and the pruned model with identical settings and tuning
budget for one target (x86, arm, cuda), export deployable artifacts, and measure both.

The CLI calls `add_arguments(parser)` and `run(args, original, pruned, input_shapes, outdir,
log)`; run's result is stored at report["targets"][target]. TVM is imported lazily so that
`prunec --help` and `--target none` stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

from prunec.errors import PrunecError

__all__ = ["add_arguments", "run"]

# TVM's thread pool pins each worker to one core (and the main thread too). On a shared host
# a pinned worker cannot move away from a core another process is using, and every parallel
# kernel waits for it: MobileNetV2 measured 1.3-1.5x slower pinned than unpinned at load 6 on
# 2 cores. ONNX Runtime does not pin by default, so neither do we (set before TVM creates its
# pool; TVM_BIND_THREADS=1 in the environment restores pinning).
os.environ.setdefault("TVM_BIND_THREADS", "0")


def _hostport(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def _nonneg(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("TVM backend (with --target x86|arm|cuda)")
    g.add_argument("--target-cpu", metavar="CPU",
                   help="LLVM CPU name. x86: overrides the detected host CPU; arm: e.g. "
                        "cortex-a72, cortex-a76, neoverse-n1 (default: generic aarch64+neon)")
    g.add_argument("--target-features", metavar="F1,F2",
                   help="extra LLVM target features (mattr), comma separated, e.g. +dotprod")
    g.add_argument("--cuda-arch", metavar="SM",
                   help="CUDA architecture (default: that of the GPU present, else sm_80)")
    g.add_argument("--tune-trials", type=_nonneg, default=0, metavar="N",
                   help="meta-schedule measurement budget, split evenly between the original and "
                        "the pruned model (default: 0, fast default schedules only)")
    g.add_argument("--tuning-db", metavar="PATH",
                   help="tuning database directory, reused across runs and models "
                        "(default: ~/.cache/prunec/tuning/<target-hash>)")
    g.add_argument("--threads", type=_positive, metavar="N",
                   help="threads for TVM and ONNX Runtime (default: all usable cores)")
    g.add_argument("--repeat", type=_positive, default=10, metavar="N",
                   help="timed samples per model and round (default: 10)")
    g.add_argument("--rounds", type=_positive, default=3, metavar="R",
                   help="x86: interleaved timing rounds (ORT and TVM, original and pruned, "
                        "in turn); each latency is its best round's median (default: 3)")
    g.add_argument("--rpc", type=_hostport, metavar="HOST:PORT",
                   help="TVM RPC server of the device to measure on (arm)")
    g.add_argument("--tracker", type=_hostport, metavar="HOST:PORT",
                   help="TVM RPC tracker to request a device from (arm); needs --key")
    g.add_argument("--key", metavar="KEY", help="device key at the tracker")
    g.add_argument("--no-winograd", action="store_true",
                   help="x86/arm: keep 3x3 convs direct instead of Winograd F(4x4|2x2, 3x3) "
                        "(bit-closer to ONNX Runtime, slower)")
    g.add_argument("--no-blocked-layout", action="store_true",
                   help="x86/arm: keep activations NCHW in depthwise-separable nets instead of "
                        "channel-blocked NCHW{vector}c (slower)")
    g.add_argument("--quiet", action="store_true", help="no tuning progress lines")


def run(args, original: Path, pruned: Path, input_shapes: dict[str, list[int]], outdir: Path,
        log: Callable[[str], None]) -> dict:
    from . import build as B
    from . import frontend, target as T

    kind = args.target
    if kind not in T.KINDS:
        raise PrunecError(f"unknown target {kind!r} (expected one of {', '.join(T.KINDS)})")
    if getattr(args, "tracker", None) and not getattr(args, "key", None):
        raise PrunecError("--tracker needs --key (the device key registered at the tracker)")
    quiet = bool(getattr(args, "quiet", False))
    progress = (lambda _m: None) if quiet else log
    cfg = T.target_config(kind, args)
    target = T.make_target(cfg)
    threads = cfg.get("num-cores") or T.host_threads(getattr(args, "threads", None))
    repeat = getattr(args, "repeat", None) or 10
    trials = int(getattr(args, "tune_trials", 0) or 0)
    db_dir = str(Path(getattr(args, "tuning_db", None) or T.default_db_dir(cfg)).expanduser())
    fast = kind in ("x86", "arm")
    winograd = fast and not getattr(args, "no_winograd", False)
    blocked = fast and not getattr(args, "no_blocked_layout", False)

    import tvm

    result: dict = {
        "target": str(target),
        "target_config": cfg,
        "compiler": {"tvm": tvm.__version__,
                     "schedules": ("meta-schedule database, else " if trials else "")
                                  + ("prunec fast CPU defaults (packed-weight direct and Winograd "
                                     "convs; NCHWc activations in depthwise-separable nets)"
                                     if fast else "dlight GPU defaults"),
                     "threads": threads if kind != "cuda" else None,
                     "winograd": winograd,
                     "blocked_layout": blocked,
                     "opt_level": 3},
    }

    models = {"original": Path(original), "pruned": Path(pruned)}
    sigs, mods = {}, {}
    for name, path in models.items():
        try:
            mods[name], sigs[name] = frontend.import_onnx(path, input_shapes)
        except PrunecError:
            raise
        except Exception as e:
            raise PrunecError(f"TVM cannot import {path}: {str(e).strip().splitlines()[-1]}") \
                from e

    # Tuning: the same per-model budget for both; the database is shared, so a workload the
    # two models have in common is tuned once.
    per_model = trials // 2
    tuning = {"trials_per_model": per_model, "db": db_dir, "time_s": 0.0,
              "new_records": 0, "measured_trials": {}}
    if per_model > 0:
        can_tune, why = _can_tune(kind, args)
        if not can_tune:
            log(f"[{kind}] tuning skipped: {why}")
            tuning["skipped"] = why
        else:
            from . import tune as TU

            before = TU.count_records(db_dir)
            t0 = time.time()
            builder, runner = _tune_infra(kind, args)
            for name in models:
                fused = B.fuse(mods[name], target, kind, fast, winograd, blocked)
                r = TU.tune(fused, target, db_dir, per_model, progress, name, builder, runner,
                            seed_hand_schedules=fast)
                tuning["measured_trials"][name] = r["trials"]
            tuning["time_s"] = round(time.time() - t0, 1)
            tuning["new_records"] = TU.count_records(db_dir) - before
    result["tuning"] = tuning

    art_dir = Path(outdir) / kind
    per: dict = {}
    for name in models:
        t0 = time.time()
        try:
            stats: dict = {}
            ex = B.build(mods[name], target, kind, db_dir, log, fast, stats, winograd, blocked)
            lib = B.export(ex, art_dir / f"{name}.so", kind)
            choice = _guard_tuned(kind, name, mods[name], target, lib, sigs[name], threads,
                                  log, winograd, blocked) if fast and stats.get("from_database") \
                else None
        except PrunecError:
            raise
        except Exception as e:  # a compiler failure is ours, but the user needs one line
            raise PrunecError(f"TVM failed to compile the {name} model for {kind}: "
                              f"{str(e).strip().splitlines()[-1]}") from e
        io = {"inputs": [dict(i, tvm_name=_tvm_name(i["name"])) for i in sigs[name]["inputs"]],
              "outputs": sigs[name]["outputs"], "entry": "main",
              "load": "vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(lib), dev); "
                      "vm['main'](*inputs in this order)"}
        (art_dir / f"{name}.json").write_text(json.dumps(io, indent=2))
        per[name] = {"artifact": str(lib), "io": str(art_dir / f"{name}.json"),
                     "compile_s": round(time.time() - t0, 1)}
        if choice:
            per[name]["schedule_check"] = choice
        log(f"[{kind}] {name}: compiled in {per[name]['compile_s']} s -> {lib}")

    _measure(kind, args, models, sigs, per, threads, repeat, result, log)
    result["models"] = per
    return result


def _guard_tuned(kind, name, mod, target, lib: Path, sig, threads, log, winograd=True,
                 blocked=True):
    """When tuning records were applied on x86, time the whole model with them and with the
    default schedules only, alternating, and keep the faster library at `lib`.

    Each record won its task timed alone, but in the model a kernel also decides where its
    output lands (which core's cache, in which order) for the next one, so only the whole model
    says whether the records help. One benchmark run measured MobileNetV2 at 5.76 ms with its
    64-trial records vs 4.57 ms without; timed in alternation here the two were 4.63 vs 4.57 ms.
    Returns the decision for the report, or None when no record applied."""
    from . import build as B
    from . import measure as M

    if kind != "x86":  # the candidates run on this machine
        return None
    plain = B.export(B.build(mod, target, kind, None, lambda m: None, True, None, winograd,
                             blocked),
                     lib.with_name(lib.stem + ".default.so"), kind)
    M.set_tvm_threads(threads)
    tuned_ms, default_ms = M.compare_latency([lib, plain], sig)
    keep_tuned = tuned_ms <= default_ms
    if not keep_tuned:
        plain.replace(lib)
    else:
        plain.unlink()
    verdict = "tuned" if keep_tuned else "default"
    log(f"[{kind}] {name}: whole model with tuning records {tuned_ms:.2f} ms, default schedules "
        f"{default_ms:.2f} ms -> keeping the {verdict} build")
    return {"kept": verdict, "tuned_ms": round(tuned_ms, 3), "default_ms": round(default_ms, 3)}


def _tvm_name(onnx_name: str) -> str:
    # The TVM importer renames inputs that are not valid identifiers (input.1 -> input_1).
    import re

    return re.sub(r"[^0-9a-zA-Z_]", "_", onnx_name)


def _can_tune(kind: str, args) -> tuple[bool, str]:
    if kind == "x86":
        return True, ""
    if kind == "cuda":
        import tvm

        if tvm.cuda().exist:
            return True, ""
        return False, "no GPU here to measure CUDA candidates on"
    if getattr(args, "tracker", None):
        return True, ""
    return False, "tuning for arm measures candidates on the device: pass --tracker and --key"


def _tune_infra(kind: str, args):
    if kind != "arm":
        return "local", "local"
    from tvm.s_tir import meta_schedule as ms

    from .target import ARM_CXX

    host, port = args.tracker.rsplit(":", 1)
    runner = ms.runner.RPCRunner(ms.runner.RPCConfig(
        tracker_host=host, tracker_port=int(port), tracker_key=args.key,
        session_timeout_sec=120))
    builder = ms.builder.LocalBuilder(f_export=_arm_export, max_workers=1)
    del ARM_CXX
    return builder, runner


def _arm_export(mod) -> str:
    """Meta-schedule builder export for arm: the device has no compiler, so link here."""
    import os
    import tempfile

    from tvm.support import cc

    from .target import ARM_CXX

    path = os.path.join(tempfile.mkdtemp(prefix="prunec-ms-"), "tvm_tmp_mod.so")
    mod.export_library(path, fcompile=cc.cross_compiler(ARM_CXX))
    return path


def _time_x86(args, models, sigs, inputs, per, threads, repeat, result) -> None:
    """ONNX Runtime and TVM, original and pruned, on the same cores and threads, timed in
    interleaved rounds (see measure.timed_rounds); ORT's outputs are the reference."""
    from . import measure as M

    M.set_tvm_threads(threads)
    samplers = {}
    for name, path in models.items():
        samplers[("ort", name)], per[name]["_ref"] = M.ort_sampler(path, inputs[name], threads)
    for name in models:
        samplers[("tvm", name)], out = M.tvm_sampler(Path(per[name]["artifact"]), sigs[name],
                                                     inputs[name])
        per[name]["output_check"] = M.compare(out, per[name]["_ref"])
    rounds = int(getattr(args, "rounds", None) or 1)
    timed = M.timed_rounds(samplers, repeat, rounds)
    for name in models:
        per[name]["onnxruntime_latency_ms"] = timed[("ort", name)]
        per[name]["latency_ms"] = timed[("tvm", name)]
    result["timing"] = {"rounds": rounds, "samples_per_round": repeat, "min_sample_ms": 200,
                        "estimator": "median of the best of the interleaved rounds"}


def _measure(kind, args, models, sigs, per, threads, repeat, result, log) -> None:
    from . import measure as M

    inputs = {name: M.make_inputs(sigs[name]) for name in models}
    measured, reason = True, None
    if kind == "x86":
        _time_x86(args, models, sigs, inputs, per, threads, repeat, result)
    else:  # ORT outputs are the reference for every target; its latency means nothing here
        for name, path in models.items():
            per[name]["_ref"] = M.ort_run_and_time(path, inputs[name], threads, 1, 0)[1]
    if kind == "cuda":
        import tvm

        if not tvm.cuda().exist:
            measured, reason = False, "compiled, not measured: no GPU"
        else:
            for name in models:
                lat, out = M.tvm_run_and_time(Path(per[name]["artifact"]), sigs[name],
                                              inputs[name], repeat, dev=tvm.cuda())
                per[name]["latency_ms"] = lat
                per[name]["output_check"] = M.compare(out, per[name]["_ref"])
    elif kind == "arm":
        if not (getattr(args, "rpc", None) or getattr(args, "tracker", None)):
            measured, reason = False, "compiled, not measured: no device (pass --rpc or --tracker)"
        else:
            try:
                from .rpc import measure_over_rpc
            except ImportError:
                measured, reason = False, "compiled, not measured: RPC measurement unavailable"
            else:
                for name in models:
                    shapes = {i["name"]: i["shape"] for i in sigs[name]["inputs"]}
                    dtype = sigs[name]["inputs"][0]["dtype"] if sigs[name]["inputs"] else "float32"
                    r = measure_over_rpc(per[name]["artifact"], shapes, dtype, args.rpc,
                                         args.tracker, args.key, repeat, log)
                    per[name]["latency_ms"] = r.get("latency_ms", r.get("latency"))
                    outs = r.get("outputs")
                    if outs is not None and r.get("inputs") is not None:
                        # only comparable when we know which inputs the device ran on
                        ref = M.ort_run_and_time(models[name], r["inputs"], threads, 1, 0)[1]
                        per[name]["output_check"] = M.compare([a for a in outs], ref)
                    extra = {k: v for k, v in r.items()
                             if k not in ("outputs", "inputs", "latency_ms", "latency")}
                    if extra:
                        per[name]["device"] = extra
    for name in models:
        per[name].pop("_ref", None)
    result["measured"] = measured
    if not measured:
        result["reason"] = reason
        log(f"[{kind}] {reason}")
        return
    o, p = per["original"]["latency_ms"]["median"], per["pruned"]["latency_ms"]["median"]
    result["speedup"] = round(o / p, 3) if p else None
    if kind == "x86":
        oo = per["original"]["onnxruntime_latency_ms"]["median"]
        op = per["pruned"]["onnxruntime_latency_ms"]["median"]
        result["onnxruntime_speedup"] = round(oo / op, 3) if op else None
        result["tvm_vs_onnxruntime"] = {n: round(per[n]["onnxruntime_latency_ms"]["median"]
                                                 / per[n]["latency_ms"]["median"], 3)
                                        for n in models}
    for n in models:
        chk = per[n].get("output_check", {})
        log(f"[{kind}] {n}: {per[n]['latency_ms']['median']:.3f} ms"
            + (f" (ONNX Runtime {per[n]['onnxruntime_latency_ms']['median']:.3f} ms)"
               if "onnxruntime_latency_ms" in per[n] else "")
            + (f", max abs err {chk['max_abs']:.2e}" if "max_abs" in chk else ""))
    log(f"[{kind}] speedup {result['speedup']}x")

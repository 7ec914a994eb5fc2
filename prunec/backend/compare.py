"""Compile the original and the pruned model with identical settings and tuning budget for one
target, export deployable artifacts, and measure both (what `prunec --target T` runs).

`run(opts, original, pruned, input_shapes, outdir, log)`'s result is stored at
report["targets"][opts.target].
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

from prunec.errors import PrunecError
from prunec.progress import phase

from .options import BackendOptions


def tvm_input_name(onnx_name: str) -> str:
    # The TVM importer renames inputs that are not valid identifiers (input.1 -> input_1).
    return re.sub(r"[^0-9a-zA-Z_]", "_", onnx_name)


def _one_line(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


def run(opts: BackendOptions, original: Path, pruned: Path, input_shapes: dict[str, list[int]],
        outdir: Path, log: Callable[[str], None]) -> dict:
    from . import build as B
    from . import frontend
    from .targets import base, get_target

    opts.check()
    tgt = get_target(opts.target)
    kind = tgt.name
    progress = (lambda _m: None) if opts.quiet else log
    cfg = tgt.config(opts)
    target = tgt.make_target(cfg)
    threads = tgt.threads(cfg, opts)
    trials = opts.tune_trials
    db_dir = str(Path(opts.tuning_db or base.default_db_dir(cfg)).expanduser())
    winograd = tgt.cpu_schedules and opts.winograd
    blocked = tgt.cpu_schedules and opts.blocked_layout

    import tvm

    result: dict = {
        "target": str(target),
        "target_config": cfg,
        "compiler": {"tvm": tvm.__version__,
                     "schedules": tgt.schedules_label(trials),
                     "threads": threads if tgt.on_cpu else None,
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
            raise PrunecError(f"TVM cannot import {path}: {_one_line(e)}") from e

    if tgt.cpu_schedules and opts.sparse_kernels:  # a sparsified model: BSR kernels where they time faster
        from .sparse import apply_to_annotated

        mods["pruned"], result["sparse_kernels"] = apply_to_annotated(
            mods["pruned"], models["pruned"], kind, target, log)

    result["tuning"] = _tune(tgt, opts, mods, target, db_dir, winograd, blocked, progress, log)

    art_dir = Path(outdir) / kind
    per: dict = {}
    unscheduled: dict = {}
    # kernels compiled once per workload, kept beside the tuning database (code that runs here)
    kernel_dir = B.kernel_dir_for(db_dir, target) if tgt.runs_here else None
    for name in models:
        # wall time, and this process's CPU time (all its threads): on a shared host the wall
        # time says as much about the other jobs as about the compiler
        t0, c0 = time.time(), time.process_time()
        try:
            stats: dict = {}
            with phase(f"[{tgt.name}] TVM compile of the {name} model"):
                ex = B.build(mods[name], target, tgt, db_dir, stats, winograd, blocked,
                             kernel_dir, tgt.pass_config(opts))
                t1 = time.perf_counter()
                lib = tgt.export(ex, art_dir / f"{name}.so", target)
                stats.setdefault("compile_phases", {})["export"] = round(
                    time.perf_counter() - t1, 2)
            choice = check_tuned(tgt, name, mods[name], target, lib, sigs[name], threads, log,
                                 opts, kernel_dir) if stats.get("from_database") else None
        except PrunecError:
            raise
        except Exception as e:  # a compiler failure is ours, but the user needs one line
            raise PrunecError(f"TVM failed to compile the {name} model for {kind}: "
                              f"{_one_line(e)}") from e
        io = {"inputs": [dict(i, tvm_name=tvm_input_name(i["name"]))
                         for i in sigs[name]["inputs"]],
              "outputs": sigs[name]["outputs"], "entry": "main",
              "load": "vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(lib), dev); "
                      "vm['main'](*inputs in this order)"}
        (art_dir / f"{name}.json").write_text(json.dumps(io, indent=2))
        per[name] = {"artifact": str(lib), "io": str(art_dir / f"{name}.json"),
                     "compile_s": round(time.time() - t0, 1),
                     "compile_cpu_s": round(time.process_time() - c0, 1),
                     "compile_phases": stats.get("compile_phases", {})}
        if "kernels" in stats:
            per[name]["kernels"] = stats["kernels"]
        if choice:
            per[name]["schedule_check"] = choice
        unscheduled[name] = stats.get("unscheduled", [])
        if unscheduled[name]:
            log(f"[{kind}] {name}: {len(unscheduled[name])} function(s) left unscheduled (TVM's "
                f"naive loops, often 10x slower): {', '.join(unscheduled[name])}")
        log(f"[{kind}] {name}: compiled in {per[name]['compile_s']} s ("
            + ", ".join(f"{k} {v}" for k, v in per[name]["compile_phases"].items())
            + (f"; kernels: {stats['kernels']['compiled']} compiled, "
               f"{stats['kernels']['cached']} cached" if "kernels" in stats else "")
            + f") -> {lib}")
    result["unscheduled"] = {"count": sum(len(v) for v in unscheduled.values()), **unscheduled}

    _measure(tgt, opts, models, sigs, per, threads, result, log)
    result["models"] = per
    return result


def check_tuned(tgt, name, mod, target, lib: Path, sig, threads, log, opts,
                kernel_dir: str | None = None):
    """After a build that used tuning records, on a target whose code runs here (x86): time the
    whole model with the records and with the default schedules only, alternating, and keep the
    faster library at `lib`. None elsewhere (nothing to time it on).

    Each record won its task timed alone, but in the model a kernel also decides where its
    output lands (which core's cache, in which order) for the next one, so only the whole
    model says whether the records help. One benchmark run measured MobileNetV2 at 5.76 ms
    with its 64-trial records vs 4.57 ms without; timed in alternation here the two were
    4.63 vs 4.57 ms. Returns the decision for the report."""
    from . import build as B
    from . import measure as M

    if not tgt.runs_here:
        return None
    plain = tgt.export(B.build(mod, target, tgt, None, None, opts.winograd, opts.blocked_layout,
                               kernel_dir),
                       lib.with_name(lib.stem + ".default.so"))
    M.set_tvm_threads(threads)
    tuned_ms, default_ms = M.compare_latency([lib, plain], sig)
    keep_tuned = tuned_ms <= default_ms
    if not keep_tuned:
        plain.replace(lib)
    else:
        plain.unlink()
    verdict = "tuned" if keep_tuned else "default"
    log(f"[{tgt.name}] {name}: whole model with tuning records {tuned_ms:.2f} ms, default "
        f"schedules {default_ms:.2f} ms -> keeping the {verdict} build")
    return {"kept": verdict, "tuned_ms": round(tuned_ms, 3), "default_ms": round(default_ms, 3)}


def _tune(tgt, opts, mods, target, db_dir, winograd, blocked, progress, log) -> dict:
    """The same per-model budget for both models; the database is shared, so a workload the
    two have in common is tuned once."""
    per_model = opts.tune_trials // 2
    tuning = {"trials_per_model": per_model, "db": db_dir, "time_s": 0.0,
              "new_records": 0, "measured_trials": {}}
    if per_model <= 0:
        return tuning
    can_tune, why = tgt.can_tune(opts)
    if not can_tune:
        log(f"[{tgt.name}] tuning skipped: {why}")
        tuning["skipped"] = why
        return tuning
    from . import tune as TU

    before = TU.count_records(db_dir)
    t0 = time.time()
    builder, runner = tgt.tune_infra(opts)
    for name, mod in mods.items():
        with phase(f"[{tgt.name}] tuning the {name} model ({per_model} trials)"):
            fused = tgt.fuse(mod, target, winograd, blocked)
            r = TU.tune(fused, target, db_dir, per_model, progress, name, builder, runner,
                        seed_hand_schedules=tgt.seeds_hand_schedules)
        tuning["measured_trials"][name] = r["trials"]
    tuning["time_s"] = round(time.time() - t0, 1)
    tuning["new_records"] = TU.count_records(db_dir) - before
    return tuning


def _measure(tgt, opts, models, sigs, per, threads, result, log) -> None:
    from . import measure as M
    from .targets.base import Measurement

    inputs = {name: M.make_inputs(sigs[name]) for name in models}
    m = Measurement(models, sigs, inputs, per, threads, opts, log, result)
    measured, reason = tgt.measure(m)
    kind = tgt.name
    result["measured"] = measured
    if not measured:
        result["reason"] = reason
        log(f"[{kind}] {reason}")
        return
    o, p = per["original"]["latency_ms"]["median"], per["pruned"]["latency_ms"]["median"]
    result["speedup"] = round(o / p, 3) if p else None
    if all("onnxruntime_latency_ms" in per[n] for n in models):
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

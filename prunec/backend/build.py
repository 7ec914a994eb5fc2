"""Lowering driver: Relax graph -> fused TIR tasks -> (tuned | target default) schedules -> library.

Both models of a comparison go through exactly this function with the same arguments, so a
speedup compares pruning, not compiler settings. What differs per target (passes, rules,
export) is asked of its DeployTarget (targets/).
"""

from __future__ import annotations

import time
from pathlib import Path


def unscheduled(mod) -> list[str]:
    """PrimFuncs of mod that no schedule (tuning record or rule) took: TVM's naive loops."""
    import tvm

    return sorted(gv.name_hint for gv, f in mod.functions.items()
                  if isinstance(f, tvm.tirx.PrimFunc)
                  and not (f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)))


def lower(mod, target, kind, db_dir: str | None = None, stats: dict | None = None,
          winograd: bool = True, blocked: bool = True):
    """The Relax module ready for tvm.compile: fused, scheduled (tuning records from db_dir
    first, when it holds a database; the target's default schedules for the rest) and
    finalized. stats, when given, receives {"from_database": functions a record scheduled,
    "rules": {function: rule}, "unscheduled": [functions], "zero_copy": ... (CPU),
    "compile_phases": {phase: seconds}}."""
    import tvm
    from tvm import relax

    from .targets import get_target

    tgt = get_target(kind)
    phases = {}
    t0 = time.perf_counter()
    mod = tgt.fuse(mod, target, winograd, blocked)
    phases["fuse"] = time.perf_counter() - t0
    applied = 0
    if db_dir and Path(db_dir, "database_workload.json").exists():
        from .tune import purge_stale_hand_records

        def scheduled(m):
            return {gv.name_hint for gv, f in m.functions.items()
                    if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
                    and f.attrs.get("tirx.is_scheduled", False)}

        purge_stale_hand_records(db_dir)  # an older prunec's defaults must not stand in for ours
        before = scheduled(mod)
        with target:
            mod = relax.transform.MetaScheduleApplyDatabase(db_dir)(mod)
        applied = len(scheduled(mod) - before)
    rules: dict = {}
    t0 = time.perf_counter()
    mod = tgt.schedule(mod, target, rules)
    phases["schedule"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mod = tgt.finalize(mod, target, stats)
    phases["finalize"] = time.perf_counter() - t0
    if stats is not None:
        stats["from_database"] = applied
        stats["rules"] = rules
        stats["unscheduled"] = unscheduled(mod)
        stats.setdefault("compile_phases", {}).update({k: round(v, 2) for k, v in phases.items()})
    return mod


def build(mod, target, kind, db_dir: str | None = None, stats: dict | None = None,
          winograd: bool = True, blocked: bool = True, kernel_dir: str | None = None,
          config: dict | None = None):
    """Returns a relax Executable of `lower`'s module (kind: a target name or DeployTarget);
    kernel_dir: compiled kernels are taken from and kept there (kernel_cache.py); config: the
    target's PassContext settings (DeployTarget.pass_config)."""
    return compile_lowered(lower(mod, target, kind, db_dir, stats, winograd, blocked), target,
                           kernel_dir, stats, config)


def kernel_dir_for(db_dir: str | None, target) -> str | None:
    """Where the compiled kernels of a target live: beside its tuning database, for LLVM
    targets (the only ones whose kernels are object files here); None when the cache is off
    (PRUNEC_KERNEL_CACHE=0)."""
    from . import kernel_cache

    if not db_dir or target.kind.name != "llvm" or not kernel_cache.enabled():
        return None
    return str(Path(db_dir) / "kernels")


def compile_lowered(mod, target, kernel_dir: str | None = None, stats: dict | None = None,
                    config: dict | None = None):
    """tvm.compile of a `lower`ed module, without TIR's common-subexpression elimination: on
    YOLOv8n it took 10 of the 18 s of TVM's TIR passes (prunec's unrolled register tiles are
    long), LLVM's own GVN removes the same redundancy, and the model timed the same with and
    without it (see the README's compile-time section). With kernel_dir (LLVM targets), each
    kernel is compiled once per workload and kept there (kernel_cache.py)."""
    if kernel_dir is not None and target.kind.name == "llvm":
        from .kernel_cache import compile_cached, usable

        if usable(kernel_dir):
            return compile_cached(mod, target, kernel_dir, stats)
    t0 = time.perf_counter()
    ex = _compile_whole(mod, target, config or {})
    if stats is not None:
        stats.setdefault("compile_phases", {})["tvm_compile"] = round(time.perf_counter() - t0, 2)
    return ex


def _compile_whole(mod, target, config: dict):
    import tvm
    from tvm import relax

    ctx = tvm.transform.PassContext.current()
    if target.kind.name == "llvm":  # measured on CPU code only
        config = {**config, "tirx.disable_cse_tir": True}
    with tvm.transform.PassContext(opt_level=ctx.opt_level, config={**dict(ctx.config), **config}):
        return tvm.compile(mod, target=target, relax_pipeline=relax.get_pipeline("default_build"))

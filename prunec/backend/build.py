"""Lowering driver: Relax graph -> fused TIR tasks -> (tuned | target default) schedules -> library.

Both models of a comparison go through exactly this function with the same arguments, so a
speedup compares pruning, not compiler settings. What differs per target (passes, rules,
export) is asked of its DeployTarget (targets/).
"""

from __future__ import annotations

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
    "rules": {function: rule}, "unscheduled": [functions], "zero_copy": ... (CPU)}."""
    import tvm
    from tvm import relax

    from .targets import get_target

    tgt = get_target(kind)
    mod = tgt.fuse(mod, target, winograd, blocked)
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
    mod = tgt.schedule(mod, target, rules)
    if stats is not None:
        stats["from_database"] = applied
        stats["rules"] = rules
        stats["unscheduled"] = unscheduled(mod)
    return tgt.finalize(mod, target, stats)


def build(mod, target, kind, db_dir: str | None = None, stats: dict | None = None,
          winograd: bool = True, blocked: bool = True):
    """Returns a relax Executable of `lower`'s module (kind: a target name or DeployTarget)."""
    return compile_lowered(lower(mod, target, kind, db_dir, stats, winograd, blocked), target)


def compile_lowered(mod, target):
    """tvm.compile of a `lower`ed module, without TIR's common-subexpression elimination: on
    YOLOv8n it took 10 of the 18 s of TVM's TIR passes (prunec's unrolled register tiles are
    long), LLVM's own GVN removes the same redundancy, and the model timed the same with and
    without it (see the README's compile-time section)."""
    import tvm
    from tvm import relax

    ctx = tvm.transform.PassContext.current()
    if target.kind.name != "llvm":  # measured on CPU code only
        return tvm.compile(mod, target=target, relax_pipeline=relax.get_pipeline("default_build"))
    with tvm.transform.PassContext(opt_level=ctx.opt_level,
                                   config={**dict(ctx.config), "tirx.disable_cse_tir": True}):
        return tvm.compile(mod, target=target, relax_pipeline=relax.get_pipeline("default_build"))

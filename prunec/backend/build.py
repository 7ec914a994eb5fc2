"""Lowering pipeline: Relax graph -> fused TIR tasks -> (tuned | fast default) schedules -> library.

Both models of a comparison go through exactly this function with the same arguments, so a
speedup compares pruning, not compiler settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .target import ARM_CXX


def fuse(mod, target, kind: str, fast: bool = True, winograd: bool = True,
         blocked: bool = True):
    """Graph-level passes up to fused PrimFuncs: the units that get tuned or scheduled.
    blocked=False keeps every activation NCHW (see layout.py)."""
    import tvm
    from tvm import relax

    passes = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings()]
    if fast and kind in ("x86", "arm"):
        from . import cpu_schedule, layout

        if blocked:
            passes.append(layout.blocked_layout_pass(cpu_schedule.vector_lanes(target)))
        passes += cpu_schedule.layout_passes(target, winograd)
    passes += [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def schedule_rest(mod, target, kind: str, fast: bool = True):
    """Schedules every PrimFunc that the tuning database did not cover."""
    if kind == "cuda":
        from tvm.s_tir import dlight as dl

        with target:
            return dl.ApplyDefaultSchedule(
                dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                dl.gpu.Fallback())(mod)
    if fast:
        from . import cpu_schedule

        return cpu_schedule.schedule_module(mod, target)
    return mod


def build(mod, target, kind: str, db_dir: str | None, log: Callable[[str], None],
          fast: bool = True, stats: dict | None = None, winograd: bool = True,
          blocked: bool = True):
    """Returns a relax Executable. If db_dir holds a tuning database, its records are applied
    first (best measured schedule per workload); the rest get the fast default schedules.
    stats, when given, receives {"from_database": number of functions a record scheduled}.
    winograd=False keeps every conv direct (see cpu_schedule.layout_passes)."""
    import tvm
    from tvm import relax

    mod = fuse(mod, target, kind, fast, winograd, blocked)
    applied = 0
    if db_dir and Path(db_dir, "database_workload.json").exists():
        from tvm.s_tir import meta_schedule as ms

        def scheduled(m):
            return {gv.name_hint for gv, f in m.functions.items()
                    if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
                    and f.attrs.get("tirx.is_scheduled", False)}

        from .tune import purge_stale_hand_records

        purge_stale_hand_records(db_dir)  # an older prunec's defaults must not stand in for ours
        before = scheduled(mod)
        with target:
            mod = relax.transform.MetaScheduleApplyDatabase(db_dir)(mod)
        applied = len(scheduled(mod) - before)
        del ms
    if stats is not None:
        stats["from_database"] = applied
    mod = schedule_rest(mod, target, kind, fast)
    if fast and kind in ("x86", "arm"):
        mod = zero_copy_views(mod, target, stats)
    return tvm.compile(mod, target=target, relax_pipeline=relax.get_pipeline("default_build"))


def zero_copy_views(mod, target, stats: dict | None = None):
    """The default build pipeline's steps up to explicit output buffers (CallTIRRewrite), then
    zero_copy's split/concat views. tvm.compile's pipeline runs these steps again as no-ops."""
    import tvm
    from tvm import relax

    from . import zero_copy

    with target:
        mod = tvm.transform.Sequential([
            relax.backend.DispatchSampling(), relax.backend.DispatchSortScan(),
            relax.transform.LegalizeOps(), relax.transform.RewriteDataflowReshape(),
            relax.transform.ToNonDataflow(), relax.transform.RemovePurityChecking(),
            relax.transform.CallTIRRewrite()])(mod)
    mod, views = zero_copy.apply(mod)
    if stats is not None:
        stats["zero_copy"] = views
    return mod


def export(ex, path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "arm":
        from tvm.support import cc

        ex.export_library(str(path), fcompile=cc.cross_compiler(ARM_CXX))
    else:
        ex.export_library(str(path))
    return path

"""The compile pipeline shared by the CPU targets (x86, arm): prunec's layout choice and
legalizations, fusion, the zero-trial schedule rules, and split/concat views."""

from __future__ import annotations

from .base import DeployTarget


def fuse(mod, target, winograd: bool = True, blocked: bool = True):
    """Relax passes up to fused PrimFuncs with prunec's CPU computes. blocked=False keeps every
    activation NCHW (cpu/layout.py); winograd=False keeps every conv direct."""
    import tvm
    from tvm import relax

    from ..cpu import layout
    from ..cpu.conv_transpose import conv_transpose_as_conv
    from ..cpu.facts import vector_lanes
    from ..cpu.fold import fold_weight_transforms
    from ..cpu.legalize import legalize_passes

    passes = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
              conv_transpose_as_conv()]
    if blocked:
        passes.append(layout.blocked_layout_pass(vector_lanes(target)))
    passes += legalize_passes(target, winograd)
    passes += [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        fold_weight_transforms(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def zero_copy_views(mod, target, stats: dict | None = None):
    """The default build pipeline's steps up to explicit output buffers (CallTIRRewrite), then
    zero_copy's split/concat views. tvm.compile's pipeline runs these steps again as no-ops."""
    import tvm
    from tvm import relax

    from ..cpu import zero_copy

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


class CpuTarget(DeployTarget):
    cpu_schedules = True
    seeds_hand_schedules = True

    def schedules_label(self, trials: int) -> str:
        return (("meta-schedule database, else " if trials else "")
                + "prunec fast CPU defaults (packed-weight direct and Winograd convs; NCHWc "
                  "activations in depthwise-separable nets)")

    def fuse(self, mod, target, winograd: bool = True, blocked: bool = True):
        return fuse(mod, target, winograd, blocked)

    def schedule(self, mod, target, applied: dict | None = None):
        from ..cpu import schedule_module

        return schedule_module(mod, target, applied)

    def finalize(self, mod, target, stats: dict | None = None):
        return zero_copy_views(mod, target, stats)

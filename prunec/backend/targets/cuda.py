"""NVIDIA GPUs: built here for --cuda-arch (default: the GPU present, else sm_80), scheduled by
TVM's dlight GPU rules, measured only where a GPU is present."""

from __future__ import annotations

import re
from pathlib import Path

from prunec.errors import PrunecError

from .base import DeployTarget, Measurement

DEFAULT_CUDA_ARCH = "sm_80"  # A100: what a CUDA build without a GPU here is compiled for


def detected_cuda_arch() -> str | None:
    """sm_XY of GPU 0 when one is present here (compute capability X.Y), else None."""
    try:
        import tvm

        dev = tvm.cuda(0)
        if not dev.exist:
            return None
        major, _, minor = str(dev.compute_version).partition(".")
        return f"sm_{int(major)}{int(minor or 0)}"
    except Exception:  # noqa: BLE001 - no CUDA runtime in this TVM build, no driver, ...
        return None


def _gpu_here() -> bool:
    import tvm

    return bool(tvm.cuda().exist)


class Cuda(DeployTarget):
    name = "cuda"
    round_to = 8
    on_cpu = False

    def config(self, opts) -> dict:
        arch = opts.cuda_arch or detected_cuda_arch() or DEFAULT_CUDA_ARCH
        if not re.fullmatch(r"sm_\d+[a-z]?", arch):
            raise PrunecError(f"--cuda-arch must look like sm_80, got {arch!r}")
        return {"kind": "cuda", "arch": arch}

    def make_target(self, cfg: dict):
        import json

        import tvm

        try:
            return tvm.target.Target(cfg, host={"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
        except Exception as e:
            raise PrunecError(f"invalid target {json.dumps(cfg)}: {str(e).splitlines()[-1]}") \
                from e

    def schedules_label(self, trials: int) -> str:
        return ("meta-schedule database, else " if trials else "") + "dlight GPU defaults"

    def fuse(self, mod, target, winograd: bool = True, blocked: bool = True):
        import tvm
        from tvm import relax

        passes = [relax.transform.DecomposeOpsForInference(),
                  relax.transform.CanonicalizeBindings(), relax.transform.LegalizeOps(),
                  relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
                  relax.transform.FuseOps(), relax.transform.FuseTIR(),
                  relax.transform.DeadCodeElimination()]
        with target:
            return tvm.transform.Sequential(passes)(mod)

    def schedule(self, mod, target, applied: dict | None = None):
        from tvm.s_tir import dlight as dl

        with target:
            return dl.ApplyDefaultSchedule(
                dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                dl.gpu.Fallback())(mod)

    def export(self, ex, path: Path, target=None) -> Path:
        # With nvcc here, the kernels are compiled now, beside the library, for the arch built
        # for: the machine that loads it then needs no CUDA compiler (cuda_kernels.py).
        from ..cuda_kernels import precompile

        super().export(ex, path, target)
        arch = str(target.attrs.get("arch", "")) if target is not None else ""
        if arch:
            try:
                precompile(ex, path, arch)
            except RuntimeError:  # nvcc rejected it: the library still compiles at load time
                pass
        return path

    def pass_config(self, opts) -> dict:
        # Replay each static-shape region as one CUDA graph: at batch 1 a call of YOLOv8n is
        # ~100 kernel launches and as many VM allocations, which cost more than the kernels.
        return {"relax.backend.use_cuda_graph": opts.cuda_graph}

    def can_tune(self, opts) -> tuple[bool, str]:
        if _gpu_here():
            return True, ""
        return False, "no GPU here to measure CUDA candidates on"

    def measure(self, m: Measurement) -> tuple[bool, str | None]:
        import tvm

        from .. import measure as M

        if not _gpu_here():
            return False, "compiled, not measured: no GPU"
        from ..cuda_kernels import kernels_dir, use_precompiled

        use_precompiled(*(kernels_dir(p["artifact"]) for p in m.per.values()), log=m.log)
        for name, path in m.models.items():
            ref = M.ort_run_and_time(path, m.inputs[name], m.threads, 1, 0)[1]
            lat, out = M.tvm_run_and_time(Path(m.per[name]["artifact"]), m.sigs[name],
                                          m.inputs[name], m.opts.repeat, dev=tvm.cuda())
            m.per[name]["latency_ms"] = lat
            m.per[name]["output_check"] = M.compare(out, ref)
        return True, None

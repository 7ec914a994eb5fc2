"""TVM targets for the three deployment kinds, and a stable key for the tuning database."""

from __future__ import annotations

import hashlib
import json
import os
import re

from prunec.errors import PrunecError

KINDS = ("x86", "arm", "cuda")
ARM_TRIPLE = "aarch64-linux-gnu"
ARM_CXX = "aarch64-linux-gnu-g++"
DEFAULT_CUDA_ARCH = "sm_80"  # A100: what a CUDA build without a GPU here is compiled for


def _features(text: str | None) -> list[str]:
    """'avx512f,-fma' -> ['+avx512f', '-fma'] (LLVM mattr spelling)."""
    out = []
    for f in (text or "").split(","):
        f = f.strip()
        if f:
            out.append(f if f[0] in "+-" else "+" + f)
    return out


def host_threads(requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise PrunecError(f"--threads must be at least 1, got {requested}")
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def target_config(kind: str, args) -> dict:
    """The target as a plain dict (what goes into the report and the db key)."""
    threads = host_threads(getattr(args, "threads", None))
    cpu = getattr(args, "target_cpu", None)
    feats = _features(getattr(args, "target_features", None))
    if kind == "x86":
        import tvm

        cfg = {"kind": "llvm", "mtriple": "x86_64-linux-gnu",
               "mcpu": cpu or tvm.target.codegen.llvm_get_system_cpu(), "num-cores": threads}
        if feats:
            cfg["mattr"] = feats
        return cfg
    if kind == "arm":
        # Generic aarch64 has NEON (AdvSIMD) as baseline; a named core adds its own extensions.
        cfg = {"kind": "llvm", "mtriple": ARM_TRIPLE, "mattr": ["+neon"] + feats,
               "num-cores": threads}
        if cpu:
            cfg["mcpu"] = cpu
        return cfg
    if kind == "cuda":
        arch = getattr(args, "cuda_arch", None) or detected_cuda_arch() or DEFAULT_CUDA_ARCH
        if not re.fullmatch(r"sm_\d+[a-z]?", arch):
            raise PrunecError(f"--cuda-arch must look like sm_80, got {arch!r}")
        return {"kind": "cuda", "arch": arch}
    raise PrunecError(f"unknown target {kind!r} (expected one of {', '.join(KINDS)})")


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


def make_target(cfg: dict):
    import tvm

    try:
        if cfg["kind"] == "cuda":
            return tvm.target.Target(cfg, host={"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
        return tvm.target.Target(cfg)
    except Exception as e:  # an unknown --target-cpu or feature lands here
        raise PrunecError(f"invalid target {json.dumps(cfg)}: {str(e).splitlines()[-1]}") from e


def target_key(cfg: dict) -> str:
    """Short stable hash of the target: tuning records are only valid for the same target.
    Thread count is part of it (schedules are parallelized for it)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def default_db_dir(cfg: dict) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "prunec", "tuning", f"{cfg['kind']}-{target_key(cfg)}")

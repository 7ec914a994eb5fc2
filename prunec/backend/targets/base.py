"""What a deployment target is to prunec: its TVM target, the passes and schedules that compile
for it, how its artifacts are written, whether and how it can be tuned, and how both models are
measured on it. targets/<name>.py subclasses DeployTarget; targets/__init__.py registers it."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prunec.errors import PrunecError


def llvm_features(text: str | None) -> list[str]:
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


def target_key(cfg: dict) -> str:
    """Short stable hash of the target: tuning records are only valid for the same target.
    Thread count is part of it (schedules are parallelized for it)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def default_db_dir(cfg: dict) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "prunec", "tuning", f"{cfg['kind']}-{target_key(cfg)}")


@dataclass
class Measurement:
    """What a target's measure() works with and fills: per model, `per[name]` gets
    latency_ms / output_check / ... (the report's models.<name>)."""

    models: dict          # name -> ONNX path
    sigs: dict            # name -> input signature (frontend.onnx_signature)
    inputs: dict          # name -> {input name: array}, the same for TVM and ONNX Runtime
    per: dict             # name -> the model's report entry (has "artifact")
    threads: int
    opts: object          # BackendOptions
    log: Callable[[str], None]
    result: dict = field(default_factory=dict)  # the target's report entry


class DeployTarget:
    """Base of every target. Subclasses set `name` and `round_to` and override what differs."""

    name = ""
    round_to = 8             # default --round-to: channel counts the kernels like
    cpu_schedules = False    # prunec's zero-trial CPU rules (and Winograd, NCHWc) apply
    on_cpu = True            # the models run on CPU threads (the report's compiler.threads)
    runs_here = False        # its code runs on this machine (tuned builds are checked whole)

    # -- configuration
    def config(self, opts) -> dict:
        """The TVM target as a plain dict (what goes into the report and the tuning db key)."""
        raise NotImplementedError

    def make_target(self, cfg: dict):
        import tvm

        try:
            return tvm.target.Target(cfg)
        except Exception as e:  # an unknown --target-cpu or feature lands here
            raise PrunecError(f"invalid target {json.dumps(cfg)}: {str(e).splitlines()[-1]}") \
                from e

    def threads(self, cfg: dict, opts) -> int:
        """Threads the models (and ONNX Runtime's reference runs) get on the CPU."""
        return cfg.get("num-cores") or host_threads(opts.threads)

    def schedules_label(self, trials: int) -> str:
        return ("meta-schedule database, else " if trials else "") + "TVM defaults"

    # -- compilation
    def fuse(self, mod, target, winograd: bool = True, blocked: bool = True):
        """Graph-level passes up to fused PrimFuncs: the units that get tuned or scheduled."""
        raise NotImplementedError

    def schedule(self, mod, target, applied: dict | None = None):
        """Schedules every PrimFunc the tuning database did not cover."""
        return mod

    def finalize(self, mod, target, stats: dict | None = None):
        """Relax-level rewrites after scheduling, before tvm.compile's own pipeline."""
        return mod

    def pass_config(self, opts) -> dict:
        """Settings of tvm.compile's own pipeline (its PassContext config) for this target."""
        return {}

    def export(self, ex, path: Path, target=None) -> Path:
        """Write the deployable library (target: the tvm Target it was compiled for)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        ex.export_library(str(path))
        return path

    # -- tuning
    seeds_hand_schedules = False  # the tuner measures prunec's own schedule as a baseline

    def can_tune(self, opts) -> tuple[bool, str]:
        return True, ""

    def tune_infra(self, opts):
        """(builder, runner) for meta-schedule."""
        return "local", "local"

    # -- measurement
    def measure(self, m: Measurement) -> tuple[bool, str | None]:
        """Fill m.per (latencies, output checks) and m.result (timing method);
        returns (measured, why not)."""
        raise NotImplementedError

"""aarch64 (NEON) boards: cross-compiled here, measured and tuned over TVM RPC when a board is
given (--rpc, or --tracker with --key)."""

from __future__ import annotations

from pathlib import Path

from .base import Measurement, host_threads, llvm_features
from .cpu import CpuTarget

ARM_TRIPLE = "aarch64-linux-gnu"
ARM_CXX = "aarch64-linux-gnu-g++"  # the system fallback (toolchain.SYSTEM_ARM_CXX)


def export_library(mod, path: str) -> None:
    """Link for the board here (the device has no compiler): Zig from PyPI or the system cross
    compiler, whichever prunec/backend/toolchain.py finds."""
    from ..toolchain import arm_fcompile

    mod.export_library(path, fcompile=arm_fcompile())


def _ms_export(mod) -> str:
    """Meta-schedule builder export: candidates are linked here, run on the board."""
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="prunec-ms-"), "tvm_tmp_mod.so")
    export_library(mod, path)
    return path


class Arm(CpuTarget):
    name = "arm"
    round_to = 8  # NEON: 4 float32 lanes, tiles of 2 vectors

    def config(self, opts) -> dict:
        # Generic aarch64 has NEON (AdvSIMD) as baseline; a named core adds its own extensions.
        cfg = {"kind": "llvm", "mtriple": ARM_TRIPLE,
               "mattr": ["+neon"] + llvm_features(opts.target_features),
               "num-cores": host_threads(opts.threads)}
        if opts.target_cpu:
            cfg["mcpu"] = opts.target_cpu
        return cfg

    def export(self, ex, path: Path, target=None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        export_library(ex, str(path))
        return path

    def can_tune(self, opts) -> tuple[bool, str]:
        if opts.tracker:
            return True, ""
        return False, "tuning for arm measures candidates on the device: pass --tracker and --key"

    def tune_infra(self, opts):
        from tvm.s_tir import meta_schedule as ms

        from ..options import parse_hostport

        host, port = parse_hostport(opts.tracker, "--tracker")
        runner = ms.runner.RPCRunner(ms.runner.RPCConfig(
            tracker_host=host, tracker_port=port, tracker_key=opts.key,
            session_timeout_sec=120))
        builder = ms.builder.LocalBuilder(f_export=_ms_export, max_workers=1)
        return builder, runner

    def measure(self, m: Measurement) -> tuple[bool, str | None]:
        from .. import measure as M

        if not (m.opts.rpc or m.opts.tracker):
            return False, "compiled, not measured: no device (pass --rpc or --tracker)"
        try:
            from ..rpc import measure_over_rpc
        except ImportError:
            return False, "compiled, not measured: RPC measurement unavailable"
        for name in m.models:
            sig = m.sigs[name]
            shapes = {i["name"]: i["shape"] for i in sig["inputs"]}
            dtype = sig["inputs"][0]["dtype"] if sig["inputs"] else "float32"
            r = measure_over_rpc(m.per[name]["artifact"], shapes, dtype, m.opts.rpc,
                                 m.opts.tracker, m.opts.key, m.opts.repeat, m.log)
            m.per[name]["latency_ms"] = r.get("latency_ms", r.get("latency"))
            outs = r.get("outputs")
            if outs is not None and r.get("inputs") is not None:
                # only comparable when we know which inputs the device ran on
                ref = M.ort_run_and_time(m.models[name], r["inputs"], m.threads, 1, 0)[1]
                m.per[name]["output_check"] = M.compare([a for a in outs], ref)
            extra = {k: v for k, v in r.items()
                     if k not in ("outputs", "inputs", "latency_ms", "latency")}
            if extra:
                m.per[name]["device"] = extra
        return True, None

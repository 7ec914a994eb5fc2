"""x86-64 host CPU: built, tuned and measured here, next to ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

from .base import Measurement, host_threads, llvm_features
from .cpu import CpuTarget


class X86(CpuTarget):
    name = "x86"
    round_to = 16  # AVX-512: 16 float32 lanes
    runs_here = True

    def config(self, opts) -> dict:
        import tvm

        cfg = {"kind": "llvm", "mtriple": "x86_64-linux-gnu",
               "mcpu": opts.target_cpu or tvm.target.codegen.llvm_get_system_cpu(),
               "num-cores": host_threads(opts.threads)}
        feats = llvm_features(opts.target_features)
        if feats:
            cfg["mattr"] = feats
        return cfg

    def measure(self, m: Measurement) -> tuple[bool, str | None]:
        """ONNX Runtime and TVM, original and pruned, on the same cores and threads, timed in
        interleaved rounds (see measure.timed_rounds); ORT's outputs are the reference."""
        from .. import measure as M

        M.set_tvm_threads(m.threads)
        samplers, refs = {}, {}
        for name, path in m.models.items():
            samplers[("ort", name)], refs[name] = M.ort_sampler(path, m.inputs[name], m.threads)
        for name in m.models:
            samplers[("tvm", name)], out = M.tvm_sampler(Path(m.per[name]["artifact"]),
                                                         m.sigs[name], m.inputs[name])
            m.per[name]["output_check"] = M.compare(out, refs[name])
        timed = M.timed_rounds(samplers, m.opts.repeat, m.opts.rounds)
        for name in m.models:
            m.per[name]["onnxruntime_latency_ms"] = timed[("ort", name)]
            m.per[name]["latency_ms"] = timed[("tvm", name)]
        m.result["timing"] = {"rounds": m.opts.rounds, "samples_per_round": m.opts.repeat,
                              "min_sample_ms": 200,
                              "estimator": "median of the best of the interleaved rounds"}
        return True, None

"""Quantize: the pruned float model to int8 with ONNX Runtime's static quantization (QDQ format).

Activation ranges are measured on the calibration samples (min/max), weights are quantized per
output channel, symmetric int8; the model keeps float inputs and outputs with QuantizeLinear /
DequantizeLinear pairs around each quantized op, which ONNX Runtime runs as int8 kernels. The pass
then runs the float and the int8 model on held-out samples and measures how far the outputs moved:
a model that does not survive int8 (an error above `tolerance`) is refused rather than written.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from prunec.errors import PrunecError, one_line
from prunec.graph import Model, from_proto
from prunec.recovery.data import CalibData

from .base import PassResult

FORMATS = ("int8",)
# Relative RMS error of any output (int8 vs float, held-out samples) above which the quantized model
# is refused. Per-channel int8 keeps a working CNN within a few percent; past a quarter of the
# output's own magnitude the int8 model no longer computes the same function.
TOLERANCE = 0.25


@dataclass(frozen=True)
class Scheme:
    """The integer types ONNX Runtime's CPU kernels want (its quantize_static guidance): x86 multiplies
    uint8 activations by int8 weights; without VNNI the pairwise 16-bit sums of those products can
    saturate, so weights keep 7 bits there (reduce_range); ARM prefers int8 activations."""

    activations: str = "uint8"
    reduce_range: bool = False
    why: str = ""

    def describe(self) -> dict:
        return {"format": "QDQ", "weights": "int8, symmetric, per output channel"
                + (", 7-bit range" if self.reduce_range else ""),
                "activations": f"{self.activations}, {'asymmetric' if self.activations == 'uint8' else 'symmetric'}, "
                               "per tensor, ranges min/max over the calibration samples",
                "chosen_for": self.why, "engine": "onnxruntime.quantization.quantize_static"}


def scheme_for(target: str | None) -> Scheme:
    """The scheme for the CPU the model will run on: --target arm, else this x86 host."""
    import platform

    if target == "arm" or (target in (None, "none", "x86") and platform.machine().lower() in ("aarch64", "arm64")):
        return Scheme("int8", False, "ARM: int8 activations")
    if target == "cuda":
        return Scheme("int8", False, "CUDA: symmetric int8")
    vnni = _host_has_vnni()
    return Scheme("uint8", not vnni, "x86 with VNNI" if vnni else "x86 without VNNI (this host): 7-bit weights")


def _host_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@dataclass
class QuantizeResult(PassResult):
    format: str = "int8"
    scheme: dict = field(default_factory=dict)  # how ORT was asked to quantize
    calibration_samples: int = 0  # samples the activation ranges were measured on
    check_samples: int = 0  # held-out samples the error was measured on
    output_error: dict = field(default_factory=dict)  # output -> rel_rms, max_abs, max_rel vs the float model
    tolerance: float = TOLERANCE
    quantized_nodes: dict = field(default_factory=dict)  # QuantizeLinear/DequantizeLinear counts
    size_bytes: dict = field(default_factory=dict)  # serialized model, float before / int8 after

    def report(self) -> dict:
        return {"format": self.format, "scheme": self.scheme, "calibration_samples": self.calibration_samples,
                "check_samples": self.check_samples, "output_error_vs_float": self.output_error,
                "tolerance": self.tolerance, "qdq_nodes": self.quantized_nodes, "size_bytes": self.size_bytes,
                "notes": self.notes, "time_s": self.time_s}


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol: one batch-1 feed per call, None at the end."""

    def __init__(self, data: CalibData):
        self._batches = data.batches(1)
        self._n = len(data)

    def get_next(self):
        return next(self._batches, None)

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


class Quantize:
    """Static int8 quantization of a float model; ranges from `fit`, error measured on `check`."""

    name = "quantize"

    def __init__(self, fit: CalibData, check: CalibData, fmt: str = "int8", scheme: Scheme | None = None,
                 tolerance: float = TOLERANCE, log=lambda s: None):
        if fmt not in FORMATS:
            raise PrunecError(f"--quantize {fmt}: unknown format; choose one of {', '.join(FORMATS)}")
        self.fit, self.check, self.format, self.tolerance, self.log = fit, check, fmt, tolerance, log
        self.scheme = scheme or scheme_for(None)

    def __call__(self, model: Model) -> tuple[Model, QuantizeResult]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        float_proto = model.to_proto()
        act = QuantType.QUInt8 if self.scheme.activations == "uint8" else QuantType.QInt8
        tail = output_tail(model)
        with tempfile.TemporaryDirectory(prefix="prunec-quantize-") as tmp:
            src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
            onnx.save(float_proto, str(src), save_as_external_data=float_proto.ByteSize() > 1_900_000_000)
            quiet = logging.getLogger().level
            try:
                logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": prunec's graph is clean
                quantize_static(str(src), str(dst), _Reader(self.fit), quant_format=QuantFormat.QDQ,
                                per_channel=True, reduce_range=self.scheme.reduce_range, activation_type=act,
                                nodes_to_exclude=sorted(tail),
                                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                                # the calibrator keeps two reduced scalars per tensor and sample, not the
                                # activations (and its CalibMaxIntermediateOutputs drops ranges: unused)
                                extra_options={"ActivationSymmetric": self.scheme.activations == "int8"})
            except Exception as exc:  # ORT's quantizer raises many types; the model itself is verified
                raise PrunecError(f"--quantize {self.format}: ONNX Runtime's static quantization failed on the "
                                  f"pruned model ({one_line(exc, 300)}); drop --quantize to keep it float") from None
            finally:
                logging.getLogger().setLevel(quiet)
            q_proto = onnx.load(str(dst))
        q_proto = _with_interface(q_proto, float_proto)
        quantized = from_proto(q_proto, input_shapes=model.input_shapes, source=model.source,
                               io_proto=model.io_proto, notes=list(model.notes), annotations=dict(model.annotations))
        quantized = dataclasses.replace(quantized, header=model.header, metadata_props=dict(model.metadata_props))
        result = QuantizeResult(format=self.format, scheme={**self.scheme.describe(), "float_output_tail": len(tail)}, calibration_samples=len(self.fit),
                                check_samples=len(self.check), tolerance=self.tolerance,
                                quantized_nodes=_count_qdq(q_proto),
                                size_bytes={"float": float_proto.ByteSize(), "int8": quantized.to_proto().ByteSize()})
        if not result.quantized_nodes.get("DequantizeLinear"):
            raise PrunecError(f"--quantize {self.format}: ONNX Runtime quantized no op of this model (no Conv, "
                              "MatMul, Gemm... it can run in int8); drop --quantize")
        result.output_error = output_error(model, quantized, self.check)
        worst = max(result.output_error.items(), key=lambda kv: kv[1]["rel_rms"], default=None)
        if worst is not None and not worst[1]["rel_rms"] <= self.tolerance:
            raise PrunecError(
                f"--quantize {self.format}: int8 changes output {worst[0]!r} by {worst[1]['rel_rms']:.3g} (relative RMS "
                f"on {len(self.check)} held-out samples), over the {self.tolerance} tolerance: this model does not "
                "quantize well statically; drop --quantize or give more representative --calib data")
        return quantized, result


WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
INTEGER_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
               "ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM")


def already_quantized(model: Model) -> str:
    """'' for a float model, else what makes it quantized ('12 DequantizeLinear, 4 QLinearConv')."""
    counts: dict[str, int] = {}
    for n in model.graph.nodes:
        if n.op in INTEGER_OPS:
            counts[n.op] = counts.get(n.op, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def output_tail(model: Model) -> set[str]:
    """Nodes between the last weighted layers and the graph outputs (decoding heads: sigmoid, box
    arithmetic, the Concat of boxes and scores). They stay float: a per-tensor int8 scale over a
    Concat of pixel coordinates (0..640) and scores (0..1) would leave the scores a few levels."""
    tail: set[str] = set()
    stack = list(model.graph.outputs)
    seen = {t.name for t in stack}
    while stack:
        t = stack.pop()
        for node in t.inputs:  # the producer, if any
            if node.op in WEIGHTED and any(isinstance(i, gs.Constant) for i in node.inputs[1:2]):
                continue  # a layer with a weight: it is quantized, and the walk stops here
            if node.name in tail:
                continue
            tail.add(node.name)
            for i in node.inputs:
                if isinstance(i, gs.Variable) and i.name not in seen:
                    seen.add(i.name)
                    stack.append(i)
    return tail


def _with_interface(q_proto: onnx.ModelProto, float_proto: onnx.ModelProto) -> onnx.ModelProto:
    """The quantizer reloads the model with shape inference: give back the float model's inputs and
    outputs as declared (dynamic dims, names), and its metadata."""
    declared = {v.name: v for v in list(float_proto.graph.input) + list(float_proto.graph.output)}
    for v in list(q_proto.graph.input) + list(q_proto.graph.output):
        if v.name in declared:
            v.CopyFrom(declared[v.name])
    return q_proto


def _count_qdq(proto: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def output_error(reference: Model, other: Model, data: CalibData, batch: int = 1) -> dict[str, dict]:
    """Per float output: relative RMS error (||b - a|| / ||a||), max |b - a| and that over max |a|,
    over every sample of `data` (batch-1 runs, so a fixed batch dim is fine)."""
    from prunec.runtime import session

    sa, sb = session(reference.to_proto()), session(other.to_proto())
    names = [o.name for o in sa.get_outputs()]
    sq_err: dict[str, float] = dict.fromkeys(names, 0.0)
    sq_ref, max_abs, max_ref = dict(sq_err), dict(sq_err), dict(sq_err)
    floats: set[str] = set()
    for feed in data.batches(batch):
        for name, a, b in zip(names, sa.run(None, feed), sb.run(None, feed)):
            if not np.issubdtype(np.asarray(a).dtype, np.floating):
                continue
            floats.add(name)
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            sq_err[name] += float(np.sum((b - a) ** 2))
            sq_ref[name] += float(np.sum(a ** 2))
            max_abs[name] = max(max_abs[name], float(np.max(np.abs(b - a))))
            max_ref[name] = max(max_ref[name], float(np.max(np.abs(a))))
    return {n: {"rel_rms": float(np.sqrt(sq_err[n] / sq_ref[n])) if sq_ref[n] > 0 else float(np.sqrt(sq_err[n])),
                "max_abs": max_abs[n], "max_rel": max_abs[n] / max_ref[n] if max_ref[n] > 0 else max_abs[n]}
            for n in names if n in floats}

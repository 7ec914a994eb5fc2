"""The main job: load -> passes (fold BatchNorm, prune, ...) -> verify -> write (-> compile)."""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from . import progress
from .errors import PrunecError
from .graph import Model, load, save
from .macs import graph_macs, graph_params
from .options import PruneOptions  # noqa: F401  (callers import it from here)
from .outputs import RunOutputs, write_new
from .plan import Plan
from .provenance import stamp
from .report import SCHEMA_VERSION, coverage, groups_summary, per_group_counts
from .verify import verify
from .version import __version__


def pipeline_passes(opts: PruneOptions, log=lambda s: None) -> list:
    """The passes a run applies, in order."""
    from prunec.passes import FoldBatchNorm, Prune

    passes = [FoldBatchNorm()] if opts.fold_bn else []
    prune = Prune(opts, log)
    if opts.factorize is not None and opts.calib is not None and opts.structured:
        passes.append(_FactorizeWithCalib(opts, log, prune))  # first: pruning then works on the factors too
    passes.append(prune)
    if opts.sparsity is not None:  # shrink first, then sparsify what is left
        passes.append(_SparsifyWithCalib(opts, log))
    if opts.quantize:  # last: int8 of the final float model
        passes.append(_QuantizeWithCalib(opts, log))
    return passes


def _calib_for(model: Model, opts: PruneOptions):
    """The run's calibration data, read for the model a late pass is given (None without --calib)."""
    from .recovery.data import load_calib, mirrored

    if opts.calib is None:
        return None
    data = load_calib(opts.calib, model, opts.preprocess, opts.calib_samples)
    return mirrored(data, opts.calib_mirror) if opts.calib_mirror else data


class _FactorizeWithCalib:
    """The factorize pass: layer outputs' directions from the fit split, rank chosen on the held-out one."""

    name = "factorize"

    def __init__(self, opts: PruneOptions, log, prune):
        self.opts, self.log, self.prune = opts, log, prune

    def __call__(self, model: Model):
        from prunec.passes.factorize import Factorize

        from .recovery.data import fit_and_check

        self.prune.teacher = model  # distillation then reproduces the model as given, not its factorized form
        _, fit, check = fit_and_check(_calib_for(model, self.opts))
        with progress.phase("low-rank factorization of large linear layers"):
            return Factorize(fit, check, self.opts.factorize, log=self.log)(model)


class _QuantizeWithCalib:
    """The quantize pass: activation ranges from the fit split, error measured on the held-out one."""

    name = "quantize"

    def __init__(self, opts: PruneOptions, log):
        self.opts, self.log = opts, log

    def __call__(self, model: Model):
        from prunec.passes.quantize import Quantize, scheme_for

        from .recovery.data import fit_and_check

        _, fit, check = fit_and_check(_calib_for(model, self.opts))
        with progress.phase(f"int8 quantization (ONNX Runtime, {len(fit)} calibration samples)"):
            return Quantize(fit, check, self.opts.quantize, scheme_for(self.opts.target), log=self.log)(model)


class _SparsifyWithCalib:
    """The sparsify pass, with the run's calibration data read for the model it is given."""

    name = "sparsify"

    def __init__(self, opts: PruneOptions, log):
        self.opts, self.log = opts, log

    def __call__(self, model: Model):
        from dataclasses import replace

        from prunec.passes.sparsify import Sparsify

        opts, data = self.opts, _calib_for(model, self.opts)
        sopts = opts.sparsity
        if opts.reconstruct is not None and sopts.reconstruct is None:  # --no-reconstruct covers both
            sopts = replace(sopts, reconstruct=opts.reconstruct)
        return Sparsify(sopts, data, self.log)(model)


def prune_model(model: Model, opts: PruneOptions, log=lambda s: None) -> tuple[Model, dict, Plan]:
    """Prune an in-memory model; returns the verified pruned model and the report (no files)."""
    from prunec.passes import PruneResult, run_passes
    from prunec.passes.sparsify import SparsityResult

    t0 = time.perf_counter()
    if not 0.0 <= opts.ratio < 1.0:
        raise PrunecError(f"--ratio {opts.ratio}: must be in [0, 1)")
    if opts.reconstruct and opts.calib is None:
        raise PrunecError("--reconstruct needs calibration data (--calib FILE.npz or an image folder)")
    if opts.factorize is not None and opts.calib is None:
        raise PrunecError("--factorize fits the low-rank layers to calibration data: give --calib FILE.npz or an image folder")
    if opts.quantize and opts.calib is None:
        raise PrunecError(f"--quantize {opts.quantize} needs calibration data to measure activation ranges: "
                          "give --calib FILE.npz or an image folder")
    if opts.quantize:
        from prunec.passes.quantize import already_quantized

        if already := already_quantized(model):
            raise PrunecError(f"--quantize {opts.quantize}: {model.source} is already quantized ({already}); "
                              "prune it without --quantize (its integer weights are pruned as they are)")
    with progress.phase("pruning"):
        pruned, results = run_passes(model, pipeline_passes(opts, log))
    pruning = next(r for r in results if isinstance(r, PruneResult))
    sparse = next((r.report() for r in results if isinstance(r, SparsityResult)), None)
    quantized = next((r.report() for r in results if r.name == "quantize"), None)
    factorized = next((r.report() for r in results if r.name == "factorize"), None)
    analysis, plan = pruning.analysis, pruning.plan
    t_passes = time.perf_counter()
    with progress.phase("verification (onnx.checker, ONNX Runtime)"):
        checks = verify(model, pruned)
    t_verify = time.perf_counter()
    summary = groups_summary(analysis)
    pruned_ids = set(plan.groups)
    report = {
        "schema_version": SCHEMA_VERSION,
        "prunec_version": __version__,
        "command": opts.command,
        "input": model.source,
        "input_shapes": model.input_shapes,
        **shape_basis(model, opts),
        "ratio": None if opts.plan_in else opts.ratio,  # a plan says what is removed, not a ratio
        "criterion": f"plan {opts.plan_in}" if opts.plan_in else pruning.criterion,
        "round_to": plan.meta.get("round_to"),
        "params": {"before": graph_params(model.graph), "after": graph_params(pruned.graph),
                   **({"sparse_zeros": sparse["zeros"]} if sparse else {})},
        "macs": {"before": graph_macs(model.graph, model.shapes), "after": graph_macs(pruned.graph, pruned.shapes)},
        "groups": {
            "total": len(summary),
            "prunable": sum(g["prunable"] for g in summary),
            "pruned": len(pruned_ids),
            "channels_removed": plan.removed_channels,
            "skipped": [{"id": g["id"], "size": g["size"], "reasons": g["reasons"]}
                        for g in summary if not g["prunable"]],
            "approximate": [{"id": g["id"], "why": g["approximate"]} for g in summary
                            if g["approximate"] and g["id"] in pruned_ids],
            "per_group": per_group_counts(summary, removed_per_group(plan)),
        },
        "coverage": coverage(analysis),
        "unsupported_ops": analysis.unsupported,
        "verify": checks,
        "notes": model.notes + [n for r in results for n in r.notes],
        **pruning.entries,
        **({"sparsity": sparse} if sparse else {}),
        **({"quantize": quantized} if quantized else {}),
        **({"factorize": factorized} if factorized else {}),
        "timing_s": {**pruning.timing, "verify": t_verify - t_passes, "total": t_verify - t0},
    }
    return pruned, report, plan


def load_for(path: Path, opts: PruneOptions) -> tuple[Model, PruneOptions]:
    """Load a model file at the shapes the options (or, for dynamic dims, the calibration data) say."""
    with progress.phase(f"loading {path.name}"):
        try:
            model = load(path, opts.input_shapes)
        except PrunecError:
            # Dynamic dims are first analysed at a default size (224), which some models cannot run at
            # (PP-OCR's recognizer reads lines 48 high only): load at the calibration data's size.
            hints = _declared_calib_hints(path, opts)
            if not hints:
                raise
            model = load(path, {**opts.input_shapes, **hints})
    if opts.calib is not None and not isinstance(opts.calib, (str, Path, dict)) and model.dynamic_dims:
        # an iterable of samples is read once here: its shapes choose the analysis shape, and every
        # pass after this reads the samples again
        from .recovery.data import load_calib

        opts = dataclasses.replace(opts, calib=load_calib(opts.calib, model, opts.preprocess, opts.calib_samples))
    hints = calib_shape_hints(model, opts)
    if hints:  # dynamic dims: analyse at the calibration data's size rather than the probe size
        from .recovery.data import analysis_shapes

        opts = dataclasses.replace(opts, input_shapes={**opts.input_shapes, **hints}, shape_from_calib=sorted(hints),
                                   calib_shapes=analysis_shapes(opts.calib, model, opts.calib_samples)[1])
        model = load(path, opts.input_shapes)
    return model, opts


def prune_file(path: str | Path, outdir: str | Path, opts: PruneOptions, log=print, finish=None) -> dict:
    """Prune a model file; writes OUTDIR/<stem>.pruned.onnx and OUTDIR/report.json (and the plan).

    Nothing is written until everything succeeded: outputs are staged in a hidden folder inside
    OUTDIR and published together; on any failure (Ctrl-C and SIGTERM included) they are removed.
    `finish(report, pruned_path, stage_dir)` runs before publishing (the CLI compiles there; what
    it writes under stage_dir/<target> is published as OUTDIR/<target>)."""
    path, outdir = Path(path), Path(outdir)
    outs = RunOutputs(outdir, {"model": path, "plan": opts.plan_in,
                               "calibration": opts.calib if isinstance(opts.calib, (str, Path)) else None})
    outs.add("model", outdir / f"{path.stem}.pruned.onnx")
    outs.add("report", outdir / "report.json")
    if opts.plan_out:
        outs.add("plan", opts.plan_out)
    if finish is not None and opts.target not in (None, "none"):
        outs.add("artifacts", outdir / opts.target)
    outs.check()
    model, opts = load_for(path, opts)
    for i, f in enumerate(getattr(model, "external_files", [])):
        outs.inputs[f"external data {i}"] = Path(f)
    outs.check()
    try:
        outs.open_stage()
        pruned, report, plan = prune_model(model, opts, log)
        pruned = stamp(pruned, report, opts.command)
        staged_model = outs.staged("model")
        save(pruned, staged_model)
        if staged_model.with_name(staged_model.name + ".data").exists():
            outs.add("model data", outs.finals["model"].with_name(outs.finals["model"].name + ".data"))
        report["output"] = str(outs.finals["model"])
        if opts.plan_out:
            plan.save(outs.staged("plan"))
            report["plan"] = str(outs.finals["plan"])
        if finish is not None:
            finish(report, staged_model, outs.stage)
            report = _relocate(report, str(outs.stage), str(outdir))
        write_report(report, outs.staged("report").parent)
        outs.publish()
    except BaseException:
        outs.discard()
        raise
    return report


def _relocate(obj, staged: str, final: str):
    """Paths inside the stage folder, as they will be once published."""
    if isinstance(obj, str):
        return final + obj[len(staged):] if obj.startswith(staged) else obj
    if isinstance(obj, dict):
        return {k: _relocate(v, staged, final) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_relocate(v, staged, final) for v in obj)
    return obj


def _json_safe(obj):
    """Strict JSON has no NaN or Infinity: such numbers become null."""
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def removed_per_group(plan: Plan) -> dict[str, int]:
    """Channels removed from each group over all rounds (a multi-round plan keeps earlier rounds in meta)."""
    removed: dict[str, int] = {}
    for groups in [r.get("groups", {}) for r in plan.meta.get("rounds", [])] + [plan.groups]:
        for gid, idx in groups.items():
            removed[gid] = removed.get(gid, 0) + len(idx)
    return removed


def shape_basis(model: Model, opts: PruneOptions) -> dict:
    """Which input shapes the figures (MACs, calibration, latency) refer to, and where they came from.
    Dims the model leaves dynamic stay dynamic in the output whatever size they were analysed at."""
    dynamic = model.dynamic_dims
    if not dynamic:
        return {}
    from_calib = set(opts.shape_from_calib)
    source = {}
    for name, dims in dynamic.items():
        if name in from_calib:
            source[name] = "calibration data" + (f" (the most frequent of {opts.calib_shapes} sample shapes)"
                                                 if opts.calib_shapes > 1 else "")
        elif name in opts.input_shapes:
            source[name] = "--input-shape"
        else:
            source[name] = model.input_shapes_source.get(name, "given")
    return {"dynamic_dims": {n: {str(a): p or "?" for a, p in d.items()} for n, d in dynamic.items()},
            "input_shapes_source": source}


def _declared_calib_hints(path: Path, opts: PruneOptions) -> dict[str, list[int]]:
    """calib_shape_hints from the file's declared inputs, for a model not loaded yet (batch 1)."""
    import onnx

    from .recovery.data import analysis_shapes, declared_inputs

    if opts.calib is None or not isinstance(opts.calib, (str, Path, dict)):
        return {}
    try:
        inputs = declared_inputs(onnx.load(str(path), load_external_data=False))
    except Exception:  # noqa: BLE001 - unreadable: the first load's error is the one to show
        return {}
    shapes, _ = analysis_shapes(opts.calib, None, opts.calib_samples, inputs=inputs)
    hints = {}
    for name, spec in inputs.items():
        sample = shapes.get(name)
        if name in opts.input_shapes or not spec.open or sample is None or len(sample) != len(spec.shape) - 1:
            continue
        hints[name] = [spec.shape[0]] + [int(s) if a in spec.open else d
                                         for a, (s, d) in enumerate(zip(sample, spec.shape[1:]), 1)]
    return hints


def calib_shape_hints(model: Model, opts: PruneOptions) -> dict[str, list[int]]:
    """Shapes for inputs with dynamic dims and no --input-shape: the calibration samples' most
    frequent shape (an .npz read from its headers only; a dict of arrays or lists as given)."""
    from .recovery.data import analysis_shapes

    open_dims = {n: {a for a in d if a > 0} for n, d in model.dynamic_dims.items() if n not in opts.input_shapes}
    if not any(open_dims.values()) or opts.calib is None:
        return {}
    shapes, _ = analysis_shapes(opts.calib, model, opts.calib_samples)
    hints = {}
    for name, axes in open_dims.items():
        sample = shapes.get(name)
        shape = list(model.input_shapes[name])
        if axes and sample is not None and len(sample) == len(shape) - 1:
            hints[name] = [shape[0]] + [int(s) if a in axes else d for a, (s, d) in enumerate(zip(sample, shape[1:]), 1)]
    return hints


def write_report(report: dict, outdir: Path) -> Path:
    import json

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "report.json"
    text = json.dumps(_json_safe(report), indent=1, default=float, allow_nan=False) + "\n"
    write_new(path, text)
    return path

"""The backend as a library: compile one model for a target (`compile_model`, exported as
`prunec.compile`), and prunec's CPU kernels for a Relax module a TVM user already has
(`optimize`)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from prunec.errors import PrunecError

from .options import BackendOptions


def _options(target, options: BackendOptions | None, fields: dict) -> BackendOptions:
    if options is not None:
        if fields:
            raise TypeError("pass either options= or option fields, not both")
        return options
    name = target if isinstance(target, str) else target.name
    return BackendOptions(target=name, **fields).check()


def tvm_target(name: str = "x86", **fields):
    """The TVM target prunec compiles for: `tvm_target("x86")` is this host's CPU with all
    usable cores; fields are BackendOptions' (threads=, target_cpu=, target_features=,
    cuda_arch=)."""
    from .targets import get_target

    opts = _options(name, None, fields)
    tgt = get_target(opts.target)
    return tgt.make_target(tgt.config(opts))


def _onnx_file(model, workdir: str) -> Path:
    """The model as an ONNX file: a path as given, a ModelProto or prunec Model written out."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise PrunecError(f"{path}: no such file")
        return path
    import onnx

    proto = model.to_proto() if hasattr(model, "to_proto") else model
    if not isinstance(proto, onnx.ModelProto):
        raise PrunecError(f"cannot compile a {type(model).__name__}: pass an ONNX file path, an "
                          "onnx.ModelProto or a prunec Model")
    path = Path(workdir, "model.onnx")
    onnx.save(proto, path)
    return path


@dataclass
class Compiled:
    """One model compiled for one target."""

    mod: object                 # the Relax IRModule imported from ONNX (weights as constants)
    lowered: object             # what tvm.compile got: fused, scheduled, views in place
    executable: object          # relax Executable
    target: object              # the tvm.target.Target
    deploy: object              # the DeployTarget (targets/)
    options: BackendOptions
    signature: dict             # inputs (name, shape, dtype) and outputs, in call order
    stats: dict = field(default_factory=dict)  # rules per function, unscheduled, zero_copy
    onnx_path: Path | None = None
    artifact: Path | None = None
    _tmp: object = None

    def export(self, path) -> Path:
        """Write the deployable library (path, e.g. model.so) and beside it path.json naming
        the inputs, shapes and dtypes; returns the library's path."""
        path = Path(path)
        self.deploy.export(self.executable, path, self.target)
        io = {"inputs": self.signature["inputs"], "outputs": self.signature["outputs"],
              "entry": "main", "target": str(self.target)}
        path.with_suffix(".json").write_text(json.dumps(io, indent=2))
        self.artifact = path
        return path

    def measure(self, repeat: int | None = None, rounds: int | None = None,
                log: Callable[[str], None] | None = None) -> dict:
        """Time the model where the target runs (x86: here, interleaved with ONNX Runtime on the
        same inputs; cuda: the GPU here; arm: the board named by the rpc/tracker options) and
        check its outputs against ONNX Runtime. Returns the report's per-model entry
        (latency_ms, output_check, ...) with "measured" (False and a "reason" when there is no
        device to run on). repeat, rounds: samples per round and interleaved rounds (x86),
        by default the options'."""
        from . import measure as M
        from .targets.base import Measurement

        if self.artifact is None:
            self.export(Path(self._workdir(), "model.so"))
        opts = replace(self.options, **{k: v for k, v in (("repeat", repeat), ("rounds", rounds))
                                        if v is not None}).check()
        cfg = self.deploy.config(opts)
        name = "model"
        per = {name: {"artifact": str(self.artifact)}}
        m = Measurement({name: self.onnx_path}, {name: self.signature},
                        {name: M.make_inputs(self.signature)}, per,
                        self.deploy.threads(cfg, opts), opts, log or (lambda _m: None))
        measured, reason = self.deploy.measure(m)
        out = dict(per[name], measured=measured, **m.result)
        if not measured:
            out["reason"] = reason
        return out

    def _workdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="prunec-compile-")
        return self._tmp.name


def compile_model(model, target="x86", *, input_shapes: dict | None = None,
                  options: BackendOptions | None = None, log: Callable[[str], None] | None = None,
                  **fields) -> Compiled:
    """Compile an ONNX model (path, onnx.ModelProto or prunec Model) for a registered target,
    with the same pipeline `prunec --target` uses. Settings are BackendOptions' fields
    (threads=, winograd=, tune_trials=, tuning_db=, rpc=, ...) or a whole `options=`.
    Tuning records are used when tuning_db or tune_trials is given (tune_trials tunes this
    model with that budget first). input_shapes: static shapes for inputs with dynamic dims."""
    from . import build as B
    from . import frontend
    from .targets import base, get_target

    opts = _options(target, options, fields)
    tgt = get_target(opts.target)
    log = log or (lambda _m: None)
    cfg = tgt.config(opts)
    tvm_tgt = tgt.make_target(cfg)
    winograd = tgt.cpu_schedules and opts.winograd
    blocked = tgt.cpu_schedules and opts.blocked_layout
    result = Compiled(None, None, None, tvm_tgt, tgt, opts, {})
    path = _onnx_file(model, result._workdir())
    mod, sig = frontend.import_onnx(path, dict(input_shapes or {}))
    db_dir = None
    if opts.tuning_db or opts.tune_trials:
        db_dir = str(Path(opts.tuning_db or base.default_db_dir(cfg)).expanduser())
    if opts.tune_trials:
        ok, why = tgt.can_tune(opts)
        if not ok:
            raise PrunecError(f"cannot tune for {tgt.name}: {why}")
        from . import tune as TU

        builder, runner = tgt.tune_infra(opts)
        TU.tune(tgt.fuse(mod, tvm_tgt, winograd, blocked), tvm_tgt, db_dir, opts.tune_trials,
                (lambda _m: None) if opts.quiet else log, "model", builder, runner,
                seed_hand_schedules=tgt.seeds_hand_schedules)
    stats: dict = {}
    lowered = B.lower(mod, tvm_tgt, tgt, db_dir, stats, winograd, blocked)
    kernel_dir = (B.kernel_dir_for(db_dir or base.default_db_dir(cfg), tvm_tgt)
                  if tgt.runs_here else None)
    ex = B.compile_lowered(lowered, tvm_tgt, kernel_dir, stats, tgt.pass_config(opts))
    result.mod, result.lowered, result.executable = mod, lowered, ex
    result.signature, result.stats, result.onnx_path = sig, stats, path
    return result


def optimize(mod, target, winograd: bool = True, blocked_layout: bool = True):
    """prunec's zero-trial CPU pipeline on any Relax module: channel-blocked layouts in
    depthwise-separable graphs, prunec's conv/Winograd/depthwise/pool/exp/softmax computes,
    fusion, the schedule rules, and split/concat views. Returns the module for
    `tvm.compile(mod, target=target)`.

    target: "x86" or "arm" (tvm_target's defaults), or an LLVM tvm.target.Target (or its
    string). Weights must be constants in the module (from_onnx(..., keep_params_in_input=False))
    for the compile-time weight transforms (packing, Winograd) to apply."""
    import tvm

    from .targets import TARGETS
    from .targets.cpu import fuse, zero_copy_views
    from .cpu import schedule_module

    if isinstance(target, str) and target in TARGETS:
        target = tvm_target(target)
    elif isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    if target.kind.name != "llvm":
        raise PrunecError(f"optimize applies prunec's CPU kernels; {target.kind.name} is not a "
                          "CPU target (for cuda, TVM's dlight rules apply: "
                          "prunec.compile(model, 'cuda'))")
    mod = fuse(mod, target, winograd, blocked_layout)
    mod = schedule_module(mod, target)
    return zero_copy_views(mod, target)

"""TVM backend: compile ONNX models for a deployment target (x86, arm, cuda), export deployable
artifacts, and measure them.

- `prunec.compile(model, target)` / `compile_model`: one model -> a `Compiled` (the Relax
  module, the executable, export(), measure()).
- `optimize(mod, target)`: prunec's CPU legalizations, fusion and zero-trial schedules applied
  to any Relax module; `cpu.schedule_pass()` is the schedules alone as a module pass.
- `run(opts, original, pruned, ...)`: what `prunec --target` does (compare.py).
- `BackendOptions` / `add_arguments`: the settings and their command-line options.

TVM is imported lazily so that `prunec --help` and `--target none` stay fast.
"""

from __future__ import annotations

import os

from .options import BackendOptions, parse_hostport

# TVM's thread pool pins each worker to one core (and the main thread too). On a shared host
# a pinned worker cannot move away from a core another process is using, and every parallel
# kernel waits for it: MobileNetV2 measured 1.3-1.5x slower pinned than unpinned at load 6 on
# 2 cores. ONNX Runtime does not pin by default, so neither do we (set before TVM creates its
# pool; TVM_BIND_THREADS=1 in the environment restores pinning).
os.environ.setdefault("TVM_BIND_THREADS", "0")


def add_arguments(parser) -> None:
    """The backend's command-line options (BackendOptions.from_args reads them back)."""
    from .options import add_arguments as _add
    from .targets import names

    _add(parser, names())


def run(opts, original, pruned, input_shapes, outdir, log):
    """Compile, export and measure the original and the pruned model (see compare.run)."""
    from .compare import run as _run

    return _run(opts, original, pruned, input_shapes, outdir, log)


def compile_model(model, target="x86", **kw):
    """See api.compile_model."""
    from .api import compile_model as _compile

    return _compile(model, target, **kw)


def optimize(mod, target, winograd: bool = True, blocked_layout: bool = True):
    """See api.optimize."""
    from .api import optimize as _optimize

    return _optimize(mod, target, winograd, blocked_layout)


def tvm_target(name: str = "x86", **options):
    """See api.tvm_target."""
    from .api import tvm_target as _tvm_target

    return _tvm_target(name, **options)


__all__ = ["BackendOptions", "add_arguments", "compile_model", "optimize", "parse_hostport",
           "run", "tvm_target"]

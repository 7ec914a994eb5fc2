"""prunec: a pruning compiler for ONNX models.

    import prunec
    model = prunec.load("model.onnx")
    analysis = prunec.analyze(model)                  # coupled channel groups
    scores = prunec.score(analysis, "l2")             # group id -> importance of each channel
    plan = prunec.make_plan(analysis, scores, 0.5)    # JSON-able: group id -> channels to remove
    pruned = prunec.prune(analysis, plan)             # physically smaller model
    prunec.verify(model, pruned); prunec.save(pruned, "model.pruned.onnx")
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dependency import Analysis
    from .graph import Model
    from .plan import Plan

# Names are imported on first use: `prunec` on the command line starts with `import prunec.cli`,
# which must not pull in numpy, onnx and ONNX Runtime (seconds) before it can handle Ctrl-C.
_LAZY = {
    "Analysis": "dependency", "Group": "dependency", "analyze": "dependency",
    "PrunecError": "errors",
    "Model": "graph", "from_proto": "graph", "load": "graph", "save": "graph",
    "Plan": "plan", "make_plan": "plan",
    "PruneOptions": "pipeline", "prune_file": "pipeline", "prune_model": "pipeline",
    "coverage": "report", "format_inspect": "report", "inspect_dict": "report",
    "verify": "verify",
    "sweep": "sweep",
}


class _Package(types.ModuleType):
    """`prunec.verify` is a function; importing the submodule of the same name (which happens on
    first use now) must not replace it."""

    def __setattr__(self, name, value):
        if name == "verify" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prunec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


from .version import __version__  # noqa: E402  (a small module: no numpy, no onnx)


def score(analysis: "Analysis", criterion: str = "l2") -> dict:
    """Importance of every channel of every prunable group (higher = keep), by a data-free criterion."""
    from .criteria import score_groups

    return score_groups(analysis, criterion)


def prune(analysis: "Analysis", plan: "Plan") -> "Model":
    """Apply a plan: returns a new, smaller model (not yet verified)."""
    from prunec.passes import shrink

    return shrink(analysis, plan)


def inspect(model: "Model") -> dict:
    from .dependency import analyze
    from .report import inspect_dict

    return inspect_dict(analyze(model))


def compile(model, target: str = "x86", **kw):  # noqa: A001 - prunec.compile, as documented
    """Compile a model (ONNX path, onnx.ModelProto or Model) for a target with TVM: returns a
    prunec.backend.api.Compiled (Relax module, executable, export(), measure()). Keyword
    arguments: input_shapes=, options= or BackendOptions fields (threads=, winograd=, ...)."""
    from .backend.api import compile_model

    return compile_model(model, target, **kw)


__all__ = ["__version__", "Analysis", "Group", "Model", "Plan", "PrunecError", "PruneOptions", "analyze", "compile", "coverage",
           "format_inspect", "from_proto", "inspect", "inspect_dict", "load", "make_plan", "prune",
           "prune_file", "prune_model", "save", "score", "verify"]

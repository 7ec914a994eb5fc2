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

from .dependency import Analysis, Group, analyze
from .errors import PrunecError
from .graph import Model, from_proto, load, save
from .plan import Plan, make_plan
from .pipeline import PruneOptions, prune_file, prune_model
from .report import coverage, format_inspect, inspect_dict
from .verify import verify

__version__ = "0.1.0"


def score(analysis: Analysis, criterion: str = "l2") -> dict:
    """Importance of every channel of every prunable group (higher = keep), by a data-free criterion."""
    from .criteria import score_groups

    return score_groups(analysis, criterion)


def prune(analysis: Analysis, plan: Plan) -> Model:
    """Apply a plan: returns a new, smaller model (not yet verified)."""
    from prunec.passes import shrink

    return shrink(analysis, plan)


def inspect(model: Model) -> dict:
    return inspect_dict(analyze(model))


__all__ = ["Analysis", "Group", "Model", "Plan", "PrunecError", "PruneOptions", "analyze", "coverage",
           "format_inspect", "from_proto", "inspect", "inspect_dict", "load", "make_plan", "prune",
           "prune_file", "prune_model", "save", "score", "verify"]

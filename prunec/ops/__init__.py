"""Channel rules, one module per op family.

A rule says how a node's input and output channel spaces relate (`analyze`) and, when the node
carries channel counts in attributes or shape constants, how to rewrite them after pruning
(`rewrite`). Adding an op means adding a rule here; the analysis itself never changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Rule:
    analyze: Callable
    rewrite: Callable | None = None


RULES: dict[str, Rule] = {}


def rule(*op_types: str, rewrite: Callable | None = None):
    """Register `analyze(node, ctx)` for the given op types."""

    def register(fn: Callable) -> Callable:
        for op in op_types:
            RULES[op] = Rule(fn, rewrite)
        return fn

    return register


STANDARD = (None, "", "ai.onnx")


def rule_for(node) -> Rule | None:
    """The rule of a node: standard ops by name, others (com.microsoft) as `domain.op`."""
    return RULES.get(node.op if node.domain in STANDARD else f"{node.domain}.{node.op}")


def _load_all() -> None:
    # Importing the modules registers their rules.
    from . import (  # noqa: F401
        conv, elementwise, normalization, pooling, reshape, concat_split, linear, misc, recurrent, shapes, quantize, control_flow, depth_space,
    )


_load_all()

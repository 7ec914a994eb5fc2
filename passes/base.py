"""The pass protocol: a pass takes a `Model` and returns a new `Model` plus a record of what it did.

A pass never modifies the model it is given (a `Model` shares nothing mutable with its rebuilds:
passes edit a copy of the graph and end with `model.with_graph(graph)`). Its result is a dataclass
whose fields say what it did; `report()` is what report.json shows of it. Facts about the model
itself that later passes or the saved file need go into `model.annotations` (saved as
metadata_props "prunec.<key>").

    model, results = run_passes(model, [FoldBatchNorm(), Shrink(plan)])
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from prunec.graph import Model


@dataclass
class PassResult:
    """What a pass did. Subclasses add their own fields."""

    name: str = ""
    time_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict:
        return asdict(self)


@runtime_checkable
class Pass(Protocol):
    name: str

    def __call__(self, model: Model) -> tuple[Model, PassResult]:
        ...


def run_passes(model: Model, passes: list[Pass]) -> tuple[Model, list[PassResult]]:
    """Apply the passes in order; each result gets the pass's name and wall time."""
    results = []
    for p in passes:
        t0 = time.perf_counter()
        model, result = p(model)
        result.name = result.name or p.name
        result.time_s = time.perf_counter() - t0
        results.append(result)
    return model, results

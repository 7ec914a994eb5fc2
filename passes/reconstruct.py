"""The reconstruct pass: refit the layers that read pruned channels so their outputs match the
original model's on calibration data (least squares, prunec/recovery/refit.py)."""
from __future__ import annotations

from dataclasses import dataclass

from prunec.dependency import Analysis
from prunec.graph import Model
from prunec.plan import Plan
from prunec.recovery.data import CalibData
from prunec.recovery.refit import reconstruct
from prunec.recovery.stream import OriginalValues

from .base import PassResult


@dataclass
class ReconstructResult(PassResult):
    layers: int = 0  # layers refitted
    mode: str = ""
    levels: int = 0
    samples: int = 0
    rows_per_sample: int = 0
    lam: float = 0.0

    def report(self) -> dict:
        return {"layers": self.layers, "mode": self.mode, "samples": self.samples,
                "rows_per_sample": self.rows_per_sample, "lambda": self.lam, "levels": self.levels,
                "time_s": self.time_s}


class Reconstruct:
    """The pass: given the pruned model, refit the layers that read pruned channels so their outputs
    match `original`'s on `data` (`analysis` and `plan`: what was pruned, on `original`)."""

    name = "reconstruct"

    def __init__(self, original: Model, analysis: Analysis, plan: Plan, data: CalibData, mode: str = "auto",
                 log=lambda s: None, cache: OriginalValues | None = None, **solver):
        self.original, self.analysis, self.plan, self.data = original, analysis, plan, data
        self.mode, self.log, self.cache, self.solver = mode, log, cache, solver

    def __call__(self, pruned: Model) -> tuple[Model, ReconstructResult]:
        refit, info = reconstruct(self.original, self.analysis, self.plan, pruned, self.data, mode=self.mode,
                                  log=self.log, cache=self.cache, **self.solver)
        return refit, ReconstructResult(layers=info["layers"], mode=info["mode"], levels=info.get("levels", 0),
                                        samples=info["samples"], rows_per_sample=info["rows_per_sample"],
                                        lam=info["lambda"], time_s=info["time_s"])

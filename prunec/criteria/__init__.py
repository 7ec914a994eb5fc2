"""Importance criteria: one interface, one registry (which also gives the CLI its --criterion choices).

A criterion scores every channel of a group (higher = keep). It declares what it needs:
  - "weights": the group's constant weights only (data-free),
  - "stats": per-channel activation statistics of the (tensor, axis) pairs `stat_keys` names,
  - "gram": Gram matrices of the layers `gram_jobs` names (inputs and outputs on calibration data).
The calibrated flow (prunec.recovery) gathers what is declared into an `Evidence` and calls
`score_groups`; criteria never run a model themselves. Adding a criterion is one new module with a
`@register`ed class plus one line in `_load_all` below.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prunec.errors import PrunecError

WEIGHTS, STATS, GRAM = "weights", "stats", "gram"


@dataclass
class Evidence:
    """What data criteria are given: stats[(tensor, axis)] (ChannelStats-like: mean, mean_abs,
    mean_sq, var, zero_rate, sum) and grams[i] = (G, B) for the criterion's i-th gram job."""

    stats: dict | None = None
    grams: list | None = None


class Criterion:
    name = ""
    help = ""
    needs = WEIGHTS

    @property
    def needs_data(self) -> bool:
        return self.needs != WEIGHTS

    def score(self, analysis, group, evidence: Evidence) -> np.ndarray:
        raise NotImplementedError

    def score_groups(self, analysis, groups, evidence: Evidence) -> dict[str, np.ndarray]:
        return {g.id: self.score(analysis, g, evidence) for g in groups}

    def stat_keys(self, analysis, groups) -> list[tuple[str, int]]:
        """(activation tensor, axis) pairs whose statistics it reads: every activation of the groups."""
        keys: dict[tuple[str, int], None] = {}
        for g in groups:
            for m in g.members:
                if m.role == "act" and m.tensor in analysis.model.shapes:
                    keys[(m.tensor, m.axis)] = None
        return list(keys)

    def gram_jobs(self, analysis, groups) -> list:
        return []


CRITERIA: dict[str, Criterion] = {}


def register(cls: type[Criterion]) -> type[Criterion]:
    CRITERIA[cls.name] = cls()
    return cls


def get(name: str) -> Criterion:
    crit = CRITERIA.get(name)
    if crit is None:
        raise PrunecError(f"unknown importance criterion {name!r}; choose one of {sorted(CRITERIA)}")
    return crit


def needs_data(name: str) -> bool:
    return get(name).needs_data


def score_groups(analysis, criterion: str = "l2", groups=None, evidence: Evidence | None = None
                 ) -> dict[str, np.ndarray]:
    """Scores of every prunable group (or `groups`) by the named criterion."""
    crit = get(criterion)
    evidence = evidence or Evidence()
    if crit.needs == STATS and evidence.stats is None:
        raise PrunecError(f"importance criterion {criterion!r} needs calibration data (--calib)")
    if crit.needs == GRAM and evidence.grams is None:
        raise PrunecError(f"importance criterion {criterion!r} needs calibration data and the calibrated flow (--calib)")
    return crit.score_groups(analysis, groups if groups is not None else analysis.prunable_groups, evidence)


def cli_help() -> str:
    data_free = [c for c in CRITERIA.values() if not c.needs_data]
    data = [c for c in CRITERIA.values() if c.needs_data]
    return ("importance criterion: " + ", ".join(f"{c.name} ({c.help})" for c in data_free) + " (data-free); "
            + ", ".join(f"{c.name} ({c.help})" for c in data) + ": need --calib "
            "(default with --calib: lsq, or output when model MACs x samples > 6e11; l2 without)")


# --------------------------------------------------------------------------- shared by criteria
def normalized_sum(parts: list[np.ndarray], size: int) -> np.ndarray:
    """Each member normalized to mean 1, then summed: a group's score does not depend on how many
    layers it spans, and scores of different groups can share one global ranking."""
    total = np.zeros(size)
    for p in parts:
        mean = p.mean()
        total += p / mean if mean > 0 else p
    return total


def _load_all() -> None:
    # Importing the modules registers their criteria (in the order the CLI lists them).
    from . import magnitude, activation, output, lsq  # noqa: F401


_load_all()

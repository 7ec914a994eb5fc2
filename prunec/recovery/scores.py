"""Scores from data: which criterion `auto` means, and the evidence a criterion declares it needs
(prunec.criteria: statistics on all samples, Gram matrices on the fit split)."""
from __future__ import annotations

import numpy as np

from prunec import criteria
from prunec.graph import Model
from prunec.macs import graph_macs

from .data import CalibData
from .statistics import collect_grams, collect_stats

# With data, `auto` is lsq where it is affordable, else output. lsq was better on every model measured
# (docs/accuracy.md): every Fashion-MNIST row; refit only, PP-OCRv4's recognizer 0.934 -> 0.965 exact
# match at 1.49x and 0.902 -> 0.918 at 2x, YOLOv8n's box F1 0.935 -> 0.944 at 1.49x. Its scores took
# 33 s on YOLOv8n with 512 samples (output's 14 s) and 24 s on the recognizer, on a loaded 2-core host.
DEFAULT_DATA_CRITERION = "lsq"
LARGE_MODEL_DATA_CRITERION = "output"
# model MACs x calibration samples (Fashion-MNIST CNN: 4.6e9; PP-OCRv4 recognizer: 3.6e11; YOLOv8n at
# 320 with 512 samples: 5.2e11; ddddocr's YOLOX-style detector at 416: 1.6e12, not measured with lsq)
SMALL_MODEL_WORK = 6e11


def affordable(macs: float, samples: int) -> bool:
    """Is the model small enough for the costlier data paths (lsq by default, a refit search)?"""
    return macs * samples <= SMALL_MODEL_WORK


def resolve_criterion(asked: str | None, data: CalibData | None, model: Model | None = None) -> str:
    crit = asked or "auto"
    if crit != "auto":
        return crit
    if data is None:
        return "l2"
    if model is not None and not affordable(graph_macs(model.graph, model.shapes), len(data)):
        return LARGE_MODEL_DATA_CRITERION
    return DEFAULT_DATA_CRITERION


def evidence(crit: criteria.Criterion, model: Model, analysis, data: CalibData | None,
             fit: CalibData | None) -> criteria.Evidence:
    """What the criterion declares it needs, measured on `model`."""
    groups = analysis.prunable_groups
    if crit.needs == criteria.STATS:
        return criteria.Evidence(stats=collect_stats(model, data, crit.stat_keys(analysis, groups)))
    if crit.needs == criteria.GRAM:
        return criteria.Evidence(grams=collect_grams(model, fit, crit.gram_jobs(analysis, groups), rows=crit.rows))
    return criteria.Evidence()


def score(crit: criteria.Criterion, model: Model, analysis, data: CalibData | None,
          fit: CalibData | None) -> dict[str, np.ndarray]:
    return crit.score_groups(analysis, analysis.prunable_groups, evidence(crit, model, analysis, data, fit))

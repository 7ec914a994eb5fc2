"""A plan: for each group, the channel indices to remove. Plain JSON data that scripts can edit.

    {"version": 1, "meta": {...}, "groups": {"conv1.weight[0]": [3, 7, 12], ...}}
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dependency import Analysis, Group
from .errors import PrunecError

PLAN_VERSION = 1


@dataclass
class Plan:
    groups: dict[str, list[int]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"version": PLAN_VERSION, "meta": self.meta,
                "groups": {k: sorted(int(i) for i in v) for k, v in self.groups.items() if len(v)}}

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
            raise PrunecError("plan: expected a JSON object with a 'groups' object")
        version = data.get("version", PLAN_VERSION)
        if type(version) is not int or version != PLAN_VERSION:
            raise PrunecError(f"plan: version {version!r} is not one this prunec reads ({PLAN_VERSION})")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise PrunecError(f"plan: 'meta' must be an object, not {type(meta).__name__}")
        groups = {}
        for k, v in data["groups"].items():
            # bool is an int to Python, but `true` is no channel index
            if not isinstance(v, list) or not all(type(i) is int for i in v):
                raise PrunecError(f"plan: group {k!r}: expected a list of integer channel indices")
            groups[k] = v
        return cls(groups, dict(meta))

    def save(self, path: str | Path) -> None:
        from .outputs import write_new

        write_new(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        try:
            text = Path(path).read_bytes().decode("utf-8")
            data = json.loads(text)
        except OSError as exc:
            raise PrunecError(f"plan {path}: cannot read it ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise PrunecError(f"plan {path}: not UTF-8 text; a plan is JSON") from None
        except json.JSONDecodeError as exc:
            raise PrunecError(f"plan {path}: not valid JSON ({exc})") from None
        except RecursionError:
            raise PrunecError(f"plan {path}: JSON nested too deeply to be a plan") from None
        return cls.from_json(data)

    @property
    def removed_channels(self) -> int:
        return sum(len(v) for v in self.groups.values())


def validate(plan: Plan, analysis: Analysis) -> None:
    """A plan must name known, prunable groups, valid indices, and keep at least one channel."""
    by_id = {g.id: g for g in analysis.groups}
    for gid, idx in plan.groups.items():
        g = by_id.get(gid)
        if g is None:
            raise PrunecError(f"plan: no group {gid!r} in this model (see `prunec inspect`)")
        if not idx:
            continue
        if not g.prunable:
            raise PrunecError(f"plan: group {gid!r} cannot be pruned: {'; '.join(g.blocked) or 'single channel'}")
        if min(idx) < 0 or max(idx) >= g.size or len(set(idx)) != len(idx):
            raise PrunecError(f"plan: group {gid!r}: indices must be distinct and in [0, {g.size})")
        if len(idx) >= g.size:
            raise PrunecError(f"plan: group {gid!r}: removing all {g.size} channels is not allowed")


def keep_count(size: int, ratio: float, multiple: int, min_keep: int) -> int:
    """Channels kept after removing `ratio` of them, rounded up to a hardware-friendly multiple."""
    keep = size - math.floor(ratio * size + 1e-9)
    keep = max(keep, min(min_keep, size), 1)
    if multiple > 1:
        keep = min(size, math.ceil(keep / multiple) * multiple)
    return keep


def rounding_multiple(group: Group, round_to: int) -> int:
    """Round the number of physical channels: a group whose channel spans k positions needs fewer."""
    if round_to <= 1:
        return 1
    return round_to // math.gcd(round_to, group.unit())


def make_plan(analysis: Analysis, scores: dict[str, np.ndarray], ratio: float, round_to: int = 8,
              min_keep: int = 1, global_ranking: bool = False, meta: dict | None = None) -> Plan:
    """Remove the lowest-scoring channels: `ratio` of every group, or of all channels ranked together."""
    if not 0.0 <= ratio < 1.0:
        raise PrunecError(f"--ratio {ratio}: must be in [0, 1)")
    groups = [g for g in analysis.prunable_groups if g.id in scores]
    plan = Plan(meta=dict(meta or {}, ratio=ratio, round_to=round_to, min_keep=min_keep,
                          ranking="global" if global_ranking else "per-group"))
    if global_ranking:
        ratios = _global_ratios(groups, scores, ratio)
    else:
        ratios = {g.id: ratio for g in groups}
    for g in groups:
        keep = keep_count(g.size, ratios[g.id], rounding_multiple(g, round_to), min_keep)
        if keep < g.size:
            order = np.argsort(scores[g.id], kind="stable")  # ascending: least important first
            plan.groups[g.id] = sorted(int(i) for i in order[: g.size - keep])
    return plan


def _global_ratios(groups: list[Group], scores: dict[str, np.ndarray], ratio: float) -> dict[str, float]:
    """One threshold over all normalized scores; each group's share below it becomes its ratio."""
    if not groups:
        return {}
    all_scores = np.concatenate([scores[g.id] / (scores[g.id].mean() or 1.0) for g in groups])
    threshold = np.quantile(all_scores, ratio) if ratio > 0 else -np.inf
    out = {}
    for g in groups:
        s = scores[g.id] / (scores[g.id].mean() or 1.0)
        out[g.id] = min(float(np.mean(s < threshold)), 0.9)  # never wipe a group out entirely
    return out


def removal_map(analysis: Analysis, plan: Plan) -> dict:
    """The plan (validated) as the analysis's removed positions: group space -> sorted channel indices."""
    validate(plan, analysis)
    by_id = {g.id: g for g in analysis.groups}
    return {by_id[gid].space: np.asarray(sorted(idx), dtype=np.int64) for gid, idx in plan.groups.items() if idx}

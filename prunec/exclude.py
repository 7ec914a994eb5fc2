"""--exclude patterns: what a user may name to keep channels untouched.

A pattern matches, in this order of meaning:
  - a node name (`/model.22/cv3.0/conv/Conv`): that node's output channels are kept;
  - an op type (`Gemm`, `ConvTranspose`): every node of that type, likewise;
  - a group id as `prunec inspect` prints it (`conv1.weight[0]`, `qkv.weight[1].0`): that group is kept.
`*` and `?` are wildcards (`/model.22/*`, `blocks.*.attn.*`); square brackets are literal, since group
ids contain them. A pattern that matches nothing is an error: a typo must not silently prune
what the user meant to keep.
"""
from __future__ import annotations

import fnmatch
import re

from .errors import PrunecError


def _regex(pattern: str) -> re.Pattern:
    if "*" not in pattern and "?" not in pattern:
        return re.compile(re.escape(pattern) + r"\Z")
    # fnmatch's translation, with [ and ] made literal first
    return re.compile(fnmatch.translate(pattern.replace("[", "\0").replace("]", "\1"))
                      .replace("\0", r"\[").replace("\1", r"\]"))


class Excludes:
    """Compiled patterns, and what each one matched (to refuse patterns matching nothing)."""

    def __init__(self, patterns: list[str] | None):
        self.patterns = list(dict.fromkeys(patterns or []))
        self._regex = {p: _regex(p) for p in self.patterns}
        self.matched: dict[str, list[str]] = {p: [] for p in self.patterns}

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def node(self, name: str, op: str) -> str | None:
        """The first pattern naming this node or its op type (None if none does)."""
        hit = None
        for p, rx in self._regex.items():
            if rx.match(name):
                self.matched[p].append(f"node {name}")
            elif rx.match(op):
                self.matched[p].append(f"{op} node {name}")
            else:
                continue
            hit = hit or p
        return hit

    def group(self, gid: str) -> str | None:
        hit = None
        for p, rx in self._regex.items():
            if rx.match(gid):
                self.matched[p].append(f"group {gid}")
                hit = hit or p
        return hit

    def check_all_matched(self) -> None:
        unmatched = [p for p, what in self.matched.items() if not what]
        if unmatched:
            raise PrunecError(
                f"--exclude {', '.join(repr(p) for p in unmatched)} matches no node name, op type or group id; "
                "`prunec inspect MODEL` lists group ids and their nodes (wildcards: * and ?)")

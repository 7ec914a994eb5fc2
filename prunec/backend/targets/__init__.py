"""The deployment targets, registered by name. The CLI's --target choices and the default
channel rounding per target are read from here.

Adding a target: a module here with a DeployTarget subclass (base.py), and one line in
_REGISTERED. Nothing here imports TVM."""

from __future__ import annotations

from prunec.errors import PrunecError

from .arm import Arm
from .base import DeployTarget
from .cuda import Cuda
from .x86 import X86

_REGISTERED: list[DeployTarget] = [
    X86(),
    Arm(),
    Cuda(),
]
TARGETS: dict[str, DeployTarget] = {t.name: t for t in _REGISTERED}


def names() -> list[str]:
    return list(TARGETS)


def get_target(name) -> DeployTarget:
    """The registered target of that name (a DeployTarget is returned as it is)."""
    if isinstance(name, DeployTarget):
        return name
    try:
        return TARGETS[name]
    except KeyError:
        raise PrunecError(f"unknown target {name!r} (expected one of {', '.join(TARGETS)})") \
            from None


def default_round_to() -> dict[str, int]:
    """--round-to's default per target ("none": pruning only)."""
    return {"none": 8, **{n: t.round_to for n, t in TARGETS.items()}}


__all__ = ["DeployTarget", "TARGETS", "default_round_to", "get_target", "names"]

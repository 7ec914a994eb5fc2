"""The blocks a function rule leaves (epilogues, heads, copies), and the catch-all rule.

Per block: a matrix-vector product gets gemv.py's streamed schedule, anything else the generic
block schedule (elementwise.py)."""

from __future__ import annotations

from ..rule import Rule
from .common import blocks, has_block, inline_injective
from .elementwise import schedule_block
from .gemv import schedule_gemv


def schedule_rest(sch, lanes, threads, done):
    """Schedule every top-level block not named in `done`."""
    for name in [sch.get(b).name_hint for b in blocks(sch)]:
        if name in done or not has_block(sch, name):  # reverse-inlined meanwhile
            continue
        block = sch.get_sblock(name)
        if not schedule_gemv(sch, block, lanes, threads):
            schedule_block(sch, block, lanes)


class Generic(Rule):
    """Any other function (matmul/dense, pooling, mean, softmax, elementwise, copies):
    injective blocks inlined, then every block by schedule_rest. Matches every function, so it
    comes last in rules.RULES."""

    name = "generic"

    def matches(self, sch) -> bool:
        return True

    def schedule(self, sch, lanes, threads):
        inline_injective(sch)
        schedule_rest(sch, lanes, threads, done=set())

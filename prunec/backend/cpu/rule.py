"""The one interface of a CPU schedule rule (after TVM dlight's ScheduleRule).

`rule.apply(func, target)` returns a Schedule of the PrimFunc (its `.mod["main"]` is the
scheduled function, its `.trace` what the tuner records) or None when the function is not the
rule's. A rule that recognizes a function and then fails raises: the dispatcher (rules.py)
reports that function as unscheduled rather than quietly handing it to the next rule.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight import ScheduleRule

from .facts import threads, vector_lanes


def block_names(sch) -> list[str]:
    """Names of the function's top-level blocks, in order."""
    return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]


class Rule(ScheduleRule):
    """A rule schedules the functions holding its `block` (the compute of its op family names
    it); a subclass gives `name`, `block` and `schedule(sch, lanes, threads)`."""

    name = ""  # what report.json and the logs call it
    block: str | None = None
    hint = ""  # appended to the warning when the schedule fails

    def matches(self, sch) -> bool:
        return self.block in block_names(sch)

    def schedule(self, sch, lanes: int, threads: int) -> None:
        raise NotImplementedError

    def apply(self, func, target, tunable: bool = False):
        import tvm

        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        if not self.matches(sch):
            return None
        self.schedule(sch, vector_lanes(target), threads(target))
        return sch

    def __repr__(self) -> str:
        return f"<rule {self.name}>"

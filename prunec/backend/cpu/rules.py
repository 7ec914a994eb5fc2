"""The CPU schedule rules in the order they are tried, and the dispatcher that applies them.

Adding a rule: a file in schedule/ with a `Rule` subclass, and one line in RULES (before
Generic, which takes every function)."""

from __future__ import annotations

import logging

from .schedule.bmm import Bmm
from .schedule.conv import DirectConv
from .schedule.depthwise import Depthwise, DepthwiseBlocked
from .schedule.matmul import Matmul
from .schedule.rest import Generic
from .schedule.softmax import RowSoftmax
from .schedule.winograd import Winograd

_log = logging.getLogger(__name__)

RULES = [
    Winograd(),
    DirectConv(),
    Depthwise(),
    DepthwiseBlocked(),
    Matmul(),
    Bmm(),
    RowSoftmax(),
    Generic(),
]


def _one_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def schedule_func(func, target, name: str = "main", rules=None):
    """(rule, Schedule) for the first rule that takes `func`; (None, None) when none does.
    A rule that takes it and fails is logged at WARNING and counts as none."""
    for rule in rules if rules is not None else RULES:
        try:
            sch = rule.apply(func, target)
        except Exception as e:  # noqa: BLE001 - TVM raises plain errors from schedule primitives
            _log.warning("the %s schedule failed for %s (%s); it runs with TVM's unscheduled "
                         "loops, often 10-80x slower%s", rule.name, name, _one_line(e), rule.hint)
            return None, None
        if sch is not None:
            return rule, sch
    _log.warning("no CPU schedule rule takes %s; it runs with TVM's unscheduled loops", name)
    return None, None


def schedule_module(mod, target, applied: dict | None = None, rules=None):
    """Schedules every PrimFunc of mod not yet scheduled (by a tuning record, say) with the first
    rule that takes it. `applied`, when given, receives {function name: rule name or None}."""
    import tvm

    out = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if func.attrs is not None and func.attrs.get("tirx.is_scheduled", False):
            continue
        rule, sch = schedule_func(func, target, gv.name_hint, rules)
        if applied is not None:
            applied[gv.name_hint] = rule.name if rule else None
        if sch is not None:
            out[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    for gv, f in out.items():
        mod[gv] = f
    return mod


def schedule_task(mod, target):
    """prunec's schedule of a one-function module ({"main": PrimFunc}, a tuning task) as a traced
    Schedule; raises ValueError when no rule takes it."""
    rule, sch = schedule_func(mod["main"], target)
    if sch is None:
        raise ValueError("no prunec CPU schedule for this task")
    return sch


def schedule_pass(target=None):
    """A module pass applying the rules (for a tvm.transform.Sequential after FuseTIR); the target
    is the one given, else the one in scope (`with target:`)."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="PrunecScheduleCPU")
    def run(mod, ctx):
        tgt = target if target is not None else tvm.target.Target.current(allow_none=False)
        return schedule_module(mod, tgt)

    return run

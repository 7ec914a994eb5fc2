"""The CPU schedules are what tests/fixtures/schedules.json recorded: for every fused function
of the bundled test models on AVX-512, AVX2 and NEON, the same rule and the same scheduled TIR
(and the same Relax main after the zero-copy views). A refactor of prunec/backend must keep
them; a change meant to alter a schedule re-records the fixture (python
tests/schedule_fixture.py) and says so."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tvm")

from schedule_fixture import FIXTURE, TARGETS, _models, record_model  # noqa: E402

RECORDED = json.loads(FIXTURE.read_text())
CASES = [(name, tname) for name, _, _ in _models() for tname in TARGETS]
# one model per code path family in the default run, the rest with -m slow
QUICK = {("kernels", "avx512"), ("mobilenetv2", "avx2"), ("yolov8", "neon")}


def _check(name: str, tname: str) -> None:
    model, opts = next((m, o) for n, m, o in _models() if n == name)
    got = record_model(model, TARGETS[tname], **opts)
    want = RECORDED[f"{name}/{tname}"]
    assert {f: r["rule"] for f, r in got["funcs"].items()} == \
        {f: r["rule"] for f, r in want["funcs"].items()}
    changed = [f for f in want["funcs"] if got["funcs"][f]["tir"] != want["funcs"][f]["tir"]]
    assert not changed, f"scheduled TIR changed: {changed}"
    assert got["main"] == want["main"]


def test_fixture_covers_every_rule():
    # every function of every recorded case has a schedule: a None (TVM's naive loops) is a
    # bug (issue 22; the last 39, one-pixel tiles and an unpadded stride-2 conv, are fixed)
    rules = {r["rule"] for case in RECORDED.values() for r in case["funcs"].values()}
    assert rules == {"winograd", "conv2d", "depthwise", "depthwise_nchwc", "generic"}
    assert set(RECORDED) == {f"{n}/{t}" for n, t in CASES}


@pytest.mark.parametrize("name,tname", sorted(QUICK))
def test_schedules_unchanged(name, tname):
    _check(name, tname)


@pytest.mark.slow
@pytest.mark.parametrize("name,tname", [c for c in CASES if c not in QUICK])
def test_schedules_unchanged_everywhere(name, tname):
    _check(name, tname)

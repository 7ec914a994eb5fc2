"""Tuning records are re-checked against the default schedule before the database may use them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")


def _conv_task(tmp_path, channels=8):
    """The fused conv+bias+relu PrimFunc of a one-layer model, as a tuning task module (8 input
    channels: a direct conv, too narrow for Winograd; 16: Winograd)."""
    from tvm.s_tir.meta_schedule import relax_integration as ri

    from prunec.backend import frontend
    from prunec.backend.targets import get_target
    from prunec.backend.targets.cpu import fuse

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, channels, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
         helper.make_node("Relu", ["c"], ["y"])], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 28, 28])], [w, b])
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "one.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    mod, _ = frontend.import_onnx(str(path), {"x": [1, channels, 28, 28]})
    tgt = get_target("x86").make_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                              "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 1})
    tasks = [t for t in ri.extract_tasks(fuse(mod, tgt), tgt)
             if "conv" in t.task_name or "winograd" in t.task_name]
    assert len(tasks) == 1
    return tasks[0], tgt


def test_a_slow_record_that_looked_fast_is_replaced_by_the_default(tmp_path):
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms
    from tvm_ffi import structural_equal

    from prunec.backend.tune import hand_schedule, verify_winners

    task, tgt = _conv_task(tmp_path)
    mod = task.dispatched[0]
    (tmp_path / "db").mkdir()
    db = ms.database.JSONDatabase(work_dir=str(tmp_path / "db"))
    args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    hand = hand_schedule(mod, tgt)
    # TVM's unscheduled loop nest (many times slower), recorded as if it had been timed in a
    # quiet moment, and the default schedule recorded slower than that
    naive = s_tir.Schedule(mod)
    naive.split(naive.get_loops(naive.get_sblock("prunec_conv"))[1], [None, 1])  # a trace to record
    db.commit_tuning_record(ms.database.TuningRecord(hand.trace, db.commit_workload(mod), [1e-3], tgt, args_info))
    db.commit_tuning_record(ms.database.TuningRecord(naive.trace, db.commit_workload(mod), [1e-6], tgt, args_info))
    assert structural_equal(db.query_schedule(mod, tgt, "main").mod, naive.mod)

    # the default's three rounds (fastest of each): one round alone was mis-timed at host load ~8
    verdict = verify_winners(ms, [mod], tgt, db)

    assert verdict == {"tuned": 0, "default": 1}
    assert structural_equal(db.query_schedule(mod, tgt, "main").mod, hand.mod)
    # a second check finds the default leading and leaves the database alone
    assert verify_winners(ms, [mod], tgt, db) == {"tuned": 0, "default": 0}


def test_hand_schedule_records_of_another_prunec_are_dropped(tmp_path):
    """A persistent database outlives the code: a hand-schedule record measured by an older
    prunec would be replayed as if it were today's default. Those are dropped (tuned records and
    today's hand records stay), and the task then counts as lacking its default record."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from prunec.backend.cpu import schedule_task
    from prunec.backend.tune import (HAND_TAG, _hand_record_missing, hand_schedule,
                                     purge_stale_hand_records, schedule_version)

    task, tgt = _conv_task(tmp_path)
    mod = task.dispatched[0]
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    db = ms.database.JSONDatabase(work_dir=str(dbdir))
    args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    old = schedule_task(mod, tgt)
    old.annotate(old.get_sblock("root"), HAND_TAG, "0123456789abcdef")  # another version
    tuned = s_tir.Schedule(mod)
    tuned.split(tuned.get_loops(tuned.get_sblock("prunec_conv"))[1], [None, 1])
    for sch, sec in ((old, 1e-6), (tuned, 2e-3)):
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod),
                                                         [sec], tgt, args_info))
    assert _hand_record_missing(mod, tgt, db)
    assert purge_stale_hand_records(str(dbdir)) == 1
    assert purge_stale_hand_records(str(dbdir)) == 0
    db = ms.database.JSONDatabase(work_dir=str(dbdir))
    assert len(db.get_top_k(db.commit_workload(mod), 10)) == 1  # the tuned one
    assert _hand_record_missing(mod, tgt, db)
    db.commit_tuning_record(ms.database.TuningRecord(hand_schedule(mod, tgt).trace,
                                                     db.commit_workload(mod), [1e-3], tgt,
                                                     args_info))
    assert not _hand_record_missing(mod, tgt, db)
    assert purge_stale_hand_records(str(dbdir)) == 0
    text = (dbdir / "database_tuning_record.json").read_text()
    assert schedule_version() in text and "0123456789abcdef" not in text


def test_a_read_only_database_is_used_as_it_is(tmp_path, monkeypatch):
    """A shared database the user cannot write: outdated defaults stay, nothing fails."""
    import os

    from prunec.backend import tune

    dbdir = tmp_path / "db"
    dbdir.mkdir()
    rec = dbdir / "database_tuning_record.json"
    stale = f'[0, [[[], ["x"], ["{tune.HAND_TAG}", "0123456789abcdef"]], [1e-3]]]\n'
    rec.write_text(stale)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "replace", refuse)
    assert tune.purge_stale_hand_records(str(dbdir)) == 0
    assert rec.read_text() == stale


def test_tasks_without_a_search_space_are_left_to_their_hand_schedule(tmp_path):
    """meta-schedule's generic rules cannot schedule the Winograd stages; such a task must be
    kept out of tune_tasks (one would abort the whole search), a direct conv stays in."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule import relax_integration as ri

    from prunec.backend.tune import _searchable

    direct, _ = _conv_task(tmp_path / "d", channels=8)
    wino, _ = _conv_task(tmp_path / "w", channels=16)
    assert "winograd" in wino.task_name and "conv" in direct.task_name
    assert _searchable(ms, ri, direct, str(tmp_path))
    assert not _searchable(ms, ri, wino, str(tmp_path))

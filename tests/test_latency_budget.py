"""--target-latency: a budget in measured latency, spread where the latency table says time falls."""
import json
import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import prunec
from prunec.backend.latency_table import LatencyTable, counts, workload_of
from prunec.recovery.allocation import Floors, MacsModel, budget_plan
from prunec.recovery.latency import LatencyModel
from tests.cli_helpers import run_prunec


def chain_model():
    """x(16) -> conv a (32) -> relu -> conv b (32) -> relu -> conv c (32, 1x1) -> relu -> conv out (8):
    groups a (a's outputs, b's inputs) and b (b's outputs, c's inputs) cost the same MACs per channel."""
    rng = np.random.default_rng(0)
    shapes = {"a": (32, 16, 3, 3), "b": (32, 32, 3, 3), "c": (32, 32, 1, 1), "o": (8, 32, 1, 1)}
    inits, nodes, x = [], [], "x"
    for name, shape in shapes.items():
        inits += [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, f"{name}.w"),
                  numpy_helper.from_array(np.zeros(shape[0], np.float32), f"{name}.b")]
        pads = [1, 1, 1, 1] if shape[2] == 3 else [0, 0, 0, 0]
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], pads=pads, name=name))
        x = name
        if name != "o":
            nodes.append(helper.make_node("Relu", [name], [f"r{name}"], name=f"r{name}"))
            x = f"r{name}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16])],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return prunec.from_proto(model)


def fake_table(analysis, out_us, in_us) -> LatencyTable:
    """A table as the target would give it: out_us(node, count) with all inputs kept, in_us likewise."""
    table = LatencyTable(None, "test-target")
    for n in analysis.graph.nodes:
        wl = workload_of(n, analysis.model.shapes)
        if wl is None:
            continue
        for c in counts(wl.out_full):
            table.record(wl, c, wl.in_full, out_us(n.name, c))
        for c in counts(wl.in_full):
            if c != wl.in_full:
                table.record(wl, wl.out_full, c, in_us(n.name, c))
    return table


def _kept(plan, analysis):
    return {g.id: g.size - len(plan.groups.get(g.id, [])) for g in analysis.prunable_groups}


def test_the_allocation_spends_the_budget_where_latency_falls():
    model = chain_model()
    analysis = prunec.analyze(model)
    ga, gb = "a.w[0]", "b.w[0]"
    assert {g.id for g in analysis.prunable_groups} == {ga, gb, "c.w[0]"}
    # conv b's time falls with its outputs in steps of 16 and not at all with its inputs (a's
    # channels); conv c's falls with its inputs (b's channels) in steps of 16 too; conv a's is flat
    out_us = {"a": lambda c: 50.0, "b": lambda c: 100.0 * math.ceil(c / 16) / 2, "c": lambda c: 40.0,
              "o": lambda c: 10.0}
    in_us = {"a": lambda c: 50.0, "b": lambda c: 100.0, "c": lambda c: 40.0 * math.ceil(c / 16) / 2, "o": lambda c: 10.0 * c / 32}
    table = fake_table(analysis, lambda n, c: out_us[n](c), lambda n, c: in_us[n](c))
    scores = {g.id: np.ones(g.size) for g in analysis.prunable_groups}
    floors = Floors(protect=False)

    def size_model(a, groups):
        return LatencyModel(a, groups, table, original_us=250.0)

    latency = budget_plan(analysis, scores, 0.7, round_to=8, floors=floors, size_model=size_model)
    kept = _kept(latency, analysis)
    m = size_model(analysis, [g for g in analysis.prunable_groups])
    assert m.total == pytest.approx(250.0)
    assert latency.meta["budget"] == "met" and latency.meta["estimated_latency_us"] <= 0.7 * 250.0 + 1e-6
    # group a buys no latency: untouched; group b steps to counts where conv b runs faster
    assert kept[ga] == 32 and kept[gb] == 16
    # the MACs budget at the same share cuts group a as well (its MACs fall like b's)
    macs = _kept(budget_plan(analysis, scores, 0.7, round_to=8, floors=floors), analysis)
    assert macs[ga] < 32
    # the latency model sees no gain in cutting a, the MACs model does
    groups = list(analysis.prunable_groups)
    ia = [g.id for g in groups].index(ga)
    cut_a = np.zeros(len(groups))
    cut_a[ia] = 16
    assert m.macs(cut_a) == pytest.approx(m.total)
    assert MacsModel(analysis, groups).macs(cut_a) < MacsModel(analysis, groups).total


def test_kept_counts_step_to_those_the_kernels_run_faster_at():
    model = chain_model()
    analysis = prunec.analyze(model)
    # every node's time is a staircase of 16-channel vectors: 40 costs what 48 does
    table = fake_table(analysis, lambda n, c: 10.0 * math.ceil(c / 16), lambda n, c: 10.0 * math.ceil(c / 16))
    groups = list(analysis.prunable_groups)
    m = LatencyModel(analysis, groups, table, original_us=200.0)
    for g, steps in zip(groups, m.keep_counts):
        assert steps == [16, 32], (g.id, steps)
    # a fixed --round-to keeps the multiples instead
    assert LatencyModel(analysis, groups, table, 200.0, steps_from_table=False).keep_counts is None
    plan = budget_plan(analysis, {g.id: np.arange(g.size, dtype=float) for g in groups}, 0.6, round_to=8,
                       floors=Floors(protect=False), size_model=lambda a, gs: LatencyModel(a, gs, table, 200.0))
    assert set(_kept(plan, analysis).values()) <= {16, 32}


def test_the_rest_of_the_model_shrinks_by_its_fitted_share():
    model = chain_model()
    analysis = prunec.analyze(model)
    table = fake_table(analysis, lambda n, c: float(c), lambda n, c: float(c))
    groups = list(analysis.prunable_groups)
    fixed = LatencyModel(analysis, groups, table, original_us=200.0, fixed=1.0)
    scaled = LatencyModel(analysis, groups, table, original_us=200.0, fixed=0.0)
    cut = np.array([16.0] * len(groups))
    w = fixed.weighted(cut)
    assert fixed.macs(cut) == pytest.approx(fixed.rest_us + w)
    assert scaled.macs(cut) == pytest.approx(scaled.rest_us * w / scaled.weighted_us + w)


@pytest.mark.parametrize("args, says", [
    (["--target-latency", "0"], "outside (0, 1]"),
    (["--target-latency", "1.5"], "outside (0, 1]"),
    (["--target-latency", "0.5", "--target", "arm"], "does not run on this machine"),
    (["--target-latency", "0.5", "--target-macs", "0.5"], "give one of them"),
])
def test_bad_latency_budgets_are_one_line_exit_2(tmp_path, args, says):
    path = tmp_path / "chain.onnx"
    prunec.save(chain_model(), path)
    res = run_prunec(path, *args, "-o", tmp_path / "out")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunec: error:") and says in lines[0], res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_target_latency_end_to_end_on_x86(tmp_path):
    """Timed on this host: the table is built once (the second run times nothing), the report has the
    original, the predicted and the measured latency."""
    path = tmp_path / "chain.onnx"
    prunec.save(chain_model(), path)
    db = tmp_path / "db"
    res = run_prunec(path, "--target-latency", "0.6", "--no-protect", "--tuning-db", db, "-o", tmp_path / "o1", "-q",
                     timeout=900)
    assert res.returncode == 0, res.stderr
    first = json.loads((tmp_path / "o1" / "report.json").read_text())["latency_budget"]
    assert first["table"]["probes_timed_now"] > 0 and (db / "latency_table.json").is_file()
    assert first["original_ms"] > 0 and first["measured_ms"] > 0 and first["predicted_ms"] > 0
    res = run_prunec(path, "--target-latency", "0.6", "--no-protect", "--tuning-db", db, "-o", tmp_path / "o2", "-q",
                     timeout=900)
    assert res.returncode == 0, res.stderr
    second = json.loads((tmp_path / "o2" / "report.json").read_text())["latency_budget"]
    assert second["table"]["probes_timed_now"] == 0 and second["table"]["cached_before"] == second["table"]["workloads"]


def test_a_model_tvm_cannot_compile_is_one_line_exit_2(tmp_path):
    """An op TVM's ONNX importer lacks (Celu; LSTM was one until prunec lowered recurrent ops
    itself): refused before any table work."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Celu", ["h"], ["y"], name="celu")]
    graph = helper.make_graph(nodes, "celu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "celu.onnx"
    prunec.save(prunec.from_proto(model), path)
    res = run_prunec(path, "--target-latency", "0.5", "--tuning-db", tmp_path / "db", "-o", tmp_path / "out")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert lines[-1].startswith("prunec: error:") and "Celu" in lines[-1] and "--target-macs" in lines[-1], res.stderr
    assert not (tmp_path / "out").exists()


def test_table_keys_name_the_timing_method(monkeypatch):
    """Entries timed another way (2-thread wall time before) are never read as this clock's."""
    import prunec.backend.latency_table as lt

    wl = lt.Workload("MatMul", (4, 8), (8, 16), (), False, 1, 0)
    key = wl.key("t")
    monkeypatch.setattr(lt, "METHOD", "wall-2t")
    assert wl.key("t") != key


def _recurrent_table(analysis, step_us):
    """A fake table with every workload of the graph: weighted layers flat at 10 µs, recurrent
    projections at 1 µs per kept output, steps at step_us(hidden)."""
    from prunec.backend.latency_table import recurrent_of

    table = fake_table(analysis, lambda n, c: 10.0, lambda n, c: 10.0)
    for n in analysis.graph.nodes:
        rec = recurrent_of(n, analysis.model.shapes)
        if rec is None:
            continue
        for c in counts(rec.projection.out_full):
            table.record(rec.projection, c, rec.projection.in_full, float(c))
        for c in counts(rec.projection.in_full):
            if c != rec.projection.in_full:
                table.record(rec.projection, rec.projection.out_full, c, float(rec.projection.out_full))
        for c in counts(rec.step.out_full):
            table.record(rec.step, c, None, step_us(c))
    return table


def test_a_recurrent_node_is_its_projection_plus_steps_times_one_step():
    """The lowered LSTM/GRU/RNN's time: the input projection once, one time step at the kept
    hidden count per step and direction (ddddocr's LSTM was MAC-scaled before and predicted at
    8.8 ms where it measured 13.6)."""
    from models.zoo import build
    from prunec.backend.latency_table import recurrent_of, workloads_of

    model = prunec.from_proto(build("rnn_audio"))
    analysis = prunec.analyze(model)
    lstm = next(n for n in analysis.graph.nodes if n.op == "LSTM")
    rec = recurrent_of(lstm, model.shapes)
    assert (rec.steps, rec.directions) == (50, 2)
    assert rec.projection.x_shape == (50, 1, 64) and rec.projection.w_shape == (64, 2 * 4 * 48)
    assert rec.step.op == "LSTM" and rec.step.out_full == 48 and rec.step.in_axis is None
    ops = [w.op for w in workloads_of(analysis.graph, model.shapes)]
    assert ops.count("LSTM") == ops.count("GRU") == ops.count("RNN") == 1
    table = _recurrent_table(analysis, lambda c: 2.0 * c)
    groups = list(analysis.prunable_groups)
    m = LatencyModel(analysis, groups, table, original_us=1e5)
    assert all(p.wl is not None for p in m.nodes)  # nothing MAC-scaled
    steps = {p.wl.op: p for p in m.nodes if p.wl.op in ("LSTM", "GRU", "RNN")}
    assert steps["LSTM"].mult == 100 and steps["GRU"].mult == 50 and steps["RNN"].mult == 50
    # LSTM: projection 384 + 100 steps x 96; GRU: 96 + 50 x 64; RNN: 24 + 50 x 48; conv, matmul 10
    assert m.weighted_us == pytest.approx(384 + 9600 + 96 + 3200 + 24 + 2400 + 10 + 10)
    i = [g.id for g in groups].index("lstm.R_0[1].1")
    cut = np.zeros(len(groups))
    cut[i] = 24  # half the LSTM's hidden units: its projection and steps halve, the GRU's projection inputs too
    lstm_step = next(k for k, p in enumerate(m.nodes) if p.wl.op == "LSTM")
    assert m.node_us(lstm_step, cut) == pytest.approx(100 * 48.0)
    gru_proj = next(k for k, p in enumerate(m.nodes) if p.wl.op == "MatMul" and p.wl.w_shape == (96, 96))
    assert m.node_us(gru_proj, cut) == pytest.approx(96.0)  # the fake table's inputs are flat
    assert m.weighted(cut) == pytest.approx(m.weighted_us - 192 - 4800)


@pytest.mark.slow
def test_recurrent_steps_and_whole_models_are_timed_on_the_calling_thread(tmp_path):
    """Each recurrent step probe compiles, runs and takes time that grows with the hidden count;
    whole models run in the calling thread (its CPU time is the clock)."""
    from models.zoo import build
    from prunec.backend.latency_table import ModelTimer, probe_model, recurrent_of, time_probes
    from prunec.backend.options import BackendOptions

    model = prunec.from_proto(build("rnn_audio"))
    options = BackendOptions(target="x86", tuning_db=str(tmp_path / "db")).check()
    steps = [recurrent_of(n, model.shapes).step for n in model.graph.nodes if n.op in ("LSTM", "GRU", "RNN")]
    probes = [(wl, c, None) for wl in steps for c in (8, 256)]
    us = time_probes(probe_model(probes), options, len(probes))
    for k in range(0, len(us), 2):
        assert 0 < us[k] < us[k + 1], (probes[k][0].op, us[k], us[k + 1])
    timer = ModelTimer(options)
    timer.add("m", chain_model().to_proto())
    ms = timer.time(rounds=2)["m"]
    assert ms > 0 and len(timer.rounds["m"]) == 2 and timer.calling_thread_share > 0.8

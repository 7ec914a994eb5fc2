"""prunec sweep: output error, MACs and latency over several MACs budgets."""
import json

import numpy as np
import onnx
import pytest

import prunec
from prunec.pipeline import PruneOptions
from prunec.sweep import sweep
from tests.calib_helpers import calib_arrays, small_cnn
from tests.cli_helpers import run_prunec


@pytest.fixture(scope="module")
def small():
    return prunec.from_proto(small_cnn()), calib_arrays(48)


def test_sweep_points_shrink_and_report_error_and_metric(small):
    model, calib = small
    calls = []

    def metric(m):
        calls.append(m)
        return float(len(calls))

    opts = PruneOptions(calib=calib, round_to=1, protect=False, allocation="probe")
    points = sweep(model, opts, [0.5, 0.8], metric=metric, latency=False)
    assert [p.target_macs for p in points] == [1.0, 0.8, 0.5]
    assert points[0].output_error == 0.0 and points[0].macs_reduction == 1.0
    for p in points[1:]:
        assert p.macs <= p.target_macs * points[0].macs + 1
        assert p.output_error > 0
    assert points[2].macs < points[1].macs and points[2].params < points[0].params
    assert [p.metric for p in points] == [1.0, 2.0, 3.0] and calls[0] is model


def test_sweep_matches_a_single_prune_at_the_same_budget(small):
    """The points reuse scores and probes across budgets: the same numbers as separate runs."""
    model, calib = small
    opts = PruneOptions(calib=calib, round_to=1, protect=False, allocation="probe")
    both = sweep(model, opts, [0.8, 0.5], latency=False)
    alone = sweep(model, opts, [0.5], latency=False)
    assert both[-1].macs == alone[-1].macs
    assert both[-1].output_error == pytest.approx(alone[-1].output_error, rel=1e-6)


def test_sweep_command_prints_table_and_writes_plot_and_json(tmp_path, small):
    pytest.importorskip("matplotlib")
    model, calib = small
    path = tmp_path / "m.onnx"
    onnx.save(small_cnn(), path)
    np.savez(tmp_path / "calib.npz", **calib)
    res = run_prunec("sweep", path, "--calib", tmp_path / "calib.npz", "--targets", "0.7", "--no-latency", "--allocation", "probe",
                     "--plot", tmp_path / "s.png", "--json", tmp_path / "s.json", "-q")
    assert res.returncode == 0, res.stderr
    assert "held-out output error" in res.stdout and "original" in res.stdout
    points = json.loads((tmp_path / "s.json").read_text())
    assert [p["target_macs"] for p in points] == [1.0, 0.7]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, words", [
    ([], "--calib"),
    (["--calib", "CALIB", "--targets", "1.5"], "must be in (0, 1)"),
    (["--calib", "CALIB", "--targets", "x"], "--targets"),
])
def test_sweep_bad_input_is_one_line(tmp_path, args, words):
    path = tmp_path / "m.onnx"
    onnx.save(small_cnn(), path)
    np.savez(tmp_path / "calib.npz", **calib_arrays(8))
    args = [str(tmp_path / "calib.npz") if a == "CALIB" else a for a in args]
    res = run_prunec("sweep", path, *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunec: error:") and words in lines[0], res.stderr

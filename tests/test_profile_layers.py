"""benchmarks/profile_layers.py: one row per kernel call of an inference, in call order."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

from test_backend_nets import tiny_convnet

tvm = pytest.importorskip("tvm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import profile_layers  # noqa: E402


def test_every_kernel_call_is_timed_in_the_model_and_alone(tmp_path, capsys):
    path = tmp_path / "net.onnx"
    onnx.save(tiny_convnet(seed=0), path)
    shapes = profile_layers._shapes(path, {"input": [1, 3, 32, 32]})  # its dims are symbolic
    rows, model_ms = profile_layers.tvm_profile(path, shapes, 1, True, 3)
    names = [r[0] for r in rows]
    assert any("conv2d" in n for n in names), names
    assert all(r[2] > 0 and r[3] > 0 for r in rows)
    assert model_ms > 0
    # the argument shapes end with the call's output: the first call reads the model input
    assert list(rows[0][1][0]) == [1, 3, 32, 32]
    assert profile_layers.main([str(path), "--shape", "input=1,3,32,32", "--threads", "1",
                                "--number", "3"]) == 0
    out = capsys.readouterr().out
    assert f"TVM: {len(rows)} kernel calls" in out


def test_missing_model_and_dynamic_dims_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        profile_layers.main([str(tmp_path / "none.onnx")])
    onnx.save(tiny_convnet(seed=0), tmp_path / "net.onnx")
    with pytest.raises(SystemExit, match="dynamic dims"):
        profile_layers.main([str(tmp_path / "net.onnx")])


def test_onnxruntime_profile_gives_each_nodes_fastest_run_beside_its_mean(tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(tiny_convnet(seed=0), path)
    rows = profile_layers.ort_profile(path, {"input": [1, 3, 32, 32]}, 1, runs=5)
    assert any(op == "Conv" for _, op, _, _ in rows), rows
    for _, _, mean, fastest in rows:
        assert 0 < fastest <= mean + 1e-9


def test_one_thread_is_timed_by_thread_cpu_time():
    import time

    assert profile_layers._clock(1) is time.thread_time
    assert profile_layers._clock(2) is time.perf_counter
    calls = []
    ticks = iter(range(0, 100, 10))  # a fake clock: 10 s per reading
    assert profile_layers._timed(lambda: calls.append(1), lambda: next(ticks), 5) == 2.0
    assert len(calls) == 5


def test_beside_pairs_a_model_with_itself(tmp_path, capsys):
    path = tmp_path / "net.onnx"
    onnx.save(tiny_convnet(seed=0), path)
    assert profile_layers.main([str(path), "--beside", str(path), "--shape", "input=1,3,32,32",
                                "--threads", "1", "--number", "2"]) == 0
    out = capsys.readouterr().out
    assert "beside the original: MACs 1.00x fewer" in out
    with pytest.raises(SystemExit, match="no such file"):
        profile_layers.main([str(path), "--beside", str(tmp_path / "none.onnx")])

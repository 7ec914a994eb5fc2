"""benchmarks/alternate.py: libraries timed in alternation (bench_speedup --compare-libs). The
mechanics on a fake clock (nothing timed), and kept libraries compared for real (slow)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from alternate import alternate, clock_for, paired_ratio, summarize  # noqa: E402


def test_rounds_interleave_and_report_fastest_and_median():
    """Run a costs 2 ms, b 1 ms, times the host's slow factor of the round (3x in round 1, 2x
    in round 3): every round holds a's calls then b's, each round's figure is its mean per
    call, the fastest round the quiet one."""
    now = [0.0]
    order: list[str] = []
    slow = [1.0, 3.0, 1.0, 2.0, 1.0]

    def run(name, ms):
        def call():
            if name == "a" and order and order[-1] == "b":
                slow.pop(0)  # a new round begins
            order.append(name)
            now[0] += ms / 1e3 * slow[0]
        return call

    factors = list(slow)
    res = alternate({"a": run("a", 2.0), "b": run("b", 1.0)}, rounds=5, round_s=0.01,
                    clock=lambda: now[0])
    assert list(res) == ["a", "b"]
    assert sum(1 for x, y in zip(order, order[1:]) if x != y) == 9  # a b a b ... in 5 rounds
    assert res["a"] == pytest.approx([2.0 * f for f in factors])
    assert res["b"] == pytest.approx([1.0 * f for f in factors])
    st = summarize(res)
    assert (st["a"]["fastest"], st["a"]["median"]) == pytest.approx((2.0, 2.0))
    assert (st["b"]["fastest"], st["b"]["rounds"]) == (pytest.approx(1.0), 5)


def test_clock_per_thread_count():
    import time

    assert clock_for(1) is time.thread_time and clock_for(2) is time.perf_counter


@pytest.mark.slow
def test_compare_libs_times_kept_libraries(tmp_path, capsys):
    """--keep-libs then --compare-libs on a small pair: both directories listed, outputs match."""
    pytest.importorskip("tvm")
    import bench_speedup
    from models.resnet import resnet_basic
    import onnx

    import prunec
    from prunec.pipeline import PruneOptions, prune_model

    proto = resnet_basic((1, 1), (16, 32), image=32, num_classes=10)
    orig = tmp_path / "r.onnx"
    onnx.save(proto, str(orig))
    shapes = {"input": [1, 3, 32, 32]}
    pm, _, _ = prune_model(prunec.from_proto(proto, input_shapes=shapes),
                           PruneOptions(ratio=0.5, input_shapes=shapes))
    pruned = tmp_path / "r.pruned.onnx"
    prunec.save(pm, str(pruned))
    for d in ("a", "b"):
        assert bench_speedup.main(["--pair", str(orig), str(pruned), "--threads", "1",
                                   "--rounds", "1", "--repeat", "1",
                                   "--keep-libs", str(tmp_path / d)]) == 0
    capsys.readouterr()
    assert bench_speedup.main(["--compare-libs", str(tmp_path / "a"), str(tmp_path / "b"),
                               "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(" match") == 2 and "DIFFER" not in out
    assert out.count("speedup") == 2
    # the runtimes on the same ONNX files, in the same rounds, checked against the first dir
    runtimes = ["onnxruntime"]
    try:
        import openvino  # noqa: F401 - a bench extra
        runtimes.append("openvino")
    except ImportError:
        pass
    assert bench_speedup.main(["--compare-libs", str(tmp_path / "a"), "--rounds", "2",
                               "--runtimes", ",".join(runtimes)]) == 0
    out = capsys.readouterr().out
    assert out.count(" match") == 2 * len(runtimes) and "DIFFER" not in out
    assert "outside the calling thread" not in out  # thread CPU time sees all of their work
    for rt in runtimes:
        assert f"{rt:<28} {'r':<14} original" in out and f"{rt:<28} {'r':<14} speedup" in out
    with pytest.raises(SystemExit):
        bench_speedup.main(["--compare-libs", str(tmp_path / "a"), "--runtimes", "tensorrt"])


def test_paired_ratio_survives_a_run_that_missed_every_quiet_phase():
    """Original 10 ms, pruned 5 ms (2x); the host is 1.5x slower in phases. The pruned run
    happens to land in slow phases in every round, the original in two quiet ones: the ratio of
    fastest rounds reads 1.33x, the paired ratio (same round, median) the true 2x."""
    phase_o = [1.0, 1.5, 1.5, 1.0, 1.5]
    phase_p = [1.5, 1.5, 1.5, 1.5, 1.5]
    orig = [10.0 * f for f in phase_o]
    pruned = [5.0 * f for f in phase_p]
    assert min(orig) / min(pruned) == pytest.approx(10 / 7.5)
    assert paired_ratio(orig, pruned) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        paired_ratio(orig, pruned[:3])

"""Parallel loops whose task count leaves a thread idle are cut finer (cpu/schedule/common.py
`uneven`): a banded conv picks a band count the threads share (40 rows on 2 threads: 8 bands of
5, not 5 of 8), and a Winograd input transform over 5 rows of tiles runs per run of tiles. Both
against ONNX Runtime, with the parallel extents read off the scheduled TIR (2 threads)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

from prunec.backend.cpu.schedule.common import parts_to_even, uneven  # noqa: E402
from schedule_helpers import run_against_onnxruntime, schedule_onnx  # noqa: E402


def test_uneven_counts_the_idle_share():
    assert uneven(5, 2) and uneven(9, 2) and uneven(1, 2) and uneven(15, 2)
    assert not uneven(17, 2)              # 9 of 8.5: 6%, less than the finer split costs
    assert not uneven(6, 2) and not uneven(415, 2) and not uneven(9, 1)
    assert uneven(4, 3) and not uneven(6, 3)


def test_parts_to_even_cuts_each_task_the_fewest_times():
    assert parts_to_even(9, 2, 2) == 2      # 18 tasks
    assert parts_to_even(9, 1, 2) == 1      # nothing to cut
    assert parts_to_even(6, 4, 2) == 1      # already even
    assert parts_to_even(9, 3, 2) == 3      # 27 tasks: one thread idle 1/28 of the time
    assert parts_to_even(39, 14, 2) == 1    # 39 tasks: idle 1/40, left alone
    assert parts_to_even(5, 5, 2) == 5      # YOLOv8n's 5 rows of 5 Winograd tiles


def _conv_model(c: int, oc: int, hw: int, stride: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((oc, c, 3, 3)) / (3 * c ** 0.5)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    out = hw // stride
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                          strides=[stride, stride]),
         helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, oc, out, out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _extents(scheduled, part: str) -> list[list[int]]:
    return [[int(e) for e in re.findall(r"T\.parallel\((?:T\.int64\()?(\d+)", f.script())]
            for gv, f in scheduled.functions.items()
            if part in gv.name_hint and isinstance(f, tvm.tirx.PrimFunc)]


def _matches(m, scheduled, sig, tgt):
    (got,), (want,) = run_against_onnxruntime(m, scheduled, sig, tgt)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_banded_conv_takes_a_band_count_the_threads_share(tmp_path):
    # 32 x 80 x 80 input (819 KB: padded band by band), stride 2 -> 40 output rows
    m = _conv_model(32, 48, 80, 2)
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "band.onnx")
    assert _extents(scheduled, "conv2d") == [[8]]
    _matches(m, scheduled, sig, tgt)


@pytest.mark.parametrize("mcpu", [None, "haswell"])
def test_winograd_input_transform_runs_per_run_of_tiles(tmp_path, mcpu):
    # 48 -> 48 at 20x20: F(4), 5 rows of 5 tiles, 3 (6 on AVX2) output channel blocks, so V
    # has a parallel loop of its own
    m = _conv_model(48, 48, 20, 1)
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "wino.onnx", mcpu=mcpu)
    (ext,) = _extents(scheduled, "winograd")
    assert ext[0] == 25, ext      # 5 rows x 5 runs of one tile, not 5 rows
    _matches(m, scheduled, sig, tgt)

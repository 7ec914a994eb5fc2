"""benchmarks/profile_beside.py: a pruned model's kernel calls paired with its original's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import profile_beside  # noqa: E402

# (name, argument shapes ending with the output, us in the model, us alone), as tvm_profile gives
ORIG = [("fused_prunec_conv2d_add_sigmoid_multiply", [(1, 3, 32, 32), (1, 3, 3, 3, 16), (1, 16, 16, 16)], 100.0, 90.0),
        ("fused_prunec_winograd_add", [(1, 16, 16, 16), (36, 1, 16, 32), (1, 32, 16, 16)], 400.0, 380.0),
        ("softmax", [(1, 32, 256), (1, 32, 256)], 20.0, 18.0)]
PRUNED = [("fused_prunec_conv2d_add_sigmoid_multiply", [(1, 3, 32, 32), (1, 3, 3, 3, 16), (1, 16, 16, 16)], 100.0, 90.0),
          ("fused_prunec_conv2d3_add", [(1, 16, 16, 16), (1, 16, 3, 3, 16), (1, 16, 16, 16)], 150.0, 140.0),
          ("softmax", [(1, 16, 256), (1, 16, 256)], 10.0, 9.0)]


def test_calls_pair_up_with_their_work_ratio_and_excess():
    r = profile_beside.beside(ORIG, PRUNED, mac_ratio=2.0)
    by_name = {c[5]: c for c in r["calls"]}
    stem, conv, soft = (by_name[n[0]] for n in PRUNED)
    assert stem[3] == 1.0 and stem[0] == pytest.approx(100.0 - 100.0 / 2)   # did not shrink
    assert conv[3] == 2.0 and conv[0] == pytest.approx(150.0 - 400.0 / 2)    # half the outputs
    assert soft[3] == 2.0 and soft[4] == pytest.approx(2.0)
    assert r["calls"][0] is stem  # slowest excess first
    assert r["excess_us"] == pytest.approx(260.0 - 520.0 / 2)
    # at the original's rate per unit of work: the stem as it is, the conv 400/2, the softmax 20/2
    assert r["at_original_rate_us"] == pytest.approx(100.0 + 150.0 + 10.0)
    lines = profile_beside.report(r, 2.0, (0.6, 0.3), top=2)
    assert "efficiency 1.00" in lines[0] and len(lines) == 3 + 2


def test_a_winograd_call_pairs_with_a_direct_conv_but_other_graphs_are_refused():
    assert profile_beside.op_chain("fused_prunec_winograd3_add4") == \
        profile_beside.op_chain("fused_prunec_conv2d12_add7")
    assert profile_beside.op_chain("fused_prunec_winograd1_prunec_wino_channels_add6") == \
        profile_beside.op_chain("fused_prunec_conv2d12_add7")
    with pytest.raises(SystemExit, match="same kernels"):
        profile_beside.pair_calls(ORIG, PRUNED[:2])
    with pytest.raises(SystemExit, match="same kernels"):
        profile_beside.pair_calls(ORIG, [PRUNED[0], PRUNED[2], PRUNED[1]])

"""Direct convs whose output channels are not whole vectors (pruned 184 on AVX-512) compute
them rounded up with zero weights and crop in the write-back (compute/conv.padded_channels)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from prunec.backend.cpu.compute.conv import padded_channels


def test_padding_adds_at_most_an_eighth():
    assert padded_channels(184, 16) == 192  # 11.5 vectors: 8 more channels
    assert padded_channels(72, 16) == 80
    assert padded_channels(24, 16) == 24  # 32 would be a third more work: 8-channel tiles
    assert padded_channels(192, 16) == 192
    assert padded_channels(100, 8) == 104 and padded_channels(20, 8) == 20


# (name, in channels, out channels, size, kernel, stride): channel-vectorized tiles (10-column
# rows and a stride-2 3x3; a 1x1 over rows of whole vectors takes the row tile, unpadded)
CASES = [("pw", 64, 184, 10, 1, 1), ("s2", 24, 72, 20, 3, 2), ("pw100", 32, 100, 10, 1, 1)]


def _model(seed=0):
    rng = np.random.default_rng(seed)
    nodes, inits, inputs, outputs = [], [], [], []
    for name, cin, cout, size, k, s in CASES:
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT,
                                                    [1, cin, size, size]))
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) / (cin * k * k) ** 0.5
        inits += [numpy_helper.from_array(w, f"{name}_w"),
                  numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}_b")]
        nodes += [helper.make_node("Conv", [f"{name}_x", f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                   kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4),
                  helper.make_node("Sigmoid", [f"{name}_c"], [f"{name}_s"]),
                  helper.make_node("Mul", [f"{name}_c", f"{name}_s"], [f"{name}_y"])]
        osize = (size + 2 * (k // 2) - k) // s + 1
        outputs.append(helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                     [1, cout, osize, osize]))
    g = helper.make_graph(nodes, "padded", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("mcpu", [None, "haswell"])  # this host (AVX-512 here) and AVX2
def test_padded_output_channels_match_onnxruntime(tmp_path, mcpu):
    pytest.importorskip("tvm")
    from schedule_helpers import run_against_onnxruntime, schedule_onnx, scheduled_functions

    from prunec.backend.cpu.facts import vector_lanes

    m = _model()
    scheduled, sig, tgt = schedule_onnx(m, tmp_path, "padded.onnx", mcpu)
    funcs = scheduled_functions(scheduled, "conv2d")
    assert len(funcs) == len(CASES) and all(funcs.values()), funcs
    lanes = vector_lanes(tgt)
    computed = []  # output channels of each conv's packed weight (ocb x ob)
    for gv, f in scheduled.functions.items():
        if "conv2d" in gv.name_hint:
            head = f.script().split("def main(")[1].split("):")[0]
            weight = head.split("T.Buffer((")[2].split("float32")[0]  # (ocb, C, kh, kw, ob)
            dims = [int(d) for d in re.findall(r"T\.int64\((\d+)\)", weight)]
            computed.append(dims[0] * dims[-1])
    assert sorted(computed) == sorted(padded_channels(c[2], lanes) for c in CASES), computed
    outs, ref = run_against_onnxruntime(m, scheduled, sig, tgt)
    for (name, *_), got, want in zip(CASES, outs, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)

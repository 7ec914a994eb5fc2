"""The real ddddocr 1.6.1 recognizer: conv stem, bidirectional LSTM, CTC head, dynamic width."""
import numpy as np
import onnx
import pytest

import prunec
from prunec.runtime import run_model
from tests.cli_helpers import prune_ok


@pytest.fixture(scope="module")
def ocr_path(ddddocr_model):
    return ddddocr_model("common.onnx")


def test_inspect_covers_the_lstm(ocr_path):
    info = prunec.inspect(prunec.load(ocr_path, {"input1": [1, 1, 64, 256]}))
    assert info["coverage"]["macs_share"] >= 0.95
    assert not info["unsupported_ops"]
    skipped = [r for g in info["skipped"] for r in g["reasons"]]
    assert skipped == ["reaches graph output '387'"]  # only the 8210 CTC classes stay


def test_prunes_by_half_and_runs_at_any_width(ocr_path, tmp_path):
    report = prune_ok(ocr_path, "--ratio", "0.5", "--input-shape", "input1=1,1,64,256", out=tmp_path)
    assert report["verify"]["ok"] and report["macs"]["before"] / report["macs"]["after"] >= 2
    pruned = onnx.load(tmp_path / "common.pruned.onnx")
    lstm = next(n for n in pruned.graph.node if n.op_type == "LSTM")
    assert onnx.helper.get_attribute_value(next(a for a in lstm.attribute if a.name == "hidden_size")) == 256
    original = onnx.load(ocr_path)
    for width in (96, 300):  # the Reshape targets are computed from shapes at run time: still right
        x = np.random.default_rng(width).random([1, 1, 64, width], dtype=np.float32)
        a, b = run_model(original, {"input1": x})[0], run_model(pruned, {"input1": x})[0]
        assert a.shape == b.shape and a.shape[1:] == (1, 8210)


def test_dynamically_quantized_recognizer_prunes(ddddocr_model):
    """common_old.onnx: DynamicQuantizeLinear -> ConvInteger, a com.microsoft DynamicQuantizeLSTM
    with per-direction int8 weights, MatMulInteger head."""
    path = ddddocr_model("common_old.onnx")
    model = prunec.load(path, {"input1": [1, 1, 64, 256]})
    info = prunec.inspect(model)
    assert info["coverage"]["macs_share"] >= 0.95
    from prunec.pipeline import PruneOptions, prune_model

    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5))
    assert report["verify"]["ok"] and report["macs"]["before"] / report["macs"]["after"] >= 2
    lstm = next(n for n in pruned.graph.nodes if n.op == "DynamicQuantizeLSTM")
    assert lstm.attrs["hidden_size"] == 256 and lstm.inputs[1].values.dtype == np.int8

"""PaddleOCR's PP-OCRv4 as RapidOCR ships it (Paddle2ONNX exports, opset 12, dynamic batch, height
and width): the SVTR recognizer (LayerNorm spelled out as ReduceMean/Pow/Sqrt), the DB text
detector and the orientation classifier."""
import numpy as np
import onnx

import prunec
from prunec.runtime import run_model
from tests.cli_helpers import prune_ok


def test_the_recognizers_hidden_width_is_prunable(ppocr_model):
    """Every group but the input's and the classes' is prunable: the residual stream the spelled-out
    LayerNorms take their means over is approximate, not blocked."""
    info = prunec.inspect(prunec.load(ppocr_model("rec"), {"x": [1, 3, 48, 320]}))
    assert info["coverage"]["macs_share"] == 1.0 and not info["unsupported_ops"]
    reasons = sorted(r for g in info["skipped"] for r in g["reasons"])
    assert not any("ReduceMean" in r for r in reasons), reasons
    assert len(info["skipped"]) <= 2


def test_recognizer_prunes_and_reads_any_width(ppocr_model, tmp_path):
    path = ppocr_model("rec")
    report = prune_ok(path, "--ratio", "0.3", "--input-shape", "x=1,3,48,320", out=tmp_path)
    assert report["verify"]["ok"] and report["macs"]["before"] / report["macs"]["after"] >= 1.5
    pruned = onnx.load(tmp_path / "ch_PP-OCRv4_rec_infer.pruned.onnx")
    assert {p.key for p in pruned.metadata_props} >= {"character"}  # the character table stays
    original = onnx.load(path)
    for width in (160, 480):
        x = np.random.default_rng(width).standard_normal([1, 3, 48, width]).astype(np.float32)
        a, b = run_model(original, {"x": x})[0], run_model(pruned, {"x": x})[0]
        assert a.shape == b.shape and a.shape[-1] == 6625


def test_detector_and_classifier_prune(ppocr_model, tmp_path):
    for name, shape in (("det", "x=1,3,320,320"), ("cls", "x=1,3,48,192")):
        report = prune_ok(ppocr_model(name), "--ratio", "0.3", "--input-shape", shape,
                          out=tmp_path / name)
        assert report["verify"]["ok"] and report["macs"]["after"] < report["macs"]["before"]

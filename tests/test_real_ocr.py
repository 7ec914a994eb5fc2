"""A real OCR recognizer as it comes: ddddocr 1.6.1's common.onnx (PyPI), input [1, 1, 64, image_width]
with a dynamic width, convolutions then an LSTM. Pruned with no --input-shape, it keeps the dynamic
width and runs at three widths with the original's output shapes."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.cli_helpers import prune_ok


@pytest.fixture(scope="module")
def recognizer(ddddocr_model):
    return ddddocr_model("common.onnx")


@pytest.mark.slow
def test_dynamic_width_ocr_prunes_without_hint_and_runs_at_three_widths(recognizer, tmp_path):
    report = prune_ok(recognizer, "--ratio", "0.3", out=tmp_path, timeout=600)
    assert report["dynamic_dims"] == {"input1": {"3": "image_width"}}
    assert report["groups"]["pruned"] >= 8 and report["macs"]["after"] < 0.8 * report["macs"]["before"]
    pruned = tmp_path / "common.pruned.onnx"
    dims = [d.dim_param or d.dim_value for d in onnx.load(pruned).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 64, "image_width"]
    a = ort.InferenceSession(str(recognizer), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(pruned), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for width in (96, 160, 417):
        x = rng.random((1, 1, 64, width), dtype=np.float32)
        ya, yb = a.run(None, {"input1": x})[0], b.run(None, {"input1": x})[0]
        assert ya.shape == yb.shape and np.isfinite(yb).all()

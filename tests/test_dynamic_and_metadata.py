"""Models as they come: dynamic dims without hints, -1 dim values, metadata kept, provenance added."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.recognizer import text_recognizer
from tests.cli_helpers import run_prunec as run

import prunec
from prunec.provenance import PROVENANCE_KEY

ULTRALYTICS_STYLE = {"author": "Ultralytics", "stride": "32", "task": "detect", "batch": "1",
                     "imgsz": "[32, 64]", "names": "{0: 'a', 1: 'b'}"}


def _dims(vi):
    return [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
            for d in vi.type.tensor_type.shape.dim]


def _run_widths(path, widths):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 1, 32, max(widths))).astype(np.float32)
    return [sess.run(None, {"input": x[..., :w]})[0] for w in widths]


@pytest.mark.parametrize("width", ["width", -1])
def test_dynamic_width_recognizer_prunes_without_hint_and_runs_at_any_width(tmp_path, width):
    src = tmp_path / "rec.onnx"
    onnx.save(text_recognizer(width=width), src)
    res = run(src, "--ratio", "0.5", "-o", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # the figures say which shape they refer to
    assert report["input_shapes"] == {"input": [1, 1, 32, 224]}
    assert report["dynamic_dims"] == {"input": {"3": "width" if width == "width" else "?"}}
    assert report["input_shapes_source"] == {"input": "default 224"}
    assert report["verify"]["other_input_size"]["checked"]
    assert report["macs"]["after"] < report["macs"]["before"] and report["groups"]["pruned"] >= 3
    out = tmp_path / "out" / "rec.pruned.onnx"
    pruned = onnx.load(out)
    # the width stays open in the written model: the name kept, a -1 written as an unnamed dim
    assert _dims(pruned.graph.input[0]) == [1, 1, 32, "width" if width == "width" else None]
    onnx.checker.check_model(pruned, full_check=True)
    widths = (40, 128, 333)
    original, smaller = _run_widths(src, widths), _run_widths(out, widths)
    for w, a, b in zip(widths, original, smaller):
        assert a.shape == b.shape == (1, w // 4, 37)
        assert np.isfinite(b).all()


def test_hint_accepted_for_minus_one_dims(tmp_path):
    src = tmp_path / "rec.onnx"
    m = text_recognizer(width=-1)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    onnx.save(m, src)
    res = run(src, "--ratio", "0.25", "--input-shape", "input=1,1,32,96", "-o", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input_shapes"] == {"input": [1, 1, 32, 96]}
    assert report["input_shapes_source"] == {"input": "--input-shape"}
    assert report["verify"]["other_input_size"]["input_shapes"] == {"input": [2, 1, 32, 128]}


def test_calibration_data_sets_the_analysed_width(tmp_path):
    src = tmp_path / "rec.onnx"
    onnx.save(text_recognizer(), src)
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((24, 1, 32, 80)).astype(np.float32))
    res = run(src, "--ratio", "0.25", "--calib", tmp_path / "calib.npz", "--criterion", "act", "--no-reconstruct",
              "-o", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input_shapes"] == {"input": [1, 1, 32, 80]}
    assert report["input_shapes_source"] == {"input": "calibration data"}


def test_metadata_doc_strings_and_producer_survive(tmp_path):
    src = tmp_path / "rec.onnx"
    m = text_recognizer(metadata=ULTRALYTICS_STYLE)
    m.producer_name, m.producer_version, m.model_version = "pytorch", "2.3.1", 7
    m.graph.doc_string = "graph doc"
    m.graph.input[0].doc_string = "a greyscale text line"
    m.graph.node[0].doc_string = "first conv"
    onnx.save(m, src)
    res = run(src, "--ratio", "0.5", "-o", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    out = onnx.load(tmp_path / "out" / "rec.pruned.onnx")
    props = {p.key: p.value for p in out.metadata_props}
    assert {k: props[k] for k in ULTRALYTICS_STYLE} == ULTRALYTICS_STYLE
    assert [p.key for p in out.metadata_props][:len(ULTRALYTICS_STYLE)] == list(ULTRALYTICS_STYLE)  # order kept
    assert (out.producer_name, out.producer_version, out.model_version) == ("pytorch", "2.3.1", 7)
    assert out.doc_string == m.doc_string and out.graph.doc_string == "graph doc"
    assert out.graph.input[0].doc_string == "a greyscale text line"
    assert {n.name: n.doc_string for n in out.graph.node}[m.graph.node[0].name] == "first conv"
    # imgsz metadata sizes the analysis of the dynamic width
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input_shapes"] == {"input": [1, 1, 32, 64]}
    assert report["input_shapes_source"] == {"input": "imgsz metadata"}

    record = json.loads(props[PROVENANCE_KEY])
    assert record["version"] == prunec.__version__
    assert record["command"].startswith("prunec ") and "--ratio 0.5" in record["command"]
    assert record["groups_pruned"] == report["groups"]["pruned"]
    assert record["channels_removed"] == report["groups"]["channels_removed"] > 0
    assert record["input"] == "rec.onnx"

    # pruning again keeps both records: the new one nests the earlier one
    res = run(tmp_path / "out" / "rec.pruned.onnx", "--ratio", "0.25", "-o", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    again = {p.key: p.value for p in onnx.load(tmp_path / "again" / "rec.pruned.pruned.onnx").metadata_props}
    assert json.loads(again[PROVENANCE_KEY])["previous"] == record
    assert again["names"] == ULTRALYTICS_STYLE["names"]


def test_api_round_trip_keeps_metadata():
    m = text_recognizer(metadata={"k": "v"})
    model = prunec.from_proto(m)
    pruned, _, _ = prunec.prune_model(model, prunec.PruneOptions(ratio=0.5))
    out = pruned.to_proto()
    assert {p.key: p.value for p in out.metadata_props} == {"k": "v"}
    assert model.dynamic_dims == {"input": {3: "width"}}

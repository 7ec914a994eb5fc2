"""Calibration samples of several shapes (a recognizer's line widths): grouped by shape, the analysis
shape taken from the most frequent, every consumer run per group."""
import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import prunec
from models.recognizer import text_recognizer
from prunec.cli import main
from prunec.errors import PrunecError
from prunec.recovery.data import CalibData, fit_and_check, load_calib
from prunec.recovery.statistics import collect_grams, collect_stats
from prunec.recovery.scoring import output_error
from prunec.recovery.stream import Tapper, output_axes
from prunec.runtime import session

CLASSES = 10  # fewer than the time steps at width 48 (12): the class axis must still be the scored one


def lines(n: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 32, width)).astype(np.float32)
    return (x + np.roll(x, 1, axis=3)) / 2  # smoother than white noise


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "rec.onnx"
    onnx.save(text_recognizer(classes=CLASSES), path)
    return path


@pytest.fixture(scope="module")
def mixed():
    return {"input": [lines(12, 32, 0), lines(20, 48, 1), lines(12, 64, 2)]}


def test_groups_by_shape_and_splits_each_shape(recognizer, mixed):
    model = prunec.load(recognizer, {"input": [1, 1, 32, 48]})
    data = load_calib(mixed, model)
    assert data.sizes == [12, 20, 12] and len(data) == 44
    assert [s["input"] for s in data.shapes] == [(1, 32, 32), (1, 32, 48), (1, 32, 64)]
    for batch in data.batches(5):  # never two widths in one batch
        assert batch["input"].shape[0] <= 5
    assert sum(len(b["input"]) for b in data.batches(5)) == 44
    _, fit, check = fit_and_check(data)
    assert check.sizes == [2, 4, 2] and fit.sizes == [10, 16, 10]  # held out in proportion
    np.testing.assert_array_equal(check.groups[1]["input"], mixed["input"][1][-4:])
    assert data.subset(11).sizes == [3, 5, 3]
    with pytest.raises(ValueError, match="3 shapes"):
        data.arrays
    # one list entry per sample (no samples axis) of the same width joins that width's group
    one = load_calib({"input": [mixed["input"][0][0], mixed["input"][1], mixed["input"][0][1]]}, model)
    assert one.sizes == [2, 20]


def test_mixed_widths_prune_refit_verify(recognizer, mixed, tmp_path):
    """Analysed at the most frequent width; refit on every width; the model verifies at all of them."""
    opts = prunec.PruneOptions(calib=mixed, ratio=0.4, recover="refit", round_to=8)
    report = prunec.prune_file(recognizer, tmp_path / "out", opts, log=lambda s: None)
    assert report["input_shapes"]["input"] == [1, 1, 32, 48]
    assert "most frequent of 3" in report["input_shapes_source"]["input"]
    cal = report["calibration"]
    assert [g["samples"] for g in cal["sample_shapes"]] == [12, 20, 12]
    refit = report["steps"][0]["reconstruct"]
    assert refit["layers"] > 0 and refit["kept"]
    assert refit["output_error_after"] < refit["output_error_before"]
    assert report["verify"]["ok"]
    pruned = onnx.load(report["output"])
    assert pruned.graph.input[0].type.tensor_type.shape.dim[3].dim_param == "width"  # stays open
    sess, ref = session(pruned), session(onnx.load(recognizer))
    for x in mixed["input"]:
        got, want = sess.run(None, {"input": x[:1]})[0], ref.run(None, {"input": x[:1]})[0]
        assert got.shape == want.shape == (1, x.shape[3] // 4, CLASSES)


def test_iterable_of_several_widths_sets_the_analysis_shape(recognizer, mixed, tmp_path):
    """A generator of samples is read once; its most frequent width is the analysis shape."""
    samples = ({"input": x[i]} for x in mixed["input"][::-1] for i in range(len(x)))  # 12 @64, 20 @48, 12 @32
    opts = prunec.PruneOptions(calib=samples, ratio=0.3, recover="refit", quantize="int8")  # int8 reads them again
    report = prunec.prune_file(recognizer, tmp_path / "out", opts, log=lambda s: None)
    assert report["input_shapes"]["input"] == [1, 1, 32, 48]
    assert [g["samples"] for g in report["calibration"]["sample_shapes"]] == [12, 20, 12]
    assert report["verify"]["ok"] and report["quantize"]["format"] == "int8"


def test_npz_chunks_from_the_cli(recognizer, mixed, tmp_path, capsys):
    path = tmp_path / "calib.npz"
    a, b, c = mixed["input"]
    # NAME__i: a batch, one sample without its samples axis, another batch of the same width
    np.savez(path, input__0=b, input__1=a[0], input__2=c, input__3=b[:4])
    assert main([str(recognizer), "--calib", str(path), "--ratio", "0.3", "--recover", "refit",
                 "-o", str(tmp_path / "out"), "-q"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input_shapes"]["input"] == [1, 1, 32, 48]  # 24 of the 37 samples
    assert [(g["shape"]["input"][2], g["samples"]) for g in report["calibration"]["sample_shapes"]] == \
        [(48, 24), (32, 1), (64, 12)]
    assert report["calibration"]["samples"] == 37
    # --calib-samples takes the first samples in member order, and the analysis shape from them
    assert main([str(recognizer), "--calib", str(path), "--calib-samples", "21", "--ratio", "0.3",
                 "--recover", "refit", "-o", str(tmp_path / "out2"), "-q"]) == 0
    report = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert report["calibration"]["samples"] == 21 and "sample_shapes" in report["calibration"]


@pytest.mark.parametrize("bad, needle", [
    (np.zeros((32, 48), np.float32), "member 'input__1') has shape [32, 48]"),          # wrong rank
    (np.zeros((2, 1, 16, 48), np.float32), "member 'input__1') has shape [2, 1, 16, 48]"),  # fixed height
])
def test_sample_that_does_not_fit_is_one_line_exit_2(recognizer, tmp_path, capsys, bad, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, input__0=lines(4, 48, 0), input__1=bad)
    out = tmp_path / "out"
    assert main([str(recognizer), "--calib", str(path), "--ratio", "0.3", "-o", str(out)]) == 2
    lines_ = capsys.readouterr().err.strip().splitlines()
    assert len(lines_) == 1 and lines_[0].startswith("prunec: error: calibration data")
    assert "input 'input'" in lines_[0] and needle in lines_[0]
    assert "expected [samples, 1, 32, width]" in lines_[0]
    assert not out.exists()


def test_bad_lists_and_members_are_clear(recognizer, tmp_path):
    model = prunec.load(recognizer, {"input": [1, 1, 32, 48]})
    with pytest.raises(PrunecError, match=r"input 'input' \(list entry 1\) has shape \[1, 1, 8, 48\]; expected"):
        load_calib({"input": [lines(2, 48, 0), np.zeros((1, 1, 8, 48), np.float32)]}, model)
    np.savez(tmp_path / "odd.npz", input__0=lines(2, 48, 0), images__1=lines(2, 48, 0))
    with pytest.raises(PrunecError, match="NAME__0, NAME__1"):
        load_calib(str(tmp_path / "odd.npz"), model)
    # a model whose width is fixed takes one width only
    fixed = prunec.from_proto(text_recognizer(classes=CLASSES, width=48))
    with pytest.raises(PrunecError, match=r"has shape \[3, 1, 32, 64\]; expected \[samples, 1, 32, 48\]"):
        load_calib({"input": [lines(2, 48, 0), lines(3, 64, 0)]}, fixed)


def test_two_groups_equal_statistics_accumulated_by_hand(recognizer, mixed):
    """Channel moments, the Gram matrices of the least-squares refit and the output error over two
    widths are the sums over both widths' samples."""
    model = prunec.load(recognizer, {"input": [1, 1, 32, 48]})
    groups = [mixed["input"][0], mixed["input"][1]]
    data = load_calib({"input": groups}, model)
    assert len(data.groups) == 2
    mm = next(n for n in model.graph.nodes if n.op in ("MatMul", "Gemm"))  # the first per-time-step linear
    x_name, y_name = mm.inputs[0].name, mm.outputs[0].name
    conv = next(n for n in model.graph.nodes if n.op == "Conv").outputs[0].name
    values = [Tapper(model, [conv, x_name, y_name], only_taps=True) for _ in (0,)][0]
    per_sample = [values.run({"input": g[i:i + 1]}) for g in groups for i in range(len(g))]

    stats = collect_stats(model, data, [(conv, 1)])[(conv, 1)]
    flat = np.concatenate([np.moveaxis(v[conv][0], 0, -1).reshape(-1, v[conv].shape[1]) for v in per_sample])
    np.testing.assert_allclose(stats.mean, flat.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.mean_sq, np.square(flat.astype(np.float64)).mean(0), rtol=1e-5)
    assert stats.count == len(flat)

    # every row of every sample (rows > time steps): G = [X 1]^T [X 1], B = [X 1]^T Y over both widths
    (G, B), = collect_grams(model, data, [SimpleNamespace(node=mm, x=x_name, y=y_name)], rows=10**6)
    X = np.concatenate([v[x_name].reshape(-1, v[x_name].shape[-1]) for v in per_sample]).astype(np.float64)
    Y = np.concatenate([v[y_name].reshape(-1, v[y_name].shape[-1]) for v in per_sample]).astype(np.float64)
    X1 = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    np.testing.assert_allclose(G, X1.T @ X1, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(B, X1.T @ Y, rtol=1e-4, atol=1e-3)

    # output error of a perturbed model: per class entry, over the time steps of both widths
    other = prunec.from_proto(text_recognizer(classes=CLASSES, seed=1), {"input": [1, 1, 32, 48]})
    out = model.graph.outputs[0].name
    assert output_axes(model, [out]) == [2]  # classes, not the time steps that change with the width
    ra = [session(model.to_proto()).run(None, {"input": g[i:i + 1]})[0][0] for g in groups for i in range(len(g))]
    rb = [session(other.to_proto()).run(None, {"input": g[i:i + 1]})[0][0] for g in groups for i in range(len(g))]
    ref, diff = np.concatenate(ra).astype(np.float64), np.concatenate(ra).astype(np.float64) - np.concatenate(rb)
    num, den = np.square(diff).sum(0), np.square(ref - ref.mean(0)).sum(0)
    expected = np.mean(num / np.maximum(den, 0.1 * den.max()))
    np.testing.assert_allclose(output_error(model, other, data), expected, rtol=1e-5)


def test_distillation_batches_never_mix_shapes():
    from prunec.passes.distill import _batches

    order = np.random.default_rng(0).permutation(10)
    single = _batches([10], 4, order)
    assert [list(idx) for _, idx in single] == [sorted(order[i:i + 4]) for i in (0, 4, 8)]  # as before groups
    mixed = _batches([6, 4], 3, order)
    assert sorted(i for g, idx in mixed if g == 0 for i in idx) == list(range(6))
    assert sorted(i for g, idx in mixed if g == 1 for i in idx) == list(range(4))
    assert all(len(idx) <= 3 for _, idx in mixed)


def test_distill_on_two_widths(recognizer):
    pytest.importorskip("jax")
    from prunec.passes.distill import distill

    model = prunec.load(recognizer, {"input": [1, 1, 32, 16]})
    data = CalibData(groups=[{"input": lines(10, 16, 0)}, {"input": lines(6, 24, 1)}])
    fit, check = data.split(4)
    student = prunec.from_proto(text_recognizer(classes=CLASSES, seed=1), {"input": [1, 1, 32, 16]})
    out, result = distill(model, student, fit, check, epochs=1, batch=4)
    assert fit.sizes == [7, 5] and result.steps == 4  # 2 + 2 batches of at most 4, one width each
    assert result.check_samples == 4 and np.isfinite(result.held_out_loss_before)


def fixed_height_reader():
    """Dynamic H and W that the model can run at one height only (a Reshape with the height in a
    constant, as Paddle2ONNX exports PP-OCR's recognizer): the default analysis size (224) fails."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([1, 3, 48, -1], np.int64), "rows"),
             numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "c1.w"),
             numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32), "c2.w")]
    nodes = [helper.make_node("Reshape", ["x", "rows"], ["r"]),
             helper.make_node("Conv", ["r", "c1.w"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Conv", ["a", "c2.w"], ["y"])]
    g = helper.make_graph(nodes, "fixed_h", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "w"])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_a_model_that_reads_one_height_loads_at_the_calibration_size(tmp_path, capsys):
    path = tmp_path / "fixed_h.onnx"
    onnx.save(fixed_height_reader(), path)
    # without a size: the error names the default size and how to give another
    assert main([str(path), "--ratio", "0.5", "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "default size 224" in err[0] and "--input-shape x=" in err[0]
    # with calibration data 48 high: analysed at its size, pruned, refitted, verified
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((16, 3, 48, 40)).astype(np.float32))
    assert main([str(path), "--calib", str(calib), "--ratio", "0.5", "--recover", "refit",
                 "-o", str(tmp_path / "b"), "-q"]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["input_shapes"]["x"] == [1, 3, 48, 40] and report["verify"]["ok"]

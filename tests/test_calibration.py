"""Calibration data: sources, validation, streaming statistics, the --calib CLI path."""
import struct
import zlib

import numpy as np
import onnx
import pytest

import prunec
from prunec import criteria
from prunec.recovery.data import Preprocess, decode_png, load_calib, read_image
from prunec.recovery.statistics import ChannelStats, collect_stats
from prunec.recovery.stream import Tapper
from prunec.cli import main
from prunec.errors import PrunecError
from prunec.pipeline import PruneOptions, prune_model
from tests.calib_helpers import calib_arrays, small_cnn


@pytest.fixture(scope="module")
def model():
    return prunec.from_proto(small_cnn())



def test_tapper_with_only_taps_runs_only_what_they_need(model):
    """only_taps: the same values, from a graph cut down to the nodes the taps depend on."""
    from prunec.recovery.stream import keep_only

    data = load_calib(calib_arrays(5), model)
    first_conv = next(n for n in model.graph.nodes if n.op == "Conv").outputs[0].name
    full = Tapper(model, [first_conv]).run(data.arrays)
    only = Tapper(model, [first_conv], only_taps=True)
    assert only.outputs == [first_conv] and only.n_graph_outputs == 0
    np.testing.assert_array_equal(only.run(data.arrays)[first_conv], full[first_conv])
    proto = model.to_proto()
    keep_only(proto, [first_conv])
    assert [n.op_type for n in proto.graph.node] == ["Conv"]
    assert len(proto.graph.initializer) == len(next(n for n in model.graph.nodes if n.op == "Conv").inputs) - 1

def test_streaming_stats_equal_full_batch(model):
    data = load_calib(calib_arrays(37), model)
    analysis = prunec.analyze(model)
    keys = criteria.get("act").stat_keys(analysis, analysis.prunable_groups)
    assert keys
    tapper = Tapper(model, sorted({t for t, _ in keys}))
    assert tapper.batched
    full = tapper.run(data.arrays)  # one run over all 37 samples
    for bs in (1, 5, 37):
        stats = {k: ChannelStats() for k in keys}
        tapper.batch = bs
        tapper.stream(data, lambda v: [s.update(v[t], a) for (t, a), s in stats.items()])
        for (t, axis), s in stats.items():
            x = np.moveaxis(full[t].astype(np.float64), axis, 0).reshape(full[t].shape[axis], -1)
            np.testing.assert_allclose(s.mean, x.mean(1), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(s.mean_sq, (x ** 2).mean(1), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(s.mean_abs, np.abs(x).mean(1), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(s.zero_rate, (x == 0).mean(1))
            assert s.count == x.shape[1]


def test_collect_stats_unbatched_model_runs_sample_by_sample():
    m = prunec.from_proto(small_cnn(batch=1))
    data = load_calib(calib_arrays(6), m)
    stats = collect_stats(m, data, [("r1", 1)])
    assert stats[("r1", 1)].count == 6 * 16 * 16
    assert np.all(stats[("r1", 1)].zero_rate > 0)  # after ReLU


def test_sources_agree(model, tmp_path):
    arrays = calib_arrays(8)
    np.savez(tmp_path / "c.npz", **arrays)
    a = load_calib(str(tmp_path / "c.npz"), model)
    b = load_calib(arrays, model)
    c = load_calib(({"x": arrays["x"][i]} for i in range(8)), model)  # one sample per dict, no batch axis
    d = load_calib(({"x": arrays["x"][i:i + 4]} for i in (0, 4)), model, max_samples=6)
    for other in (b, c):
        np.testing.assert_array_equal(a.arrays["x"], other.arrays["x"])
    assert len(a) == 8 and len(d) == 6


@pytest.mark.parametrize("arrays, needle", [
    ({"images": np.zeros((4, 3, 16, 16), np.float32)}, "the model's inputs are ['x']"),
    ({"x": np.zeros((4, 3, 8, 8), np.float32)}, "expected [samples, 3, 16, 16]"),
    ({"x": np.zeros((3, 16, 16), np.float32)}, "expected [samples, 3, 16, 16]"),
    ({"x": np.zeros((0, 3, 16, 16), np.float32)}, "no samples"),
])
def test_bad_calibration_data_is_one_clear_error(model, tmp_path, arrays, needle, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(PrunecError) as err:
        load_calib(str(path), model)
    assert needle in str(err.value) and "\n" not in str(err.value)
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    assert main([str(tmp_path / "m.onnx"), "--calib", str(path), "-o", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunec: error: calibration data") and needle in lines[0]


def test_not_an_npz(model, tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(PrunecError, match="cannot read it as .npz"):
        load_calib(str(tmp_path / "junk.npz"), model)
    with pytest.raises(PrunecError, match="no such file"):
        load_calib(str(tmp_path / "missing.npz"), model)


def test_cli_calib_end_to_end(tmp_path, capsys):
    import json

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **calib_arrays(40))
    rc = main([str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"), "--ratio", "0.5",
               "--round-to", "1", "-o", str(tmp_path / "out"), "--recover-epochs", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "calibration 40 samples" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["criterion"] == "lsq"  # the default data criterion for a small model
    assert report["calibration"]["samples"] == 40
    step = report["steps"][0]
    assert step["reconstruct"]["layers"] >= 1
    assert step["reconstruct"]["output_error_after"] <= step["reconstruct"]["output_error_before"]
    assert (tmp_path / "out" / "m.pruned.onnx").is_file()
    # the CLI's default recovery: distillation after the refit when jax is installed
    import importlib.util

    recovery = report["recovery"]
    if importlib.util.find_spec("jax") is not None:
        assert recovery["method"] == "distill" and 1 <= recovery["epochs"] <= 2
        assert report["calibration"]["output_error"] <= step["reconstruct"]["output_error_after"] + 1e-12
    else:
        assert recovery["method"] == "refit" and "jax is not installed" in recovery["note"]


def test_without_calibration_the_report_says_data_free(model):
    _, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert report["calibration"]["used"] is False and "data-free" in report["calibration"]["note"]
    assert report["criterion"] == "l2"


def test_data_criterion_without_data_is_an_error(model):
    with pytest.raises(PrunecError, match="needs calibration data"):
        prune_model(model, PruneOptions(ratio=0.5, criterion="act", target_macs=0.6))


# --------------------------------------------------------------------------- images
def _png(img: np.ndarray, filt: int) -> bytes:
    """Minimal PNG encoder for the test (RGB 8-bit, one filter type for all rows)."""
    h, w, _ = img.shape
    raw = img.reshape(h, -1).astype(np.int32)
    rows = []
    for y in range(h):
        prev = raw[y - 1] if y else np.zeros_like(raw[0])
        left = np.concatenate([np.zeros(3, np.int32), raw[y, :-3]])
        upleft = np.concatenate([np.zeros(3, np.int32), prev[:-3]])
        if filt == 0:
            line = raw[y]
        elif filt == 1:
            line = raw[y] - left
        elif filt == 2:
            line = raw[y] - prev
        elif filt == 3:
            line = raw[y] - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            line = raw[y] - pred
        rows.append(bytes([filt]) + (line & 255).astype(np.uint8).tobytes())

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("filt", [0, 1, 2, 3, 4])
def test_builtin_png_decoder(filt):
    img = np.random.default_rng(filt).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(decode_png(_png(img, filt), "t.png"), img)


def test_image_folder_with_preprocess(tmp_path):
    m = prunec.from_proto(small_cnn())
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (20, 24, 3)).astype(np.uint8) for _ in range(3)]
    (tmp_path / "a.png").write_bytes(_png(imgs[0], 4))
    (tmp_path / "b.ppm").write_bytes(b"P6\n24 20\n255\n" + imgs[1].tobytes())
    np.save(tmp_path / "c.npy", imgs[2])
    for i, name in enumerate(["a.png", "b.ppm", "c.npy"]):
        np.testing.assert_array_equal(read_image(tmp_path / name), imgs[i])
    data = load_calib(str(tmp_path), m, preprocess="size=16,mean=0,std=255,layout=NCHW,bgr")
    assert data.arrays["x"].shape == (3, 3, 16, 16)
    assert 0.0 <= data.arrays["x"].min() and data.arrays["x"].max() <= 1.0
    # bgr: the first plane is the blue channel
    rgb = load_calib(str(tmp_path), m, preprocess="std=255")
    np.testing.assert_allclose(data.arrays["x"][:, 0], rgb.arrays["x"][:, 2], atol=1e-6)
    with pytest.raises(PrunecError, match="does not match the model input"):
        load_calib(str(tmp_path), m, preprocess="size=32")


def test_preprocess_parse_errors():
    p = Preprocess.parse("size=320x256,mean=123.7/116.3/103.5,std=58.4/57.1/57.4,layout=NHWC,bgr,letterbox")
    assert p.size == (320, 256) and p.layout == "NHWC" and p.bgr and p.letterbox and len(p.mean) == 3
    for bad in ("size=abc", "colour=red", "std=0"):
        with pytest.raises(PrunecError, match="--preprocess"):
            Preprocess.parse(bad)


def test_calib_mirror_doubles_each_split(model, tmp_path, capsys):
    from prunec.recovery.data import mirrored

    arrays = calib_arrays(40)
    data = load_calib(arrays, model)
    m = mirrored(data, 3)
    assert len(m) == 80
    np.testing.assert_array_equal(m.arrays["x"][40 + 5], arrays["x"][5][:, :, ::-1])
    _, r, _ = prune_model(model, PruneOptions(ratio=0.3, calib=arrays, calib_mirror=3, round_to=1))
    cal = r["calibration"]
    assert cal["samples"] == 80 and cal["fit_samples"] == 64 and cal["check_samples"] == 16  # 32 + 8 images, mirrored
    assert "mirrored" in cal["source"]
    for axis in (0, 4):
        with pytest.raises(PrunecError, match="--calib-mirror"):
            prune_model(model, PruneOptions(ratio=0.3, calib=arrays, calib_mirror=axis, round_to=1))
    with pytest.raises(PrunecError, match="--calib-mirror needs calibration data"):
        prune_model(model, PruneOptions(ratio=0.3, calib_mirror=3, target_macs=0.6))
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    assert main([str(tmp_path / "m.onnx"), "--ratio", "0.3", "--calib-mirror", "0", "-o", str(tmp_path / "o")]) == 2
    assert "--calib-mirror" in capsys.readouterr().err

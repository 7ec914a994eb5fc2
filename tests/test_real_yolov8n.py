"""The real YOLOv8n export shipped by nudenet 3.4.2: C2f Split/Concat blocks and in-graph box decoding."""
import prunec
from tests.cli_helpers import prune_ok


def test_inspect_covers_the_network(yolov8n_path):
    model = prunec.load(yolov8n_path, {"images": [1, 3, 320, 320]})
    info = prunec.inspect(model)
    assert info["coverage"]["macs_share"] >= 0.9
    assert not info["unsupported_ops"]
    reasons = {r for g in info["skipped"] for r in g["reasons"]}
    assert any("graph output" in r for r in reasons)  # the class head
    assert any("Softmax" in r for r in reasons)  # the DFL bins


def test_prunes_to_half_the_macs(yolov8n_path, tmp_path):
    report = prune_ok(yolov8n_path, "--ratio", "0.5", "--input-shape", "images=1,3,320,320", out=tmp_path)
    assert report["macs"]["before"] / report["macs"]["after"] >= 2
    assert report["verify"]["outputs"] == {"output0": [1, 22, 2100]}  # 4 box + 18 classes


def test_pruned_model_keeps_every_metadata_entry(yolov8n_path, tmp_path):
    """Ultralytics loaders read names/stride/imgsz/task from metadata_props: all of them survive,
    and the dynamic batch/height/width stay dynamic (analysed at the model's imgsz, no hint given)."""
    import onnx

    report = prune_ok(yolov8n_path, "--ratio", "0.5", out=tmp_path)
    src, out = onnx.load(yolov8n_path), onnx.load(tmp_path / "320n.pruned.onnx")
    before = [(p.key, p.value) for p in src.metadata_props]
    after = [(p.key, p.value) for p in out.metadata_props]
    assert {"names", "stride", "imgsz", "task"} <= dict(before).keys()
    assert after[:len(before)] == before and after[-1][0] == "prunec.provenance"
    assert (out.producer_name, out.producer_version) == (src.producer_name, src.producer_version)
    dims = [d.dim_param or d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert report["input_shapes"] == {"images": [1, 3, 320, 320]}
    assert report["verify"]["other_input_size"]["checked"]

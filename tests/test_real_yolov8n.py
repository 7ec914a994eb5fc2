"""The real YOLOv8n export shipped by nudenet 3.4.2: C2f Split/Concat blocks and in-graph box decoding."""
import json
import subprocess
import sys

import pytest

from models.fetch_nudenet import nudenet_yolov8n_path

import prunec
from prunec.pipeline import PruneOptions, prune_model


@pytest.fixture(scope="module")
def yolo_path():
    try:
        return nudenet_yolov8n_path()
    except Exception as exc:  # no package index reachable
        pytest.skip(f"nudenet could not be fetched: {exc}")


def test_inspect_covers_the_network(yolo_path):
    model = prunec.load(yolo_path, {"images": [1, 3, 320, 320]})
    info = prunec.inspect(model)
    assert info["coverage"]["macs_share"] >= 0.9
    assert not info["unsupported_ops"]
    reasons = {r for g in info["skipped"] for r in g["reasons"]}
    assert any("graph output" in r for r in reasons)  # the class head
    assert any("Softmax" in r for r in reasons)  # the DFL bins


def test_prunes_to_half_the_macs(yolo_path, tmp_path):
    res = subprocess.run([sys.executable, "-m", "prunec.cli", str(yolo_path), "--ratio", "0.5",
                          "--input-shape", "images=1,3,320,320", "-o", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["macs"]["before"] / report["macs"]["after"] >= 2
    assert report["verify"]["outputs"] == {"output0": [1, 22, 2100]}  # 4 box + 18 classes

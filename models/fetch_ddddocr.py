"""Paths of real OCR models: ``common_det.onnx`` (a YOLOX-style character detector, 416x416),
``common.onnx`` (conv stem + bidirectional LSTM + CTC head, dynamic
width) and ``common_old.onnx`` (the same family dynamically quantized: ConvInteger,
MatMulInteger, DynamicQuantizeLSTM) from the PyPI package ddddocr==1.6.1.

``python -m models.fetch_ddddocr`` prints them. Downloads the wheel (no dependencies) with pip and
extracts the models into models/cache/ddddocr (git-ignored).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "1.6.1"
FILES = ("common.onnx", "common_old.onnx", "common_det.onnx")
_DEFAULT_CACHE = Path(__file__).resolve().parent / "cache" / "ddddocr"


def ddddocr_path(name: str = "common.onnx", cache_dir: str | Path | None = None) -> Path:
    if name not in FILES:
        raise ValueError(f"unknown ddddocr model {name!r}; known: {', '.join(FILES)}")
    target = Path(cache_dir) if cache_dir is not None else _DEFAULT_CACHE
    path = target / name
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
               "-d", tmp, f"ddddocr=={VERSION}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("ddddocr-*.whl"))
        if r.returncode != 0 or not wheels:
            raise RuntimeError(f"could not fetch ddddocr=={VERSION} with {' '.join(cmd)}:\n{r.stderr.strip()}")
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z:
            for f in FILES:
                part = target / f"{f}.part"
                part.write_bytes(z.read(f"ddddocr/{f}"))
                part.replace(target / f)  # atomic: a cut-off download leaves no half file behind
    return path


if __name__ == "__main__":
    for f in FILES:
        print(ddddocr_path(f))

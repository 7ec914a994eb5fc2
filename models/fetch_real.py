"""Real pretrained ONNX exports from PyPI wheels (no dependencies installed, nothing imported).

``ddddocr_path("common.onnx")``: ddddocr 1.6.1's LSTM text recognizer (also ``common_det.onnx``,
a YOLOX-style detector, and ``common_old.onnx``, its dynamically quantized recognizer). The wheel is
pip-installed with --no-deps into models/cache/ddddocr (git-ignored) on first use.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DDDDOCR = "ddddocr==1.6.1"
_CACHE = Path(__file__).resolve().parent / "cache"


def _wheel_file(spec: str, package: str, filename: str, cache_dir: Path | None = None) -> Path:
    target = Path(cache_dir) if cache_dir is not None else _CACHE / package
    path = target / package / filename
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
               "--target", str(target), spec]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not path.is_file():
            raise RuntimeError(f"could not fetch {spec} with {' '.join(cmd)}:\n{r.stderr.strip()}")
    return path


def ddddocr_path(filename: str = "common.onnx", cache_dir: str | Path | None = None) -> Path:
    return _wheel_file(DDDDOCR, "ddddocr", filename, cache_dir)


if __name__ == "__main__":
    for name in ("common.onnx", "common_det.onnx", "common_old.onnx"):
        print(ddddocr_path(name))

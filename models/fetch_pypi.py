"""A model file shipped inside a PyPI package, fetched with pip (no dependencies) into models/cache/.

    from models.fetch_pypi import pypi_file
    path = pypi_file("ddddocr", "1.6.1", "ddddocr/common.onnx")   # a dynamic-width OCR recognizer

The package is installed with `pip install --no-deps --target models/cache/<package>`, so nothing
of it is imported or run; only the file is read.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "cache"


def pypi_file(package: str, version: str, relpath: str, cache_dir: str | Path | None = None) -> Path:
    target = Path(cache_dir) if cache_dir is not None else CACHE / f"{package}-{version}"
    path = target / relpath
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
               "--target", str(target), f"{package}=={version}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not path.is_file():
            raise RuntimeError(f"could not fetch {relpath} from {package}=={version} with {' '.join(cmd)}:\n"
                               f"{r.stderr.strip()}")
    return path


if __name__ == "__main__":
    print(pypi_file(*sys.argv[1:4]))

"""Path of a real exported YOLOv8n: ``320n.onnx`` from the PyPI package nudenet==3.4.2.

``python -m models.fetch_nudenet`` prints it. Uses an installed ``nudenet`` if importable,
else pip-installs the wheel (no dependencies) into models/cache/nudenet (git-ignored).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

VERSION = "3.4.2"
FILENAME = "320n.onnx"
_DEFAULT_CACHE = Path(__file__).resolve().parent / "cache" / "nudenet"


def nudenet_yolov8n_path(cache_dir: str | Path | None = None) -> Path:
    # find_spec, not import: nudenet's __init__ imports cv2/onnxruntime, which we don't need.
    spec = importlib.util.find_spec("nudenet")
    if cache_dir is None and spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / FILENAME
            if p.is_file():
                return p
    target = Path(cache_dir) if cache_dir is not None else _DEFAULT_CACHE
    path = target / "nudenet" / FILENAME
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
               "--target", str(target), f"nudenet=={VERSION}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not path.is_file():
            raise RuntimeError(f"could not fetch nudenet=={VERSION} with {' '.join(cmd)}:\n{r.stderr.strip()}")
    return path


if __name__ == "__main__":
    print(nudenet_yolov8n_path())

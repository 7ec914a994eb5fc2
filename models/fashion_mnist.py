"""Fashion-MNIST data (Debian's `dataset-fashion-mnist` package) and the committed small CNN.

    apt-get install dataset-fashion-mnist      # files land in /usr/share/datasets/fashion-mnist

`load_split("test")` -> (images float32 [N,1,28,28] in [0,1], labels int64 [N]).
`MODEL_PATH` is the CNN trained by models/train_fashion_mnist.py (committed, so nothing needs torch).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DATA_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
MODEL_PATH = Path(__file__).resolve().parent / "fashion_mnist_cnn.onnx"
INPUT_NAME = "input"

_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def available() -> bool:
    return all((DATA_DIR / f).is_file() for pair in _FILES.values() for f in pair)


def _idx(path: Path) -> np.ndarray:
    # IDX format: magic (2 zero bytes, dtype 0x08 = uint8, ndim), then ndim big-endian int32 dims
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data, ">i4", count=ndim, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    if not available():
        raise FileNotFoundError(f"Fashion-MNIST not found in {DATA_DIR}: apt-get install dataset-fashion-mnist "
                                "(or set FASHION_MNIST_DIR)")
    img_file, lbl_file = _FILES[split]
    images = _idx(DATA_DIR / img_file).astype(np.float32)[:, None] / 255.0
    labels = _idx(DATA_DIR / lbl_file).astype(np.int64)
    return images, labels

"""benchmarks/bench_cuda_tiles.py: GEMM workloads of a model under several CUDA tiles, built
without a GPU (timed on one)."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tvm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_cuda_tiles as T  # noqa: E402

FMNIST = Path(__file__).resolve().parents[1] / "models" / "fashion_mnist_cnn.onnx"


def test_every_matmul_workload_is_built_under_every_tile(tmp_path, monkeypatch):
    from prunec.backend import cuda_kernels as K

    monkeypatch.setattr(K, "nvcc_path", lambda: None)  # the fatbin step is test_backend's
    assert T.main(["build", "--out", str(tmp_path), f"{FMNIST}:input=1,1,28,28"]) == 0
    meta = json.loads((tmp_path / "tiles.json").read_text())
    works = {m["func"]: m["dims"] for m in meta.values()}
    # the first conv: 28x28 pixels, 16 output channels, 1 input channel x 3x3; the second
    # 16 input channels x 3x3 -> 32
    assert [1, 784, 16, 9] in works.values() and [1, 784, 32, 144] in works.values()
    for func in works:
        tiles = sorted(m["tile"] for m in meta.values() if m["func"] == func)
        assert tiles == sorted(T.TILES)
    assert (tmp_path / "tiles.so").stat().st_size > 0

"""The README's compile-API example runs as written, on a bundled model."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest

pytest.importorskip("tvm")

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("### Compiling from Python", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_compile_example_runs(tmp_path, monkeypatch, capsys):
    from models.zoo import build

    onnx.save(build("resnet18"), tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_example(), "README.md", "exec"), scope)  # noqa: S102 - our own README
    compiled, timing, vm = scope["compiled"], scope["timing"], scope["vm"]
    assert (tmp_path / "out" / "model.so").is_file() and (tmp_path / "out" / "model.json").is_file()
    assert timing["measured"] and timing["output_check"]["ok"], timing
    assert timing["latency_ms"]["median"] > 0
    assert set(compiled.stats["rules"].values()) >= {"winograd", "conv2d", "generic"}
    assert compiled.stats["unscheduled"] == []
    # optimize() gave the same kernels as prunec.compile: the same rules, outputs to rounding
    import numpy as np
    import tvm

    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    from tvm import relax

    ref = relax.VirtualMachine(compiled.executable, tvm.cpu())["main"](tvm.runtime.tensor(x))
    got = vm["main"](tvm.runtime.tensor(x))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    assert "prunec_winograd" in scope["mod"].script()

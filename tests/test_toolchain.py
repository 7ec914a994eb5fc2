"""--target arm after a plain pip install: Zig from PyPI links aarch64 libraries; a missing linker
is refused before any pruning, with the command that installs one."""
import json
import os
import time

import onnx
import pytest

from models.recognizer import text_recognizer
from prunec.backend import toolchain
from tests.cli_helpers import run_prunec


def run(*args, env=None):
    return run_prunec(*args, timeout=900, env=env)


def test_missing_linker_fails_before_pruning_with_install_command(tmp_path):
    onnx.save(text_recognizer(), tmp_path / "rec.onnx")
    env = dict(os.environ, PRUNEC_NO_ZIG="1", PATH=str(tmp_path / "nothing-here"))
    t0 = time.perf_counter()
    res = run(tmp_path / "rec.onnx", "--target", "arm", "-o", tmp_path / "out", env=env)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        "prunec: error: --target arm needs a linker for aarch64-linux-gnu and none was found; install one: "
        "pip install 'prunec[arm]' (Zig from PyPI, no root needed), or apt-get install g++-aarch64-linux-gnu")
    assert not (tmp_path / "out").exists()  # nothing pruned, nothing written
    assert time.perf_counter() - t0 < 60


def test_zig_is_preferred_and_system_compiler_is_the_fallback(monkeypatch, tmp_path):
    if toolchain.zig_path() is not None:
        assert toolchain.arm_linker()[1:] == ["cc", "-target", "aarch64-linux-gnu"]
    fake = tmp_path / "aarch64-linux-gnu-g++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PRUNEC_NO_ZIG", "1")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert toolchain.arm_linker() == [str(fake)]
    toolchain.check("arm")
    toolchain.check("x86")


@pytest.mark.slow
def test_target_arm_writes_aarch64_libraries_with_zig(tmp_path):
    if toolchain.zig_path() is None:
        pytest.skip("ziglang not installed (pip install 'prunec[arm]')")
    onnx.save(text_recognizer(), tmp_path / "rec.onnx")
    env = dict(os.environ, PATH=str(tmp_path / "no-system-compiler"))  # zig alone, as after pip install
    res = run(tmp_path / "rec.onnx", "--target", "arm", "--ratio", "0.5", "-o", tmp_path / "out", env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    arm = report["targets"]["arm"]
    assert arm["measured"] is False and "no device" in arm["reason"]
    assert "compiled, not measured" in res.stdout
    assert arm["target"]["mtriple"] == "aarch64-linux-gnu"
    for name in ("original", "pruned"):
        head = open(arm["models"][name]["artifact"], "rb").read(20)
        assert head[:4] == b"\x7fELF" and head[4] == 2 and int.from_bytes(head[18:20], "little") == 183  # AArch64

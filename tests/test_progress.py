"""The progress hook: one line per slow phase off a terminal, nothing with --quiet, library output
(written straight to file descriptors 1 and 2, as TVM's C++ logs are) captured in a log file."""
import io
import os
import subprocess
import sys

from prunec import progress


def test_phase_lines_off_a_terminal(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    progress.configure(progress.NORMAL, out)
    try:
        with progress.phase("calibration statistics", total=3, unit="batch") as p:
            for _ in range(3):
                p.update()
        for _ in progress.track([1, 2], "refit"):
            pass
        progress.debug("hidden at normal level")
        lines = out.getvalue().splitlines()
        assert len(lines) == 2
        assert lines[0].startswith("calibration statistics: ") and lines[0].endswith(" s (3 batch)")
        assert lines[1].startswith("refit: ")
        progress.configure(progress.QUIET, out)
        with progress.phase("quiet phase"):
            pass
        progress.info("not shown")
        assert len(out.getvalue().splitlines()) == 2
    finally:
        progress.configure(progress.NORMAL, None)


def test_short_phases_print_nothing():
    out = io.StringIO()
    progress.configure(progress.NORMAL, out)
    try:
        with progress.phase("fast"):
            pass
        assert out.getvalue() == ""
    finally:
        progress.configure(progress.NORMAL, None)


def test_library_logs_go_to_the_file_and_messages_to_the_terminal(tmp_path):
    code = f"""
import os, sys
from prunec import progress
with progress.library_logs_to({str(tmp_path / 'prunec.log')!r}):
    os.write(2, b"[12:00:00] tvm INFO: a task table\\n")
    os.write(1, b"stdout noise\\n")
    print("python warning", file=sys.stderr)
    progress.info("prunec message")
print("result")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "result\n" and res.stderr == "prunec message\n"
    log = (tmp_path / "prunec.log").read_text()
    assert "a task table" in log and "stdout noise" in log and "python warning" in log
    # an empty log is not left behind
    code2 = f"from prunec import progress\nwith progress.library_logs_to({str(tmp_path / 'empty.log')!r}): pass"
    subprocess.run([sys.executable, "-c", code2], check=True, timeout=60)
    assert not os.path.exists(tmp_path / "empty.log")

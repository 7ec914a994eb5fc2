"""CI stops only the processes it started: recorded process groups, never a name match."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "arm_emulator"))

import arm_emu  # noqa: E402

STOP = REPO / "tools" / "arm_emulator" / "stop_recorded.sh"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by us) is not running
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_ci_run_stops_nothing_by_name():
    code = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if re.search(r"\b(pkill|killall)\b", line)]
    assert any("stop_recorded.sh" in line for line in code) and any("PRUNEC_PIDFILE" in line for line in code)


def test_recorded_groups_are_stopped_and_others_spared(tmp_path, monkeypatch):
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("PRUNEC_PIDFILE", str(pidfile))
    ours = arm_emu._Background(["sh", "-c", "sleep 300 & sleep 300; wait"], tmp_path / "ours.log", "ours").start()
    # the same command line, not started through arm_emu: a name match would hit it too
    other = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300; wait"], start_new_session=True)
    root = tmp_path / "root"
    (root / "tmp" / f"prunec-rpc-{ours.proc.pid}").mkdir(parents=True)
    (root / "tmp" / f"prunec-rpc-{other.pid}").mkdir(parents=True)
    try:
        assert pidfile.read_text().split() == [str(ours.proc.pid)]
        time.sleep(0.2)  # let the shells start their sleeps
        subprocess.run([str(STOP), str(pidfile), str(root)], check=True, timeout=60)
        ours.proc.wait(timeout=10)
        group = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == ours.proc.pid]
        assert not [p for p in group if _alive(p)], "a process of the recorded group survived"
        assert other.poll() is None and _alive(other.pid)
        assert not (root / "tmp" / f"prunec-rpc-{ours.proc.pid}").exists()
        assert (root / "tmp" / f"prunec-rpc-{other.pid}").exists()
    finally:
        ours.stop()
        os.killpg(other.pid, 9)
        other.wait()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_stop_without_pidfile_is_a_no_op(tmp_path):
    assert subprocess.run([str(STOP), str(tmp_path / "absent")], timeout=30).returncode == 0

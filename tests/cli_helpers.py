"""The prunec command in a subprocess, as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PRUNEC = [sys.executable, "-m", "prunec"]


def run_prunec(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(PRUNEC + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def prune_ok(*args, out: Path, timeout: float = 300) -> dict:
    """Run `prunec *args -o out`, require success, return report.json."""
    res = run_prunec(*args, "-o", out, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads((Path(out) / "report.json").read_text())

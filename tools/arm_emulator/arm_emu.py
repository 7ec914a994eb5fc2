"""Helpers to compile for aarch64 and run TVM's RPC server in the emulated arm64 root.

Used by tools/arm_emulator/prove_arm.py and tests/test_arm_emulation.py. The root is made
by tools/arm_emulator/setup.sh (default /var/tmp/prunec-arm64-root, or $PRUNEC_ARM_ROOT).
Everything listens on 127.0.0.1 only. Emulated timings are not performance figures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = os.environ.get("PRUNEC_ARM_ROOT", "/var/tmp/prunec-arm64-root")
CROSS_CXX = "aarch64-linux-gnu-g++"
AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
EMULATED_NOTE = "emulated: timings are not performance figures"
# Importing tvm under qemu takes tens of seconds on a busy 2-core machine.
SERVER_START_TIMEOUT_S = float(os.environ.get("PRUNEC_ARM_START_TIMEOUT", "300"))


def unavailable_reason(root: str | os.PathLike[str] = DEFAULT_ROOT) -> str | None:
    """None when the emulated root can run an RPC server here; else why not (one line)."""
    root = Path(root)
    if not sys.platform.startswith("linux"):
        return "arm64 emulation needs Linux (qemu-user + binfmt_misc)"
    if os.geteuid() != 0:
        return "arm64 emulation needs root (chroot into the emulated root)"
    if not (root / ".prunec-arm-ready").exists():
        return f"emulated arm64 root not set up at {root} (run: sudo tools/arm_emulator/setup.sh {root})"
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not handler.exists():
        return "qemu-aarch64 is not registered with binfmt_misc (run tools/arm_emulator/setup.sh)"
    try:
        if not handler.read_text().startswith("enabled"):
            return "the qemu-aarch64 binfmt_misc handler is disabled (update-binfmts --enable qemu-aarch64)"
    except OSError as err:
        return f"cannot read {handler}: {err}"
    if shutil.which(CROSS_CXX) is None:
        return f"{CROSS_CXX} not found (apt-get install g++-aarch64-linux-gnu)"
    return None


def free_port() -> int:
    """A free loopback TCP port that also leaves PORT+1 free (servers search [PORT, PORT+1))."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535:
            return port
    raise RuntimeError("no free port")


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something LISTENs on host:port, read from /proc/net/tcp (no connection made:
    a probing connection would make a tracker-registered server drop its tracker link)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"  # little-endian hex
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[1] == want and fields[3] == "0A":
            return True
    return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (the server forks workers), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def record_group(pgid: int) -> None:
    """Note a process group we started in $PRUNEC_PIDFILE, so that whoever ran us (.ci/run) can
    stop exactly these if we are killed before our own cleanup runs (stop_recorded.sh)."""
    path = os.environ.get("PRUNEC_PIDFILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{pgid}\n")


class _Background:
    """A process in its own process group with its output in a log file; a context manager."""

    def __init__(self, cmd: list[str], log_path: str | os.PathLike[str], name: str):
        self.cmd, self.log_path, self.name = cmd, Path(log_path), name
        self.proc: subprocess.Popen | None = None

    def start(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        record_group(self.proc.pid)
        return self

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _wait(self, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Tracker(_Background):
    """``python -m tvm.exec.rpc_tracker`` on the host, 127.0.0.1:PORT."""

    def __init__(self, port: int, log_path: str | os.PathLike[str], python: str = sys.executable):
        cmd = [python, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
               "--port", str(port), "--port-end", str(port + 1), "--silent"]
        super().__init__(cmd, log_path, f"rpc tracker 127.0.0.1:{port}")
        self.port = port
        self.address = f"127.0.0.1:{port}"

    def start(self, timeout: float = 60):
        super().start()
        self._wait(lambda: port_listening(self.port), timeout)
        return self

    def keys(self) -> list[str]:
        import tvm.rpc

        summary = tvm.rpc.connect_tracker("127.0.0.1", self.port).summary()
        return [str(s.get("key", "")).split(":", 1)[-1] for s in summary.get("server_info", [])]


class EmulatedServer(_Background):
    """TVM's RPC server inside the emulated arm64 root (tools/arm_emulator/start_rpc.sh)."""

    def __init__(self, root: str | os.PathLike[str], port: int, log_path: str | os.PathLike[str],
                 tracker: Tracker | None = None, key: str | None = None):
        cmd = [str(HERE / "start_rpc.sh"), str(root), str(port)]
        if tracker is not None:
            if not key:
                raise ValueError("a tracker needs a key")
            cmd += ["--tracker", tracker.address, "--key", key]
        super().__init__(cmd, log_path, f"emulated arm64 rpc server 127.0.0.1:{port}")
        self.port, self.tracker, self.key = port, tracker, key
        self.address = f"127.0.0.1:{port}"

    def start(self, timeout: float = SERVER_START_TIMEOUT_S):
        super().start()
        if self.tracker is None:
            self._wait(lambda: port_listening(self.port), timeout)
        else:
            self._wait(lambda: self.key in self.tracker.keys(), timeout)
        return self


def compile_onnx(model, shape_dict: dict[str, list[int]], target=None, fast: bool = True):
    """ONNX ModelProto -> TVM Relax executable for ``target`` (default: aarch64 + NEON).

    fast=True compiles through prunec's own pipeline, what `prunec --target arm` ships (its CPU
    schedules, Winograd convs, weights folded in); fast=False through TVM's default one."""
    import tempfile

    import onnx
    import tvm

    from prunec.backend import build, frontend

    target = tvm.target.Target(target or AARCH64_TARGET)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        mod, _ = frontend.import_onnx(path, shape_dict)
    if not fast:
        return tvm.compile(mod, target=target)
    return build.build(mod, target, "arm")


def cross_export(executable, path: str | os.PathLike[str]) -> str:
    """Export a compiled executable as an aarch64 shared library with the cross g++."""
    from tvm.support import cc

    path = os.fspath(path)
    executable.export_library(path, fcompile=cc.cross_compiler(CROSS_CXX))
    return path

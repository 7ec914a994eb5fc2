"""A run's outputs: checked before any work, staged in a hidden folder inside OUTDIR, published
together at the end, removed on any failure (an error, Ctrl-C, SIGTERM).

Why: the input must never be overwritten (`--plan-out model.onnx`, a model named report.json
pruned into its own folder), a failure must not leave a model without its report, and two runs on
one OUTDIR must not leave one's model beside the other's report (publishing holds a lock on OUTDIR).
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import PrunecError

STAGE_PREFIX = ".prunec-run-"
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextmanager
def signals_held():
    """Delay Ctrl-C and SIGTERM while files are moved or removed: a half-done publish or cleanup is
    what they must never leave. A signal that arrives meanwhile is delivered right after.

    Why Python handlers and not only the thread's signal mask: ONNX Runtime, BLAS and TVM keep
    threads of their own, the kernel hands the signal to any of them, and Python then runs its
    handler in the main thread whatever that thread's mask says."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    previous = {s: h for s, h in previous.items() if h is not None}  # None: not set from Python
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    for s in previous:
        signal.signal(s, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        # A signal the kernel handed to another thread that has not run yet is still pending for the
        # process (a loaded host can delay that thread past the block): let it land in `pending`
        # before the handlers change back, or it would arrive after this block with no one waiting.
        deadline = time.monotonic() + 1.0
        while _SIGNALS & signal.sigpending() and time.monotonic() < deadline:
            time.sleep(0.001)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # what no thread took arrives here, still held
        _handle_signals_now()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])  # now, to the handler the run had before


def _handle_signals_now() -> None:
    """Python runs signal handlers at its next check, which a call makes (a no-op here)."""


def _identity(p: Path) -> tuple:
    """What makes two paths the same file: the resolved path, and (dev, inode) when it exists."""
    p = Path(os.path.abspath(p)).resolve()
    try:
        st = p.stat()
        return (p, (st.st_dev, st.st_ino))
    except OSError:
        return (p, None)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


class RunOutputs:
    """The files one run will write. `finals` maps a role (model, report, plan, ...) to its path."""

    def __init__(self, outdir: str | os.PathLike, inputs: dict[str, Path]):
        self.outdir = Path(outdir)
        self.inputs = {k: Path(v) for k, v in inputs.items() if v is not None}
        self.finals: dict[str, Path] = {}
        self.stage: Path | None = None
        self._created: list[Path] = []

    def add(self, role: str, final: str | os.PathLike) -> Path:
        """Declare an output; returns where to write it now (inside the stage folder)."""
        final = Path(final)
        self.finals[role] = final
        if self.stage is None:
            return final
        return self.staged(role)

    def staged(self, role: str) -> Path:
        final = self.finals[role]
        rel = self._relative(final)
        path = self.stage / (rel if rel is not None else Path("_elsewhere") / role / final.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _relative(self, final: Path) -> Path | None:
        try:
            return Path(os.path.abspath(final)).relative_to(os.path.abspath(self.outdir))
        except ValueError:
            return None

    # ------------------------------------------------------------------ checks, before any work
    def check(self) -> None:
        """No output may be an input or another output, be a folder, or sit where it cannot be written."""
        outs = {role: _identity(p) for role, p in self.finals.items()}
        ins = {role: _identity(p) for role, p in self.inputs.items()}
        for role, o in outs.items():
            for what, i in ins.items():
                if _same(o, i):
                    raise PrunecError(f"the {role} output {self.finals[role]} is the {what} input "
                                      f"{self.inputs[what]}: it would be overwritten; choose another "
                                      f"{'-o' if role in ('model', 'report', 'artifacts') else '--plan-out'}")
        roles = list(outs)
        for i, a in enumerate(roles):
            for b in roles[i + 1:]:
                if _same(outs[a], outs[b]):
                    raise PrunecError(f"the {a} and {b} outputs are the same file {self.finals[a]}; "
                                      "give them different paths")
        if self.outdir.exists() and not self.outdir.is_dir():
            raise PrunecError(f"-o {self.outdir}: exists and is not a folder")
        for role, p in self.finals.items():
            if role == "artifacts":  # a folder of compiled libraries: an earlier run's is replaced file by file
                if p.exists() and not p.is_dir():
                    raise PrunecError(f"the {role} folder {p} exists and is a file; remove it or choose another -o")
                continue
            if p.is_dir():
                raise PrunecError(f"the {role} output {p} exists and is a folder; remove it or choose another path")
            parent = p.parent
            if self._relative(p) is None:  # outside OUTDIR (--plan-out): its folder must exist already
                if not parent.is_dir():
                    raise PrunecError(f"the {role} output {p}: folder {parent} does not exist")
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise PrunecError(f"the {role} output {p}: folder {parent} is not writable")

    # ------------------------------------------------------------------ staging
    def open_stage(self) -> Path:
        """Create OUTDIR (remembering which folders were new) and the hidden stage folder in it.
        Signals wait until the stage is recorded, so that discard() knows every folder made."""
        missing = []
        d = Path(os.path.abspath(self.outdir))
        while not d.exists():
            missing.append(d)
            d = d.parent
        if not d.is_dir():
            raise PrunecError(f"-o {self.outdir}: {d} is a file, so the folder cannot be created")
        with signals_held():
            try:
                for m in reversed(missing):
                    m.mkdir()
                    self._created.append(m)
                self.stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=self.outdir))
            except OSError as exc:
                self._remove_created()
                raise PrunecError(f"-o {self.outdir}: cannot write there ({exc.strerror or exc})") from None
        return self.stage

    def publish(self) -> dict[str, Path]:
        """Move every staged file to its final path, under a lock on OUTDIR; then drop the stage."""
        with signals_held(), _locked(self.outdir):
            for role, final in self.finals.items():
                src = self.staged(role)
                if src.is_dir():
                    for f in sorted(x for x in src.rglob("*") if x.is_file()):
                        _move(f, final / f.relative_to(src))
                elif src.exists():
                    _move(src, final)
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None
        return self.finals

    def discard(self) -> None:
        """Remove everything this run wrote, and the folders it created (if still empty)."""
        with signals_held():
            if self.stage is not None:
                shutil.rmtree(self.stage, ignore_errors=True)
                self.stage = None
            self._remove_created()

    def _remove_created(self) -> None:
        for d in reversed(self._created):
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []


@contextmanager
def _locked(folder: Path):
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # another file system (--plan-out elsewhere): copy beside the target, then rename
        tmp = dst.parent / f".{dst.name}.prunec-tmp-{os.getpid()}"
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            if tmp.exists():
                tmp.unlink()


def write_new(path: Path, data: bytes | str) -> None:
    """Write a file atomically with the umask's permissions (mkstemp would make it 0600)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.prunec-tmp-{os.getpid()}"
    mode = "x" + ("b" if isinstance(data, bytes) else "")
    try:
        with open(tmp, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

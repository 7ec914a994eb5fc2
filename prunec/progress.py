"""What a run tells the person watching it: phase progress, messages, and where library logs go.

Code anywhere in prunec reports long work through this module and nothing else:

    from prunec import progress
    with progress.phase("calibration statistics", total=len(batches), unit="batch") as bar:
        for batch in batches:
            ...
            bar.update()
    with progress.phase("TVM compile (pruned)"):      # no total: a timer that ticks while it runs
        build(...)
    progress.info("reconstruct: step 2 not kept")       # a line, unless --quiet
    progress.debug("...")                               # a line with -v only

On a terminal a phase that lasts over DELAY_S seconds shows a tqdm bar (with an ETA when its total
is known); elsewhere (a CI log, a pipe) each phase over DELAY_S ends with one line saying how long
it took. `configure(level)`: 0 quiet (errors only), 1 normal, 2 verbose. `library_logs_to(path)`
sends whatever TVM, ONNX Runtime and other libraries print to stdout/stderr into a file, while
prunec's own messages still reach the terminal.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

DELAY_S = 2.0  # phases shorter than this show nothing

QUIET, NORMAL, VERBOSE = 0, 1, 2
_state = {"level": NORMAL, "stream": None}


def configure(level: int = NORMAL, stream=None) -> None:
    _state["level"] = level
    _state["stream"] = stream


def level() -> int:
    return _state["level"]


def _stream():
    return _state["stream"] or sys.stderr


def _is_tty() -> bool:
    try:
        return _stream().isatty()
    except (AttributeError, ValueError):
        return False


def info(message: str) -> None:
    if _state["level"] >= NORMAL:
        print(message, file=_stream(), flush=True)


def debug(message: str) -> None:
    if _state["level"] >= VERBOSE:
        print(message, file=_stream(), flush=True)


class _Phase:
    """A started phase: update(n) advances it; note(text) sets the text shown after the bar."""

    def __init__(self, name: str, total: int | None, unit: str):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.t0 = time.perf_counter()
        self.bar = None
        self._stop = threading.Event()
        self._ticker = None
        if _state["level"] >= NORMAL and _is_tty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=name, unit=unit, file=_stream(), delay=DELAY_S, leave=True,
                            dynamic_ncols=True, bar_format=None if total else "{desc}: {elapsed}{postfix}")
            if not total:  # a blocking call gives no updates: refresh the timer from a thread
                self._ticker = threading.Thread(target=self._tick, daemon=True)
                self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            if time.perf_counter() - self.t0 >= DELAY_S:
                self.bar.refresh()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self, failed: bool = False) -> float:
        elapsed = time.perf_counter() - self.t0
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.bar is not None:
            self.bar.close()
        elif _state["level"] >= NORMAL and elapsed >= DELAY_S and not failed:
            count = f" ({self.done} {self.unit})" if self.total else ""
            info(f"{self.name}: {elapsed:.1f} s{count}")
        return elapsed


@contextlib.contextmanager
def phase(name: str, total: int | None = None, unit: str = "it"):
    p = _Phase(name, total, unit)
    failed = True
    try:
        yield p
        failed = False
    finally:
        p.close(failed)


def track(iterable, name: str, total: int | None = None, unit: str = "it"):
    """Iterate with a phase bar: `for x in progress.track(items, "refit"): ...`."""
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    with phase(name, total, unit) as p:
        for item in iterable:
            yield item
            p.update()


@contextlib.contextmanager
def library_logs_to(path: Path):
    """Send file descriptors 1 and 2 (C++ logs of TVM and ONNX Runtime, Python warnings, TVM's
    task tables) to `path`; prunec's own messages keep going to the original stderr. On exit the
    descriptors are restored, and an empty log file is removed."""
    path = Path(path)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log = open(path, "ab")
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1)
    previous = _state["stream"]
    _state["stream"] = terminal
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        yield terminal
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _state["stream"] = previous
        terminal.close()
        log.close()
        if path.exists() and path.stat().st_size == 0:
            path.unlink()

"""Command-line pieces every prunec command shares: argument types that check their values, the
parser whose usage errors are one `prunec: error:` line, and the model/verbosity options."""
from __future__ import annotations

import argparse

from .errors import PrunecError


def checked(convert, ok, what: str):
    """An argparse type: convert, then check the value (one message per failure)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if convert is int else 'a number'}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{value} {what}")
        return value
    return parse


ratio = checked(float, lambda v: 0.0 <= v < 1.0, "is outside [0, 1)")
share = checked(float, lambda v: 0.0 < v <= 1.0, "is outside (0, 1]")
positive_int = checked(int, lambda v: v >= 1, "must be at least 1")


def steps(text: str):
    """--steps: a number of rounds, or auto (None: chosen from the budget, passes/prune.py)."""
    return None if text == "auto" else positive_int(text)


class Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr, like every other prunec error."""

    def error(self, message):
        raise PrunecError(message)


def verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="print only the result (no progress, no notes)")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="more detail, and TVM's / ONNX Runtime's own logs on the terminal instead of OUTDIR/prunec.log")


def model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX model to read (never modified)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="the size to analyse and measure an input with dynamic dims at (repeatable; optional: "
                        "dynamic dims are analysed at the calibration data's size, the model's imgsz, or 224, "
                        "and stay dynamic in the output)")


def common(p: argparse.ArgumentParser) -> None:
    model_arguments(p)
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help=(
        "keep channels untouched: a node name (its output channels), an op type (Gemm), or a group id as "
        "`prunec inspect` prints it; * and ? are wildcards (repeatable; a pattern matching nothing is an error)"))

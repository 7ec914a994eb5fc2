"""Calibration on inputs of several shapes: ddddocr's text recognizer (dynamic width) calibrated on
rendered lines of several widths, against calibration on lines of one width.

Each run prunes as `prunec common.onnx --calib C --target-macs F --recover refit` does (through
prunec.prune_file: the analysis shape comes from the calibration data), then scores exact match of
the decoded text with the unpruned model's on other lines of every width.

    python -m benchmarks.bench_calib_shapes --widths 160,192,256 --calib 256 --eval 128 --macs 0.67
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def lines(n: int, seed: int, widths: list[int]) -> list[np.ndarray]:
    """n rendered lines split evenly over the widths: one [k, 1, 64, w] array per width."""
    from benchmarks.real_data import render_text_lines

    counts = [n // len(widths) + (i < n % len(widths)) for i in range(len(widths))]
    return [render_text_lines(k, seed=seed + 1000 * i, width=w)[0] for i, (k, w) in enumerate(zip(counts, widths))]


def decode(path: Path, x: np.ndarray) -> list[tuple[int, ...]]:
    from benchmarks.bench_recovery import _ctc
    from prunec.runtime import session

    import onnx

    sess = session(onnx.load(str(path)))
    return [_ctc(sess.run(None, {"input1": x[i:i + 1]})[0]) for i in range(len(x))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="160,192,256", help="line widths calibrated and scored on")
    p.add_argument("--single-width", type=int, default=192, help="the width of the one-width calibration")
    p.add_argument("--calib", type=int, default=256, help="calibration lines")
    p.add_argument("--eval", type=int, default=128, help="lines scored per width")
    p.add_argument("--macs", type=float, default=0.67, help="--target-macs")
    p.add_argument("--runs", default="single,mixed", help="which calibrations: single, mixed")
    args = p.parse_args(argv)

    import prunec
    from models.fetch_pypi import ddddocr_path

    widths = [int(w) for w in args.widths.split(",")]
    path = ddddocr_path("common.onnx")
    evals = {w: lines(args.eval, 1, [w])[0] for w in widths}
    reference = {w: decode(path, x) for w, x in evals.items()}
    print(f"ddddocr common.onnx, --target-macs {args.macs} --recover refit, {args.calib} calibration lines, "
          f"{args.eval} other lines per width scored (exact match with the unpruned model)")
    print(f"host load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = f"{'calibration':<28} {'analysed at':>12} {'fewer MACs':>10} " + \
        " ".join(f"{'@' + str(w):>6}" for w in widths) + f" {'mean':>6} {'time s':>7} {'load':>5}"
    print(header, flush=True)
    for run in args.runs.split(","):
        if run == "single":
            calib = {"input1": lines(args.calib, 0, [args.single_width])[0]}
            what = f"{args.calib} lines @{args.single_width}"
        else:
            parts = lines(args.calib, 0, widths)
            calib = {"input1": parts}  # a list: one array per width
            what = f"{args.calib} lines @{'/'.join(map(str, widths))}"
        opts = prunec.PruneOptions(calib=calib, target_macs=args.macs, recover="refit", command=f"bench {run}",
                                   input_shapes={"input1": [1, 1, 64, args.single_width]} if run == "single" else {})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            report = prunec.prune_file(path, Path(tmp) / "out", opts, log=lambda s: None)
            seconds = time.perf_counter() - t0
            load = os.getloadavg()[0]
            pruned = Path(report["output"])
            scores = [float(np.mean([a == b for a, b in zip(reference[w], decode(pruned, x))]))
                      for w, x in evals.items()]
        fewer = report["macs"]["before"] / report["macs"]["after"]
        print(f"{what:<28} {report['input_shapes']['input1'][3]:>12} {fewer:>9.2f}x " +
                    " ".join(f"{s:>6.3f}" for s in scores) + f" {np.mean(scores):>6.3f} {seconds:>7.0f} {load:>5.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

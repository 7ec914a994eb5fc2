"""Accuracy recovery on real pretrained models: refit (least squares) vs distillation, at 1.5x and 2x
fewer MACs, with unlabeled inputs made here and no labels.

Models (PyPI wheels, fetched with --no-deps into models/cache by models/fetch_real.py):
- ddddocr 1.6.1 `common.onnx`: conv stem + bidirectional LSTM + CTC text recognizer. Score: exact
  match of the decoded text with the unpruned model's decoding (and with the rendered truth).
- ddddocr 1.6.1 `common_det.onnx`: YOLOX-style detector; nudenet 3.4.2 `320n.onnx`: YOLOv8n. Score:
  F1 of the boxes matched to the unpruned model's (same class, IoU >= 0.5).
- The Fashion-MNIST CNN: test accuracy (labels used only to score).

    python -m benchmarks.bench_recovery --models ocr --macs 0.67,0.5
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import prunec
from passes.distill import distill
from prunec.calib import CalibData
from prunec.calibrated import _split
from prunec.pipeline import PruneOptions, prune_model
from prunec.runtime import session


def _ctc(out: np.ndarray) -> tuple[int, ...]:
    idx = out.reshape(out.shape[0], -1)[:, :].argmax(-1) if out.shape[1] == 1 else out[0].argmax(-1)
    res, prev = [], -1
    for i in idx:
        if i != prev and i != 0:
            res.append(int(i))
        prev = i
    return tuple(res)


class OCR:
    name = "ddddocr common.onnx (LSTM recognizer, 64x192)"

    def __init__(self, n_calib: int, n_eval: int):
        from benchmarks.real_data import render_text_lines
        from models.fetch_real import ddddocr_path

        self.path = ddddocr_path("common.onnx")
        self.shape = {"input1": [1, 1, 64, 192]}
        self.calib = {"input1": render_text_lines(n_calib, seed=0)[0]}
        self.x, self.truth = render_text_lines(n_eval, seed=1)

    def predict(self, model) -> list:
        sess = session(model.to_proto())
        return [_ctc(sess.run(None, {"input1": self.x[i:i + 1]})[0]) for i in range(len(self.x))]

    def score(self, ref: list, got: list) -> float:
        return float(np.mean([a == b for a, b in zip(ref, got)]))


MODELS = {"ocr": OCR}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ocr")
    ap.add_argument("--macs", default="0.67,0.5", help="shares of the original MACs to keep")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--eval", type=int, default=256)
    ap.add_argument("--budget", type=float, default=600, help="distillation time budget (s)")
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    for key in args.models.split(","):
        bench = MODELS[key](args.calib, args.eval)
        model = prunec.load(bench.path, bench.shape)
        ref = bench.predict(model)
        print(f"\n## {bench.name}: {args.calib} calibration inputs, {args.eval} evaluation inputs")
        print("| MACs kept | method | MACs x | score vs unpruned | time s | held-out loss |")
        print("|---|---|---|---|---|---|")
        for share in [float(s) for s in args.macs.split(",")]:
            t0 = time.perf_counter()
            pruned, report, _ = prune_model(model, PruneOptions(calib=bench.calib, target_macs=share))
            t_refit = time.perf_counter() - t0
            macs = report["macs"]["before"] / report["macs"]["after"]
            s = bench.score(ref, bench.predict(pruned))
            print(f"| {share} | refit | {macs:.2f}x | {s:.3f} | {t_refit:.0f} | |", flush=True)
            fit, check = _split(CalibData(bench.calib))
            t0 = time.perf_counter()
            d, res = distill(model, pruned, fit, check, budget_s=args.budget, lr=args.lr,
                             log=lambda m: print("   ", m, file=sys.stderr, flush=True))
            s = bench.score(ref, bench.predict(d))
            print(f"| {share} | refit + distill | {macs:.2f}x | {s:.3f} | {t_refit + time.perf_counter() - t0:.0f} | "
                  f"{res.held_out_loss_before:.3g} -> {res.held_out_loss_after:.3g} ({res.epochs} ep) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

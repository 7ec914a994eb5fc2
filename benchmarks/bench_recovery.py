"""Accuracy recovery on real pretrained models: refit (least squares) vs distillation, at 1.5x and 2x
fewer MACs, with unlabeled inputs made here and no labels.

Models (PyPI wheels, fetched with --no-deps into models/cache by models/fetch_pypi.py):
- ddddocr 1.6.1 `common.onnx`: conv stem + bidirectional LSTM + CTC text recognizer. Score: exact
  match of the decoded text with the unpruned model's decoding (and with the rendered truth).
- ddddocr 1.6.1 `common_det.onnx`: YOLOX-style detector; nudenet 3.4.2 `320n.onnx`: YOLOv8n. Score:
  F1 of the boxes matched to the unpruned model's (same class, IoU >= 0.5).
- The Fashion-MNIST CNN: test accuracy (labels used only to score).
- RapidOCR 1.4.4's PP-OCRv4 (Paddle2ONNX exports): the SVTR recognizer (`ppocr`, exact match as for
  ddddocr, on rendered printed lines) and the DB text detector (`ppdet`, F1 of its text regions,
  the connected parts of its probability map above 0.3, matched to the unpruned model's at IoU 0.5).

    python -m benchmarks.bench_recovery --models ocr --macs 0.67,0.5
    python -m benchmarks.bench_recovery --models yolo --eval 512 --noise-floor   # the score's own noise

--noise-floor scores the unpruned model against itself on its evaluation inputs barely changed
(Gaussian noise of half and one grey level, 8-bit rounding, a one-pixel shift): what a score near the
goals can be told apart from.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager

import numpy as np

import prunec
from prunec import cli_args
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
        from models.fetch_pypi import ddddocr_path

        self.path = ddddocr_path("common.onnx")
        self.shape = {"input1": [1, 1, 64, 192]}
        self.calib = {"input1": render_text_lines(n_calib, seed=0)[0]}
        self.x, self.truth_text = render_text_lines(n_eval, seed=1)

    def predict(self, model) -> list:
        sess = session(model.to_proto())
        return [_ctc(sess.run(None, {"input1": self.x[i:i + 1]})[0]) for i in range(len(self.x))]

    def score(self, ref: list, got: list) -> float:
        return float(np.mean([a == b for a, b in zip(ref, got)]))

    def truth(self, got: list) -> str:
        """Exact match with the rendered text (and ignoring case: c/C, o/O, s/S look alike in many fonts)."""
        from models.fetch_pypi import ddddocr_charset

        chars = ddddocr_charset("common.onnx")
        text = ["".join(chars[i] for i in g) for g in got]
        exact = np.mean([a == t for a, t in zip(text, self.truth_text)])
        nocase = np.mean([a.lower() == t.lower() for a, t in zip(text, self.truth_text)])
        return f"{exact:.3f} ({nocase:.3f} any case)"


def _f1(pairs: np.ndarray) -> float:
    matched, n_ref, n_got = pairs.sum(0)
    prec, rec = matched / max(n_got, 1), matched / max(n_ref, 1)
    return float(2 * prec * rec / max(prec + rec, 1e-9))


class Detector:
    """Box F1 against the unpruned model's detections (same class, IoU >= 0.5)."""

    input_name = "images"

    def predict(self, model) -> list:
        sess = session(model.to_proto())
        return [self.detect(sess.run(None, {self.input_name: self.x[i:i + 1]})[0]) for i in range(len(self.x))]

    def score(self, ref: list, got: list) -> float:
        from benchmarks.bench_yolo import agreement

        return _f1(np.array([agreement(r, g) for r, g in zip(ref, got)]))


class YOLOX(Detector):
    name = "ddddocr common_det.onnx (YOLOX-style character detector, 416)"

    def __init__(self, n_calib: int, n_eval: int):
        from benchmarks.real_data import render_click_captchas
        from models.fetch_pypi import ddddocr_path

        self.path = ddddocr_path("common_det.onnx")
        self.shape = {"images": [1, 3, 416, 416]}
        self.calib = {"images": render_click_captchas(n_calib, seed=0)}
        self.x = render_click_captchas(n_eval, seed=1)

    @staticmethod
    def detect(out: np.ndarray, conf: float = 0.1, iou: float = 0.45) -> list:
        """ddddocr's decoding: grid offsets and log sizes per stride 8/16/32, class-agnostic NMS."""
        from benchmarks.bench_yolo import _iou

        p = out[0].astype(np.float64).copy()
        grids, strides = [], []
        for s in (8, 16, 32):
            n = 416 // s
            xv, yv = np.meshgrid(np.arange(n), np.arange(n))
            grids.append(np.stack([xv, yv], 2).reshape(-1, 2))
            strides.append(np.full((n * n, 1), s))
        grid, stride = np.concatenate(grids), np.concatenate(strides)
        p[:, :2] = (p[:, :2] + grid) * stride
        p[:, 2:4] = np.exp(np.minimum(p[:, 2:4], 20)) * stride
        scores = p[:, 4:5] * p[:, 5:]
        cls, best = scores.argmax(1), scores.max(1)
        keep = best > conf
        xyxy = np.concatenate([p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2], 1)[keep]
        cls, best = cls[keep], best[keep]
        order, dets = np.argsort(-best), []
        while len(order):
            i = order[0]
            dets.append((int(cls[i]), float(best[i]), xyxy[i]))
            order = order[1:][_iou(xyxy[i], xyxy[order[1:]]) <= iou]
        return dets


class YOLOv8n(Detector):
    name = "nudenet 320n.onnx (YOLOv8n, 320)"

    def __init__(self, n_calib: int, n_eval: int):
        from benchmarks.bench_yolo import images
        from models.fetch_pypi import nudenet_yolov8n_path

        self.path = nudenet_yolov8n_path()
        self.shape = {"images": [1, 3, 320, 320]}
        self.calib = {"images": images(n_calib, seed=0)}
        self.x = images(n_eval, seed=1)

    @staticmethod
    def detect(out: np.ndarray) -> list:
        from benchmarks.bench_yolo import detect

        return detect(out[0])


class FashionMNIST:
    name = "Fashion-MNIST CNN (test accuracy, 10k images)"

    def __init__(self, n_calib: int, n_eval: int):
        from benchmarks.bench_accuracy import calibration
        from models.fashion_mnist import MODEL_PATH, load_split

        self.path, self.shape = MODEL_PATH, {}
        self.x, self.y = load_split("test")
        xtr, _ = load_split("train")
        self.calib = calibration(xtr, n_calib, 0)

    def predict(self, model) -> np.ndarray:
        from benchmarks.bench_accuracy import accuracy

        return accuracy(model, self.x, self.y)

    def score(self, ref: float, got: float) -> float:
        return got - ref  # points lost (labels used only here)


class PPOCRRec(OCR):
    name = "PP-OCRv4 recognizer (RapidOCR 1.4.4; SVTR attention/LayerNorm + CTC, 48x320)"

    def __init__(self, n_calib: int, n_eval: int):
        from benchmarks.real_data import render_print_lines
        from models.fetch_pypi import ppocr_charset, ppocr_path

        self.path = ppocr_path("rec")
        self.chars = ppocr_charset(self.path)
        self.shape = {"x": [1, 3, 48, 320]}
        self.calib = {"x": render_print_lines(n_calib, seed=0)[0]}
        self.x, self.truth_text = render_print_lines(n_eval, seed=1)

    def predict(self, model) -> list:
        sess = session(model.to_proto())
        return [_ctc(sess.run(None, {"x": self.x[i:i + 1]})[0]) for i in range(len(self.x))]

    def text(self, got: list) -> list[str]:
        """The decoded lines, PaddleOCR's space class at either end dropped (as RapidOCR reads them)."""
        return ["".join(self.chars[i] for i in g).strip() for g in got]

    def score(self, ref: list, got: list) -> float:
        """Exact match of the decoded text with the unpruned model's: a space read at either end of a
        line (the padding) is not a different reading."""
        return float(np.mean([a == b for a, b in zip(self.text(ref), self.text(got))]))

    def truth(self, got: list) -> str:
        """Exact match with the rendered text."""
        return f"{np.mean([a == t for a, t in zip(self.text(got), self.truth_text)]):.3f}"


def text_regions(prob: np.ndarray, thresh: float = 0.3, min_area: int = 10) -> list:
    """A DB text detector's regions, simplified: the connected parts of its probability map above
    thresh, as (class 0, score 1, box x0 y0 x1 y1): what bench_yolo's agreement() matches."""
    from scipy import ndimage

    found = ndimage.find_objects(ndimage.label(prob > thresh)[0])
    return [(0, 1.0, np.array([s[1].start, s[0].start, s[1].stop, s[0].stop], np.float64))
            for s in found if s is not None
            and (s[0].stop - s[0].start) * (s[1].stop - s[1].start) >= min_area]


class PPOCRDet(Detector):
    name = "PP-OCRv4 text detector (RapidOCR 1.4.4; DB, 480x480)"
    input_name = "x"

    def __init__(self, n_calib: int, n_eval: int):
        from benchmarks.real_data import render_text_pages
        from models.fetch_pypi import ppocr_path

        self.path = ppocr_path("det")
        self.shape = {"x": [1, 3, 480, 480]}
        self.calib = {"x": render_text_pages(n_calib, seed=0)}
        self.x = render_text_pages(n_eval, seed=1)

    @staticmethod
    def detect(out: np.ndarray) -> list:
        return text_regions(out[0, 0])


MODELS = {"ocr": OCR, "det": YOLOX, "yolo": YOLOv8n, "fmnist": FashionMNIST, "ppocr": PPOCRRec,
          "ppdet": PPOCRDet}


def perturbations(x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs changed by less than a user would notice; a grey level is 1/255 of the inputs' range."""
    rng = np.random.default_rng(seed)
    lo, level = float(x.min()), float(x.max() - x.min()) / 255 or 1.0 / 255
    return {"noise 0.5 grey level": x + rng.normal(0, 0.5 * level, x.shape).astype(np.float32),
            "noise 1 grey level": x + rng.normal(0, level, x.shape).astype(np.float32),
            "8-bit rounding": (np.round((x - lo) / level) * level + lo).astype(np.float32),
            "shift 1 px": np.concatenate([x[..., :1], x[..., :-1]], -1)}


def noise_floor(keys: list[str], n_calib: int, n_eval: int) -> int:
    for key in keys:
        bench = MODELS[key](n_calib, n_eval)
        model = prunec.load(bench.path, bench.shape)
        ref, x = bench.predict(model), bench.x
        print(f"\n## {bench.name}: the unpruned model against itself, {len(x)} inputs")
        print("| inputs | score |\n|---|---|")
        for name, changed in perturbations(x).items():
            bench.x = changed.astype(np.float32)
            print(f"| {name} | {bench.score(ref, bench.predict(model)):.4f} |", flush=True)
        bench.x = x
    return 0


def _round_summary(r: dict) -> str:
    n = f" on {r['samples']} samples" if "samples" in r else ""
    return f"round {r['step']} {r.get('time_s', 0):.0f} s{n}"


@contextmanager
def _watched_distillation(lr: float, decision_weight: float | None):
    """prunec's own pipeline runs distillation (so the rounds are budgeted as for a user); this keeps
    the model distillation starts from (the refit) and when it started, and sets the step size and
    decision weight the command line names."""
    import prunec.passes.distill as distill_pass

    seen: dict = {}
    plain = distill_pass.Distill

    class Watched(plain):
        def __init__(self, *a, **kw):
            super().__init__(*a, **dict(kw, lr=lr))
            if decision_weight is not None:
                self.kw["decision_weight"] = decision_weight

        def __call__(self, model):
            seen.update(model=model, started=time.perf_counter())
            return super().__call__(model)

    distill_pass.Distill = Watched
    try:
        yield seen
    finally:
        distill_pass.Distill = plain


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ocr")
    ap.add_argument("--macs", default="0.67,0.5", help="shares of the original MACs to keep")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--eval", type=int, default=256)
    ap.add_argument("--budget", type=float, default=600,
                    help="recovery time budget (s), as prunec's --recover-budget: the plan and refit, then "
                         "distillation in what they left")
    ap.add_argument("--lr", type=float, default=1e-3, help="step size relative to each tensor's RMS")
    ap.add_argument("--decision-weight", type=float, default=None, metavar="W",
                    help="distill(decision_weight=W; default distill.DECISION_WEIGHT): weight of the error on each row's deciding entries "
                         "(outputs with many classes, e.g. a CTC head)")
    ap.add_argument("--criterion", default="auto", help="importance criterion (prunec --criterion); auto: prunec's default")
    ap.add_argument("--refit-only", action="store_true", help="skip distillation (the refit rows only)")
    ap.add_argument("--factorize", type=float, metavar="TOL",
                    help="factorize large linear layers first (prunec --factorize TOL)")
    ap.add_argument("--steps", type=cli_args.steps, default=None, metavar="N|auto",
                    help="prune in this many rounds, refitting after each (prunec --steps; default auto)")
    ap.add_argument("--save", metavar="DIR", help="also write the refitted and distilled models here")
    ap.add_argument("--noise-floor", action="store_true",
                    help="only score the unpruned model against itself on slightly perturbed inputs")
    args = ap.parse_args()
    if args.noise_floor:
        return noise_floor(args.models.split(","), args.calib, args.eval)
    for key in args.models.split(","):
        bench = MODELS[key](args.calib, args.eval)
        model = prunec.load(bench.path, bench.shape)
        ref = bench.predict(model)
        print(f"\n## {bench.name}: {args.calib} calibration inputs, {args.eval} evaluation inputs")
        truth = getattr(bench, "truth", lambda got: "")
        print("| MACs kept | method | MACs x | score vs unpruned | vs truth | time s | held-out loss |")
        print("|---|---|---|---|---|---|---|")
        print(f"| 1.0 | unpruned | 1.00x | | {truth(ref)} | | |", flush=True)
        for share in [float(s) for s in args.macs.split(",")]:
            opts = PruneOptions(calib=bench.calib, target_macs=share, recover="refit" if args.refit_only else "distill",
                                factorize=args.factorize, criterion=args.criterion, steps=args.steps,
                                recover_budget=args.budget)
            with _watched_distillation(args.lr, args.decision_weight) as seen:
                t0 = time.perf_counter()
                final, report, _ = prune_model(model, opts, log=lambda m: print("   ", m, file=sys.stderr, flush=True))
                t_all = time.perf_counter() - t0
            refit = seen.get("model", final)  # distillation skipped (too little budget left): the refit is final
            t_refit = seen["started"] - t0 if "started" in seen else t_all
            macs = report["macs"]["before"] / report["macs"]["after"]
            got = bench.predict(refit)
            s = bench.score(ref, got)
            if args.save:
                prunec.save(refit, f"{args.save}/{key}-{share}-refit.onnx")
            rounds = report["steps"]
            how = (f"factorize {args.factorize:g} + " if args.factorize else "") + (f"{len(rounds)} rounds of " if len(rounds) > 1 else "")
            print(f"| {share} | {how}refit ({report['criterion']}) | {macs:.2f}x | {s:.3f} | {truth(got)} | {t_refit:.0f} | |", flush=True)
            print(f"    rounds: {', '.join(_round_summary(r) for r in rounds)}"
                  + (f"; {report['steps_note']}" if report.get("steps_note") else ""), file=sys.stderr, flush=True)
            if args.refit_only:
                continue
            rec = report.get("recovery", {})
            if rec.get("method") != "distill":
                print(f"| {share} | {how}refit + distill | {macs:.2f}x | (skipped: {rec.get('note', '')}) | | {t_all:.0f} | |", flush=True)
                continue
            got = bench.predict(final)
            s = bench.score(ref, got)
            if args.save:
                prunec.save(final, f"{args.save}/{key}-{share}-distill.onnx")
            print(f"| {share} | {how}refit + distill | {macs:.2f}x | {s:.3f} | {truth(got)} | {t_all:.0f} | "
                  f"{rec['held_out_loss_before']:.3g} -> {rec['held_out_loss_after']:.3g} ({rec['epochs']} ep) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

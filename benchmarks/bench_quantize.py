"""int8 after pruning (`--quantize int8`): accuracy and ONNX Runtime latency, float vs int8, original
vs pruned.

Models:
- `fashion`: the committed Fashion-MNIST CNN (apt: dataset-fashion-mnist); accuracy on the 10,000 test
  images; 512 unlabeled training images calibrate (pruning refit and int8 ranges alike).
- `yolov8n`: the real YOLOv8n (nudenet 3.4.2, 320x320; pip: scikit-image for its photos); agreement
  of the detections with the original float model's (F1, as benchmarks/bench_yolo.py), 96 held-out crops;
  pruned at --ratio 0.3 (at 0.5 without distillation its detections no longer match: bench_yolo).

Each model: the original and the pruned model (prunec's Python API with --calib, least-squares refit),
each in float and quantized by prunec's quantize pass (passes/quantize.py, the same call the CLI makes);
latency of the four files in ONNX Runtime, timed in interleaved rounds (best round's median, as
prunec's x86 timing), with --threads intra-op threads.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_quantize.py --models fashion,yolov8n
    PYTHONPATH=. .venv/bin/python benchmarks/bench_quantize.py --models fashion --schemes   # the integer types
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import prunec
from prunec.passes.quantize import Quantize, Scheme, scheme_for
from prunec.backend.measure import ort_sampler, timed_rounds
from prunec.pipeline import PruneOptions, prune_model
from prunec.recovery.data import CalibData, fit_and_check
from prunec.runtime import session


def _fashion():
    from benchmarks.bench_accuracy import calibration
    from models.fashion_mnist import INPUT_NAME, MODEL_PATH, load_split

    xtr, _ = load_split("train")
    xte, yte = load_split("test")
    model = prunec.load(MODEL_PATH)
    calib = CalibData(calibration(xtr, 512, seed=0), "fashion-mnist train (512)")

    def metric(m: prunec.Model) -> str:
        sess = session(m.to_proto())
        pred = np.concatenate([sess.run(None, {INPUT_NAME: xte[i:i + 1000]})[0].argmax(1)
                               for i in range(0, len(xte), 1000)])
        return f"accuracy {100 * float((pred == yte).mean()):.2f}%"

    return model, calib, PruneOptions(ratio=0.5, calib=calib, recover="refit"), metric, {INPUT_NAME: xte[:1]}


def _yolov8n():
    from benchmarks.bench_yolo import SIZE, agreement, detect, images, run_all
    from models.fetch_pypi import nudenet_yolov8n_path

    model = prunec.load(nudenet_yolov8n_path(), {"images": [1, 3, SIZE, SIZE]})
    calib = CalibData({"images": images(256, seed=0)}, "skimage photos (256 crops)")
    eval_x = images(96, seed=1)
    ref_out = run_all(model, eval_x)
    ref = [detect(o) for o in ref_out]

    def metric(m: prunec.Model) -> str:
        out = run_all(m, eval_x)
        t = np.array([agreement(r, detect(o)) for r, o in zip(ref, out)]).sum(0)
        prec, rec = t[0] / max(t[2], 1), t[0] / max(t[1], 1)
        err = float(np.sqrt(np.sum((out - ref_out) ** 2) / np.sum(ref_out ** 2)))
        return f"F1 {2 * prec * rec / max(prec + rec, 1e-9):.3f} vs original float, output rel. RMS {err:.4f}"

    return model, calib, PruneOptions(ratio=0.3, criterion="output", calib=calib, recover="refit"), metric, \
        {"images": eval_x[:1]}


MODELS = {"fashion": _fashion, "yolov8n": _yolov8n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="fashion")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--schemes", action="store_true",
                    help="also compare the integer types (uint8 x int8 with 7/8-bit weights, int8 x int8)")
    args = ap.parse_args()
    default = scheme_for(None)
    print(f"default scheme on this host: {default.describe()}")
    for name in args.models.split(","):
        model, calib, opts, metric, feed = MODELS[name]()
        _, fit, check = fit_and_check(calib)
        pruned, report, _ = prune_model(model, opts)
        macs = report["macs"]["before"] / report["macs"]["after"]
        variants = {"original f32": model, f"pruned f32 ({macs:.2f}x fewer MACs)": pruned}
        schemes = {"": default}
        if args.schemes:
            schemes = {" u8xs8 7-bit w": Scheme("uint8", True), " u8xs8": Scheme("uint8", False),
                       " s8xs8": Scheme("int8", False)}
        for base, m in list(variants.items()):
            for label, sch in schemes.items():
                q, res = Quantize(fit, check, scheme=sch, tolerance=1.0)(m)
                err = max(v["rel_rms"] for v in res.output_error.values())
                variants[f"{base.split(' (')[0].replace('f32', 'int8')}{label} (vs f32: rel. RMS {err:.4f})"] = q
        with tempfile.TemporaryDirectory() as tmp:
            samplers, sizes = {}, {}
            for i, (label, m) in enumerate(variants.items()):
                path = prunec.save(m, Path(tmp) / f"{i}.onnx")
                sizes[label] = path.stat().st_size
                samplers[label] = ort_sampler(path, feed, args.threads)[0]
            lat = timed_rounds(samplers, args.repeat, args.rounds)
        print(f"\n{name}: {report['input']}, pruned with {opts.ratio} ratio + refit; {len(fit)} calibration / "
              f"{len(check)} held-out samples; ONNX Runtime {args.threads} threads\n")
        print("| model | quality | ORT ms (best round median) | file bytes |")
        print("|---|---|---|---|")
        for label, m in variants.items():
            print(f"| {label} | {metric(m)} | {lat[label]['median']:.3f} | {sizes[label]:,} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

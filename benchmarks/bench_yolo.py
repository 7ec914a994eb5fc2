"""Real YOLOv8n (nudenet 320n.onnx): do the pruned detector's boxes agree with the unpruned one's?

Photos: scikit-image's bundled sample images (pip install scikit-image; no download at run time),
plus 4x4 mosaics of its LFW face crops (the detector has face classes). Calibration and evaluation
images are different random crops/flips (different seeds). Preprocessing as nudenet does it: pad to a
square (bottom/right, black), resize to 320, RGB, /255.

Agreement: detections (score >= 0.2, class-wise NMS at IoU 0.45, as nudenet) of the pruned model
matched to the original's (same class, IoU >= 0.5): precision, recall, F1; plus the relative error
of the raw output tensor.

    python -m benchmarks.bench_yolo                  # table + calibration timing for 256 images
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import prunec
from models.fetch_pypi import nudenet_yolov8n_path
from prunec.recovery.data import CalibData, resize_bilinear
from prunec.recovery.statistics import collect_stats
from prunec import criteria
from prunec.pipeline import PruneOptions, prune_model
from prunec.runtime import session

SIZE = 320
PHOTOS = ["astronaut", "cat", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera", "coins", "moon", "page", "brick", "grass", "gravel", "clock", "text", "colorwheel"]


def _photos() -> list[np.ndarray]:
    import skimage.data as d

    out = []
    for name in PHOTOS:
        im = getattr(d, name)()
        im = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3]
        out.append(im.astype(np.uint8))
    faces = (d.lfw_subset() * 255).astype(np.uint8)  # [200, 25, 25] grey faces
    for k in range(0, 192, 16):  # 4x4 mosaics, each face upscaled to 80x80
        tiles = [resize_bilinear(f[..., None].astype(np.float32), (80, 80)) for f in faces[k:k + 16]]
        rows = [np.concatenate(tiles[r * 4:(r + 1) * 4], axis=1) for r in range(4)]
        out.append(np.repeat(np.concatenate(rows, axis=0), 3, axis=2).astype(np.uint8))
    return out


def _prep(im: np.ndarray) -> np.ndarray:
    side = max(im.shape[:2])
    sq = np.zeros((side, side, 3), np.float32)
    sq[:im.shape[0], :im.shape[1]] = im
    return (resize_bilinear(sq, (SIZE, SIZE)) / 255.0).transpose(2, 0, 1).astype(np.float32)


def images(n: int, seed: int) -> np.ndarray:
    """n random crops (40-100% of each side), half of them mirrored, of the photos and mosaics."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    out = []
    for i in range(n):
        im = photos[i % len(photos)] if i < len(photos) else photos[rng.integers(len(photos))]
        h, w = im.shape[:2]
        if i >= len(photos):
            ch, cw = int(h * rng.uniform(0.4, 1.0)), int(w * rng.uniform(0.4, 1.0))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            im = im[y:y + ch, x:x + cw]
            if rng.random() < 0.5:
                im = im[:, ::-1]
        out.append(_prep(im))
    return np.stack(out)


def detect(out: np.ndarray, conf: float = 0.2, iou: float = 0.45) -> list[tuple[int, float, np.ndarray]]:
    """out [22, N] -> [(class, score, xyxy)] after class-wise NMS."""
    boxes, scores = out[:4].T, out[4:].T
    cls, best = scores.argmax(1), scores.max(1)
    keep = best >= conf
    xyxy = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
                     boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2], 1)[keep]
    cls, best = cls[keep], best[keep]
    dets = []
    for c in np.unique(cls):
        idx = np.where(cls == c)[0]
        idx = idx[np.argsort(-best[idx])]
        while len(idx):
            i = idx[0]
            dets.append((int(c), float(best[i]), xyxy[i]))
            idx = idx[1:][_iou(xyxy[i], xyxy[idx[1:]]) < iou]
    return dets


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), axis=-1)
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def agreement(ref: list, got: list) -> tuple[int, int, int]:
    """(matched, reference detections, pruned detections): greedy one-to-one matching."""
    used, matched = set(), 0
    for c, _, box in ref:
        cands = [(j, d) for j, d in enumerate(got) if d[0] == c and j not in used]
        if not cands:
            continue
        ious = _iou(box, np.stack([d[2] for _, d in cands]))
        k = int(np.argmax(ious))
        if ious[k] >= 0.5:
            used.add(cands[k][0])
            matched += 1
    return matched, len(ref), len(got)


def run_all(model: prunec.Model, x: np.ndarray) -> np.ndarray:
    sess = session(model.to_proto())
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--eval", type=int, default=96)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    try:
        calib_x, eval_x = images(args.calib, seed=0), images(args.eval, seed=1)
    except ImportError:
        print("needs scikit-image for its sample photos: pip install scikit-image", file=sys.stderr)
        return 1
    path = nudenet_yolov8n_path()
    model = prunec.load(path, {"images": [1, 3, SIZE, SIZE]})
    calib = CalibData({"images": calib_x}, "skimage photos")
    # calibration pass timing: activation statistics of every prunable group over all images
    analysis = prunec.analyze(model)
    t0 = time.perf_counter()
    stats = collect_stats(model, calib, criteria.get("act").stat_keys(analysis, analysis.prunable_groups))
    t_stats = time.perf_counter() - t0
    print(f"{path.name}: calibration pass (activation statistics, {len(stats)} tensors) over "
          f"{len(calib_x)} images: {t_stats:.1f}s")
    ref_out = run_all(model, eval_x)
    ref_dets = [detect(o) for o in ref_out]
    print(f"evaluation: {len(eval_x)} other crops, {sum(map(len, ref_dets))} reference detections\n")
    print("| setting                          | criterion  | MACs  | precision | recall | F1    | out err | prune s |")
    print("|----------------------------------|------------|-------|-----------|--------|-------|---------|---------|")
    configs = [
        ("ratio 0.3, no calib", dict(ratio=0.3, criterion="l2")),
        ("ratio 0.3, calib, no recon", dict(ratio=0.3, criterion="output", calib=calib, reconstruct=False)),
        ("ratio 0.3, calib + recon", dict(ratio=0.3, criterion="output", calib=calib)),
        ("target-macs 0.7, no calib", dict(target_macs=0.7, criterion="l2")),
        ("target-macs 0.7, calib + recon", dict(target_macs=0.7, criterion="output", calib=calib)),
        ("target-macs 0.5, no calib", dict(target_macs=0.5, criterion="l2")),
        ("target-macs 0.5, calib, no recon", dict(target_macs=0.5, criterion="output", calib=calib, reconstruct=False)),
        ("target-macs 0.5, calib + recon", dict(target_macs=0.5, criterion="output", calib=calib)),
        ("ratio 0.5, no calib", dict(ratio=0.5, criterion="l2")),
        ("ratio 0.5, calib + recon", dict(ratio=0.5, criterion="output", calib=calib)),
    ]
    if args.quick:
        configs = [configs[0], configs[2], configs[7]]
    for label, kw in configs:
        t0 = time.perf_counter()
        pruned, report, _ = prune_model(model, PruneOptions(**kw))
        dt = time.perf_counter() - t0
        out = run_all(pruned, eval_x)
        m = np.array([agreement(r, detect(o)) for r, o in zip(ref_dets, out)]).sum(0)
        prec, rec = m[0] / max(m[2], 1), m[0] / max(m[1], 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-9)
        err = float(np.sum((out - ref_out) ** 2) / np.sum(ref_out ** 2))
        macs = report["macs"]["before"] / report["macs"]["after"]
        print(f"| {label:<32} | {report['criterion']:<10} | {macs:4.2f}x | {prec:9.3f} | {rec:6.3f} | {f1:5.3f} | "
              f"{err:7.2e} | {dt:7.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

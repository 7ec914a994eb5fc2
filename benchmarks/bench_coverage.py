"""Coverage and reduction at a given ratio on every test model, the real YOLOv8n and the real
architectures shipped in the onnx wheel.

    python benchmarks/bench_coverage.py [--ratio 0.5] [--exports DIR] [--only TEXT ...]
--exports DIR adds every DIR/*.onnx (torchvision's Swin, Swin-V2, MaxViT from models/export_torchvision.py);
--only keeps the rows whose name contains TEXT.
Prints: groups (prunable/total), share of Conv/Gemm/MatMul weights and MACs a prunable group can
shrink, MACs and params reduction, and whether the pruned model verified.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnx  # noqa: E402

import prunec  # noqa: E402
from models.zoo import BUILDERS, build  # noqa: E402
from prunec.pipeline import PruneOptions, prune_model  # noqa: E402


def sources(exports: str | None = None):
    for name in BUILDERS:
        if name != "resnet50_full":
            yield name, lambda name=name: prunec.from_proto(build(name))
    from models.window_attention import window_attention

    yield "window_attention (shapes folded)", lambda: prunec.from_proto(window_attention())
    yield "window_attention (dynamic batch)", lambda: prunec.from_proto(window_attention(dynamic="batch"))
    yield "window_attention (dynamic H, W)", lambda: prunec.from_proto(window_attention(dynamic="hw"),
                                                                        {"x": [1, 8, 8, 16]})
    yield "window_attention (torch F.pad)", lambda: prunec.from_proto(
        window_attention(dynamic="hw", torch_pads=True), {"x": [1, 8, 8, 16]})
    from models import control_flow

    for builder in (control_flow.if_conv_paths, control_flow.loop_residual, control_flow.scan_state):
        yield builder.__name__, lambda builder=builder: prunec.from_proto(builder())
    fixtures = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
    for f in ("torch_cond.onnx", "torch_loop.onnx"):
        yield f"{f[:-5]} (torch export)", lambda f=f: prunec.load(fixtures / f)
    for path in sorted(Path(exports).glob("*.onnx")) if exports else []:
        yield f"{path.stem} (export)", lambda path=path: prunec.load(path)
    try:
        from models.fetch_pypi import nudenet_yolov8n_path

        path = nudenet_yolov8n_path()
        yield "yolov8n (nudenet, real)", lambda: prunec.load(path, {"images": [1, 3, 320, 320]})
    except Exception as exc:  # offline
        print(f"(yolov8n skipped: {exc})")
    try:
        from models.fetch_pypi import ddddocr_path

        for f, label in (("common.onnx", "LSTM"), ("common_old.onnx", "int8 dynamic")):
            path = ddddocr_path(f)
            yield f"ddddocr {f[:-5]} ({label}, real)", lambda path=path: prunec.load(path, {"input1": [1, 1, 64, 256]})
    except Exception as exc:  # offline
        print(f"(ddddocr skipped: {exc})")
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    for path in sorted(light.glob("light_*.onnx")):
        if "vgg19" in path.name:
            continue  # 143M params: slow to fold, adds nothing over zfnet/alexnet
        yield f"{path.stem} (onnx wheel)", lambda path=path: prunec.load(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--exports", metavar="DIR", help="also every DIR/*.onnx")
    ap.add_argument("--only", metavar="TEXT", action="append", help="only the rows whose name contains TEXT")
    args = ap.parse_args()
    print(f"{'model':<34} {'groups':>9} {'weights':>8} {'MACs':>7} {'MACs x':>7} {'params x':>8} {'time s':>7}  verified")
    for name, load in sources(args.exports):
        if args.only and not any(text in name for text in args.only):
            continue
        t0 = time.perf_counter()
        model = load()
        info = prunec.inspect(model)
        c = info["coverage"]
        try:
            _, r, _ = prune_model(model, PruneOptions(ratio=args.ratio))
            macs_x = r["macs"]["before"] / max(r["macs"]["after"], 1)
            params_x = r["params"]["before"] / max(r["params"]["after"], 1)
            ok = "yes"  # prune_model raises PrunecError when verification fails
        except prunec.PrunecError as exc:
            macs_x = params_x = float("nan")
            ok = f"error: {exc}"
        dt = time.perf_counter() - t0
        print(f"{name:<34} {info['prunable']:>4}/{len(info['groups']):<4} {100 * c['weight_share']:>7.1f}% "
              f"{100 * c['macs_share']:>6.1f}% {macs_x:>7.2f} {params_x:>8.2f} {dt:>7.1f}  {ok}", flush=True)


if __name__ == "__main__":
    main()

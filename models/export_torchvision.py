"""Export torchvision classifiers to ONNX as a user would (dev only: needs torch and torchvision,
never a prunec dependency). Random weights: coverage and MACs do not depend on them.

    pip install torch==2.13.0 torchvision==0.29.0          # CPU wheels, in a separate venv
    python -m models.export_torchvision swin_t swin_v2_t maxvit_t -o out/exports [--dynamic | --dynamic-hw]

The TorchScript exporter (dynamo=False) at opset 17, input 1x3x224x224 named `input`; --dynamic
leaves the batch open, --dynamic-hw the batch, height and width. Swin's window attention exports its
Reshape targets, pads and crops as Shape -> Gather -> ... computations.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def export(name: str, outdir: Path, dynamic: bool = False, dynamic_hw: bool = False) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    path = outdir / f"{name}{'_dynhw' if dynamic_hw else '_dyn' if dynamic else ''}.onnx"
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic or dynamic_hw else None
    if dynamic_hw:
        axes["input"].update({2: "height", 3: "width"})
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), input_names=["input"], output_names=["output"],
                      opset_version=17, dynamo=False, dynamic_axes=axes)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", help="torchvision.models builders (swin_t, swin_v2_t, maxvit_t, ...)")
    ap.add_argument("-o", "--outdir", default="out/exports")
    ap.add_argument("--dynamic", action="store_true", help="dynamic batch")
    ap.add_argument("--dynamic-hw", action="store_true", help="dynamic batch, height and width")
    args = ap.parse_args()
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        print(export(name, outdir, args.dynamic, args.dynamic_hw))


if __name__ == "__main__":
    main()

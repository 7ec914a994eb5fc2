"""Export small PyTorch models with control flow as a user would (dev only: needs torch, never a
prunec dependency), for tests/fixtures/torch_cond.onnx and torch_loop.onnx.

    python -m models.export_control_flow -o tests/fixtures      # torch 2.13/2.14 CPU, onnxscript

- `torch.cond` choosing between a 3x3 conv + ReLU and a 1x1 conv * 0.5, exported by the dynamo
  exporter (opset 18): an If whose branches read the stem's output and the weights by name.
- a scripted `for` loop applying h <- h + ReLU(conv3x3(h)) n times (n an int input), exported by
  the TorchScript exporter (opset 17): a Loop with the activation as loop-carried state.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def export(outdir: Path) -> list[Path]:
    import torch

    class CondNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.a = torch.nn.Conv2d(8, 16, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 16, 1)
            self.head = torch.nn.Conv2d(16, 4, 1)

        def forward(self, x):
            h = torch.relu(self.stem(x))
            return self.head(torch.cond(x.mean() > 0, lambda h: torch.relu(self.a(h)), lambda h: self.b(h) * 0.5, (h,)))

    class LoopNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.step = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.head = torch.nn.Conv2d(8, 4, 1)

        def forward(self, x, n: int = 3):
            h = self.stem(x)
            for _ in range(n):
                h = h + torch.relu(self.step(h))
            return self.head(h)

    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    cond, loop = outdir / "torch_cond.onnx", outdir / "torch_loop.onnx"
    torch.onnx.export(CondNet().eval(), (x,), str(cond), dynamo=True, opset_version=18)
    import onnx

    onnx.save_model(onnx.load(str(cond)), str(cond))  # weights inside the file (dynamo wrote them apart)
    Path(f"{cond}.data").unlink(missing_ok=True)
    torch.onnx.export(torch.jit.script(LoopNet().eval()), (x,), str(loop), dynamo=False, opset_version=17,
                      input_names=["x"])
    return [cond, loop]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--outdir", default="out/exports")
    outdir = Path(ap.parse_args().outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for path in export(outdir):
        print(path)


if __name__ == "__main__":
    main()

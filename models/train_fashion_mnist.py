"""Train the small Fashion-MNIST CNN and export it to models/fashion_mnist_cnn.onnx (dev only).

Needs torch (pip install torch==2.13.0 onnxscript) and the Debian package dataset-fashion-mnist.
Neither is a dependency of prunec: the exported ONNX file is committed.

    python -m models.train_fashion_mnist --epochs 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from models.fashion_mnist import INPUT_NAME, MODEL_PATH, load_split


def build_net():
    import torch.nn as nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *block(1, 16), *block(16, 32), nn.MaxPool2d(2),
                *block(32, 64), nn.MaxPool2d(2), *block(64, 64),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(64, 10)

        def forward(self, x):  # x: pixels in [0, 1]
            return self.fc(self.features((x - 0.286) / 0.353))

    return Net()


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=str(MODEL_PATH))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    np.random.seed(0)
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    net = build_net()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * (len(xtr) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(args.epochs):
        net.train()
        t0 = time.time()
        perm = torch.randperm(len(xtr))
        for i in range(len(xtr) // 128):
            idx = perm[i * 128:(i + 1) * 128]
            x = xtr_t[idx]
            if torch.rand(()) < 0.5:  # cheap augmentation: horizontal flip
                x = x.flip(-1)
            loss = torch.nn.functional.cross_entropy(net(x), ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if i % 100 == 0:
                print(f"  step {i}: loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(torch.from_numpy(xte[i:i + 1000])).argmax(1) for i in range(0, len(xte), 1000)])
        acc = (pred.numpy() == yte).mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f} test acc {acc:.4f} ({time.time() - t0:.0f}s)", flush=True)
    net.eval()
    dummy = torch.zeros(2, 1, 28, 28)
    torch.onnx.export(net, (dummy,), args.out, input_names=[INPUT_NAME], output_names=["logits"],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    print("wrote", args.out)


if __name__ == "__main__":
    main()

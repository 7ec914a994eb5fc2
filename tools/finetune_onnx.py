"""Optional: fine-tune a pruned ONNX classifier with PyTorch when you do have labelled data.

prunec itself never needs torch. This script is for users who have it:

    pip install torch==2.13.0 onnx2torch==1.5.15 onnxscript
    python tools/finetune_onnx.py pruned.onnx train.npz -o finetuned.onnx --epochs 2

train.npz holds `x` (inputs, first axis = samples, named after the model's input or `x`) and
`y` (integer class labels). Optionally --teacher original.onnx distils from the unpruned model's
logits instead of (or besides) the labels, which needs no labels at all (`y` may then be absent).
The result is exported back to ONNX with the same input/output names; run `prunec` on it again
only if you want to prune further.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> int:
    try:
        import torch
        from onnx2torch import convert
    except ImportError:
        print("needs torch and onnx2torch: pip install torch==2.13.0 onnx2torch==1.5.15 onnxscript", file=sys.stderr)
        return 1
    import onnx
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description="fine-tune a pruned ONNX classifier (optional path, needs torch)")
    ap.add_argument("model")
    ap.add_argument("data", help=".npz with x (inputs) and y (labels, optional with --teacher)")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--teacher", help="the unpruned ONNX model: distil from its outputs (KL on softmax)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()

    proto = onnx.load(args.model)
    in_name = proto.graph.input[0].name
    out_name = proto.graph.output[0].name
    data = np.load(args.data)
    x = data[in_name] if in_name in data.files else data["x"]
    y = data["y"] if "y" in data.files else None
    if y is None and not args.teacher:
        print("no labels (y) in the data: give --teacher original.onnx to distil", file=sys.stderr)
        return 2
    teacher = ort.InferenceSession(args.teacher) if args.teacher else None
    net = convert(proto)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        net.train()
        perm = np.random.default_rng(epoch).permutation(len(x))
        total = 0.0
        for i in range(0, len(x), args.batch):
            idx = perm[i:i + args.batch]
            logits = net(torch.from_numpy(x[idx]))
            loss = torch.zeros(())
            if y is not None:
                loss = loss + torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[idx]).long())
            if teacher is not None:
                t = torch.from_numpy(teacher.run(None, {teacher.get_inputs()[0].name: x[idx]})[0])
                loss = loss + torch.nn.functional.kl_div(logits.log_softmax(1), t.softmax(1), reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        print(f"epoch {epoch + 1}: loss {total / len(x):.4f}", flush=True)
    net.eval()
    dummy = torch.from_numpy(x[:2])
    torch.onnx.export(net, (dummy,), args.out, input_names=[in_name], output_names=[out_name],
                      dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}}, opset_version=17, dynamo=False)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""U-Net: conv-bn-relu encoder/decoder with skip Concats and Resize upsampling."""

from __future__ import annotations

from typing import Sequence

import onnx

from .common import DEFAULT_OPSET, Builder


def _double_conv(b: Builder, x: str, cin: int, cout: int) -> str:
    return b.conv_bn_act(b.conv_bn_act(x, cin, cout, 3), cout, cout, 3)


def unet(image: int = 64, in_ch: int = 3, num_classes: int = 4, widths: Sequence[int] = (16, 32, 64, 128),
         seed: int = 0, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Output: per-pixel class logits [1, num_classes, image, image]."""
    levels = len(widths) - 1
    if image % (2 ** levels):
        raise ValueError(f"image must be divisible by {2 ** levels}")
    b = Builder("unet", seed, opset)
    x = b.input([1, in_ch, image, image])
    skips, cin = [], in_ch
    for w in widths[:-1]:
        x = _double_conv(b, x, cin, w)
        skips.append((x, w))
        x, cin = b.maxpool(x, 2, 2), w
    x = _double_conv(b, x, cin, widths[-1])
    cin = widths[-1]
    for skip, w in reversed(skips):
        # Concat(skip, upsampled): the decoder conv consumes two channel ranges.
        x = _double_conv(b, b.concat([skip, b.resize(x, 2)]), w + cin, w)
        cin = w
    return b.build([b.conv(x, cin, num_classes, 1, pad=0, bias=True, prefix="seg_head")], ["output"])

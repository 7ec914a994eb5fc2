"""Classic CNN classifier whose last feature map [N, C, H, W] (H, W > 1) is flattened into a Gemm.

Flatten makes each input channel own H*W consecutive Gemm input features (a blocked
channel relation, unlike the GlobalAveragePool heads elsewhere).
"""

from __future__ import annotations

import onnx

from .common import DEFAULT_OPSET, Builder


def flatten_gemm(image: int = 32, num_classes: int = 10, seed: int = 0, opset: int = DEFAULT_OPSET,
                 hidden: int = 64) -> onnx.ModelProto:
    b = Builder("flatten_gemm", seed, opset)
    x = b.input([1, 3, image, image])
    cin = 3
    for c in (16, 32, 32):
        x = b.maxpool(b.conv_bn_act(x, cin, c, 3), 2, 2)
        cin = c
    hw = image // 8                                          # 4x4 at 32x32
    x = b.flatten(x, axis=1)                                 # [1, C*H*W], channel-major
    x = b.relu(b.gemm(x, cin * hw * hw, hidden, prefix="fc1"))
    return b.build([b.gemm(x, hidden, num_classes, prefix="fc2")], ["output"])

"""Quantized models as ONNX Runtime's quantizer writes them, from small float models built here.

``qdq_resnet``: a ResNet basic-block net (BatchNorm folded into conv biases, as exporters do
before quantizing), statically quantized to the QDQ format with per-channel int8 weights (scale
and zero point per output channel, axis 0), int32 biases and per-tensor int8 activations.
``dynamic_quant_cnn``: a conv net dynamically quantized (DynamicQuantizeLinear -> ConvInteger /
MatMulInteger). Calibration uses a fixed random batch, so the models are deterministic.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .common import DEFAULT_OPSET, Builder


def _float_resnet_block(seed: int, image: int, num_classes: int, opset: int) -> onnx.ModelProto:
    b = Builder("qdq_resnet", seed, opset)
    x = b.relu(b.conv(b.input([1, 3, image, image]), 3, 16, 3, bias=True))
    cin = 16
    for cout, stride in ((16, 1), (32, 2)):  # an identity block, then a downsampling one
        h = b.relu(b.conv(x, cin, cout, 3, stride=stride, bias=True))
        h = b.conv(h, cout, cout, 3, bias=True, weight=b.he([cout, cout, 3, 3], cout * 9, 0.5))
        short = x if stride == 1 else b.conv(x, cin, cout, 1, stride=stride, pad=0, bias=True)
        x = b.relu(b.add(short, h))
        cin = cout
    return b.build([b.gemm(b.flatten(b.gap(x)), 32, num_classes)], ["output"])


def _quantize(m: onnx.ModelProto, image: int, static: bool, seed: int) -> onnx.ModelProto:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    class Batches(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed + 1)
            self.batches = iter([{"input": rng.standard_normal([1, 3, image, image]).astype(np.float32)}
                                 for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice on pre-processing
    try:
        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d) / "float.onnx", Path(d) / "quant.onnx"
            onnx.save(m, src)
            if static:
                quantize_static(src, dst, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            else:
                quantize_dynamic(src, dst, weight_type=QuantType.QUInt8,
                                 op_types_to_quantize=["Conv", "MatMul", "Gemm"])
            return onnx.load(dst)
    finally:
        logging.getLogger().setLevel(level)


def qdq_resnet(image: int = 16, num_classes: int = 10, seed: int = 0, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    return _quantize(_float_resnet_block(seed, image, num_classes, opset), image, True, seed)


def dynamic_quant_cnn(image: int = 16, num_classes: int = 10, seed: int = 0,
                      opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    b = Builder("dynamic_quant_cnn", seed, opset)
    x = b.relu(b.conv(b.input([1, 3, image, image]), 3, 16, 3, bias=True))
    x = b.maxpool(b.relu(b.conv(x, 16, 32, 3, bias=True)), 2, 2)
    x = b.relu(b.linear(b.flatten(b.gap(x)), 32, 24, "fc1"))
    m = b.build([b.node("MatMul", [x, b.const(b.he([24, num_classes], 24, 1.0), "fc2.weight")])], ["output"])
    return _quantize(m, image, False, seed)

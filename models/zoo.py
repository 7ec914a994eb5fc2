"""Registry of the model builders: ``build(name, **kw) -> onnx.ModelProto``."""

from __future__ import annotations

from typing import Callable

import onnx

from .conv1d import conv1d_audio
from .flatten_gemm import flatten_gemm
from .groupnorm import groupnorm_net, groupnorm_net_instancenorm
from .mobilenet import mobilenetv2, mobilenetv3
from .pixel_shuffle import pixel_shuffle_sr
from .quantized import dynamic_quant_cnn, qdq_resnet
from .recurrent import crnn_unrolled, rnn_audio
from .resnet import resnet18, resnet18_opset11, resnet50, resnet50_full, resnet_scaled
from .shufflenet import shufflenetv2
from .unet import unet
from .vit import vit
from .yolov8 import yolov8

BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet50_full": resnet50_full,  # real size (25.6M params, 224x224): benchmarks only
    "mobilenetv2": mobilenetv2,
    "mobilenetv3": mobilenetv3,
    "yolov8": yolov8,
    "unet": unet,
    "vit": vit,
    "groupnorm_net": groupnorm_net,
    "groupnorm_net_instancenorm": groupnorm_net_instancenorm,
    "conv1d_audio": conv1d_audio,
    "flatten_gemm": flatten_gemm,
    "resnet18_opset11": resnet18_opset11,
    "rnn_audio": rnn_audio,
    "crnn_unrolled": crnn_unrolled,
    "qdq_resnet": qdq_resnet,
    "dynamic_quant_cnn": dynamic_quant_cnn,
    "shufflenetv2": shufflenetv2,
    "pixel_shuffle_sr": pixel_shuffle_sr,
    "pixel_shuffle_sr_dcr": lambda **kw: pixel_shuffle_sr(mode="DCR", **kw),
}

# Keys too big for quick tests and ``build all`` defaults.
LARGE = frozenset({"resnet50_full"})
# Op families beyond the numpy reference evaluator (models/reference.py) or float32-only weights:
# recurrent ops, quantized graphs, pixel shuffle. Checked with ONNX Runtime alone.
BEYOND_REFERENCE = frozenset({"rnn_audio", "crnn_unrolled", "qdq_resnet", "dynamic_quant_cnn",
                              "pixel_shuffle_sr", "pixel_shuffle_sr_dcr"})


def build(name: str, **kw) -> onnx.ModelProto:
    try:
        fn = BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(BUILDERS)}") from None
    return fn(**kw)


__all__ = ["BEYOND_REFERENCE", "BUILDERS", "LARGE", "build", "resnet_scaled"]

"""A CRNN-style text-line recognizer exported with a dynamic width, as OCR models come.

Input [1, 1, 32, width]: conv/BN/ReLU stages with pooling bring the height to 1 (the width to
width/4), the column features run through a per-timestep MLP to class scores [1, width/4, classes].
The width is symbolic ("width") or, as some exporters write it, the dim value -1.
"""

from __future__ import annotations

import onnx

from .common import DEFAULT_OPSET, Builder


def text_recognizer(classes: int = 37, seed: int = 0, opset: int = DEFAULT_OPSET, width: str | int = "width",
                    metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    b = Builder("text_recognizer", seed, opset)
    x = b.input([1, 1, 32, 64])  # built at width 64, then the width is opened below
    x = b.conv_bn_act(x, 1, 32, 3)
    x = b.maxpool(x, 2, 2)                                  # 16 x w/2
    x = b.conv_bn_act(x, 32, 64, 3)
    x = b.maxpool(x, 2, 2)                                  # 8 x w/4
    x = b.conv_bn_act(x, 64, 96, 3)
    x = b.conv_bn_act(x, 96, 96, 3, group=96)               # depthwise
    x = b.reduce_mean(x, [2], keepdims=0)                   # [1, 96, w/4]: height pooled away
    x = b.transpose(x, [0, 2, 1])                           # [1, w/4, 96]: one feature row per column
    x = b.relu(b.linear(x, 96, 128, prefix="mlp"))
    m = b.build([b.linear(x, 128, classes, prefix="head")], ["logits"])
    dim = m.graph.input[0].type.tensor_type.shape.dim[3]
    if isinstance(width, str):
        dim.dim_param = width
    else:
        dim.dim_value = width
    out = m.graph.output[0].type.tensor_type.shape.dim[1]
    out.Clear()
    if isinstance(width, str):
        out.dim_param = "steps"
    m.doc_string = "text recognizer: greyscale lines 32 px high, any width"
    for key, value in (metadata or {}).items():
        m.metadata_props.add(key=key, value=value)
    return m

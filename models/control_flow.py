"""Small deterministic models with If / Loop / Scan bodies that channels flow through.

- `if_conv_paths`: conv stem, then an If choosing between two conv paths (3x3 + ReLU, or 1x1 with a
  per-channel scale kept inside the branch), reading the stem's output and the weights from the
  enclosing graph; a 1x1 conv head after it. `softmax_branch=True` makes the else branch normalize
  over the channels, which no pruning can follow.
- `loop_residual`: conv stem, then a Loop applying s <- s + ReLU(conv3x3(s)) `steps` times (the
  state keeps its channels), also stacking each step's channel means as a scan output; conv head.
- `scan_state`: a projection to H channels, then a Scan over time with state s <- tanh(s R + u_t)
  (a channel-wise recurrent state), its outputs stacked on the time axis; a linear head.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
vi = helper.make_tensor_value_info
n = helper.make_node


def _w(rng, name, *shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, name, inputs, outputs, inits):
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def if_conv_paths(size: int = 8, take_then_when_positive: bool = True, softmax_branch: bool = False):
    rng = np.random.default_rng(21)
    c0, c1 = 8, 16
    then_g = helper.make_graph(
        [n("Conv", ["h", "pa.w", "pa.b"], ["ta"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         n("Relu", ["ta"], ["t_out"])],
        "then", [], [vi("t_out", TensorProto.FLOAT, [1, c1, size, size])])
    else_nodes = [n("Conv", ["h", "pb.w"], ["eb"], kernel_shape=[1, 1]),
                  n("Mul", ["eb", "pb.scale"], ["e_out"])]
    if softmax_branch:
        else_nodes[1:] = [n("Mul", ["eb", "pb.scale"], ["em"]), n("Softmax", ["em"], ["e_out"], axis=1)]
    else_g = helper.make_graph(else_nodes, "else", [], [vi("e_out", TensorProto.FLOAT, [1, c1, size, size])],
                               [_w(rng, "pb.scale", 1, c1, 1, 1)])  # a weight of the branch itself
    nodes = [
        n("Conv", ["x", "c0.w", "c0.b"], ["h0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["h0"], ["h"]),
        n("ReduceMean", ["x"], ["m"], keepdims=0),
        n("Greater" if take_then_when_positive else "Less", ["m", "zero"], ["cond"]),
        n("If", ["cond"], ["b"], then_branch=then_g, else_branch=else_g),
        n("Conv", ["b", "head.w"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = [_w(rng, "c0.w", c0, 3, 3, 3), _w(rng, "c0.b", c0), _w(rng, "pa.w", c1, c0, 3, 3),
             _w(rng, "pa.b", c1), _w(rng, "pb.w", c1, c0, 1, 1), _w(rng, "head.w", 4, c1, 1, 1),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    return _model(nodes, "if_conv_paths", [vi("x", TensorProto.FLOAT, [1, 3, size, size])],
                  [vi("y", TensorProto.FLOAT, [1, 4, size, size])], inits)


def loop_residual(size: int = 8, steps: int = 3):
    rng = np.random.default_rng(22)
    c = 8
    body = helper.make_graph(
        [n("Identity", ["cond_in"], ["cond_out"]),
         n("Conv", ["s", "step.w", "step.b"], ["u"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         n("Relu", ["u"], ["r"]),
         n("Add", ["s", "r"], ["s_out"]),
         n("ReduceMean", ["s_out"], ["mean"], axes=[2, 3], keepdims=0)],
        "step",
        [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []),
         vi("s", TensorProto.FLOAT, [1, c, size, size])],
        [vi("cond_out", TensorProto.BOOL, []), vi("s_out", TensorProto.FLOAT, [1, c, size, size]),
         vi("mean", TensorProto.FLOAT, [1, c])])
    nodes = [
        n("Conv", ["x", "c0.w", "c0.b"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Loop", ["steps", "true", "h"], ["h_final", "means"], body=body),  # (M, cond, initial state)
        n("Conv", ["h_final", "head.w"], ["y"], kernel_shape=[1, 1]),
        n("Transpose", ["means"], ["means_t"], perm=[1, 0, 2]),
        n("Flatten", ["means_t"], ["flat"], axis=1),
        n("Gemm", ["flat", "fc.w"], ["z"], transB=1),
    ]
    inits = [_w(rng, "c0.w", c, 3, 3, 3), _w(rng, "c0.b", c), _w(rng, "step.w", c, c, 3, 3, scale=0.1),
             _w(rng, "step.b", c), _w(rng, "head.w", 4, c, 1, 1), _w(rng, "fc.w", 5, steps * c),
             numpy_helper.from_array(np.array(steps, np.int64), "steps"),
             numpy_helper.from_array(np.array(True), "true")]
    return _model(nodes, "loop_residual", [vi("x", TensorProto.FLOAT, [1, 3, size, size])],
                  [vi("y", TensorProto.FLOAT, [1, 4, size, size]), vi("z", TensorProto.FLOAT, [1, 5])], inits)


def scan_state(time: int = 6, features: int = 5, hidden: int = 12):
    rng = np.random.default_rng(23)
    body = helper.make_graph(
        [n("MatMul", ["s", "rec.w"], ["sr"]),
         n("Add", ["sr", "u_t"], ["pre"]),
         n("Tanh", ["pre"], ["s_out"]),
         n("Identity", ["s_out"], ["y_t"])],
        "cell",
        [vi("s", TensorProto.FLOAT, [1, hidden]), vi("u_t", TensorProto.FLOAT, [1, hidden])],
        [vi("s_out", TensorProto.FLOAT, [1, hidden]), vi("y_t", TensorProto.FLOAT, [1, hidden])])
    nodes = [
        n("MatMul", ["x", "in.w"], ["u0"]),
        n("Add", ["u0", "in.b"], ["u"]),
        n("Scan", ["s0", "u"], ["s_last", "ys"], body=body, num_scan_inputs=1,
          scan_input_axes=[1], scan_output_axes=[1]),
        n("MatMul", ["ys", "out.w"], ["y"]),
        n("MatMul", ["s_last", "last.w"], ["z"]),
    ]
    inits = [_w(rng, "in.w", features, hidden), _w(rng, "in.b", hidden), _w(rng, "rec.w", hidden, hidden),
             numpy_helper.from_array(np.zeros((1, hidden), np.float32), "s0"),
             _w(rng, "out.w", hidden, 3), _w(rng, "last.w", hidden, 2)]
    return _model(nodes, "scan_state", [vi("x", TensorProto.FLOAT, [1, time, features])],
                  [vi("y", TensorProto.FLOAT, [1, time, 3]), vi("z", TensorProto.FLOAT, [1, 2])], inits)

"""A shifted-window attention block as torchvision's Swin exports it, small: every shape argument
computed at run time from `Shape` of the activations.

    x [1, H, W, C] -> MatMul (C -> D) -> roll along H (Slice + Concat) -> Pad H, W up to a multiple
    of the window (pads from Shape -> Mod) -> window partition (Reshape to (B, H/w, w, W/w, w, D),
    targets from Shape -> Gather -> Div -> Concat) -> Transpose -> Reshape (-1, w*w, D) ->
    q/k projections, Softmax(q k^T) v -> window merge (Reshape, Transpose, Reshape) -> Slice back to
    H, W (bounds from Shape) -> roll back -> MatMul (D -> C) + x

`dynamic="hw"` leaves H and W open (the model runs at any size), `dynamic="batch"` the batch only, as
exporters with dynamic axes do. `torch_pads=True` computes the pads as torch.onnx writes F.pad with
run-time sizes: a list in torch's order, filled up with ConstantOfShape, reshaped to (-1, 2), reversed
by a Slice, transposed and flattened.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WINDOW = 4


def window_attention(size: int = 8, channels: int = 16, hidden: int = 32, shift: int = 2, seed: int = 0,
                     dynamic: str = "", torch_pads: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, value, dtype=np.int64):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def weight(name, shape):
        return const(name, rng.standard_normal(shape) / np.sqrt(shape[0]), np.float32)

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def dim(t, axis):  # a scalar read from Shape(t), unsqueezed to [1]
        s = node("Shape", [t], f"{t}_shape{axis}")
        g = node("Gather", [s, const(f"{t}_ax{axis}", axis)], f"{t}_dim{axis}", axis=0)
        return node("Unsqueeze", [g, const(f"{t}_uq{axis}", [0])], f"{t}_d{axis}")

    def cat(name, parts):
        return node("Concat", parts, name, axis=0)

    w = const("w", [WINDOW])
    h = node("Add", [node("MatMul", ["x", weight("w_in", [channels, hidden])], "proj_in"),
                     const("b_in", rng.standard_normal(hidden), np.float32)], "h")
    # roll along H by `shift` (torch.roll exports as two Slices and a Concat)
    tail = node("Slice", [h, const("r_s0", [-shift]), const("r_e0", [2 ** 62]), const("r_ax", [1])], "roll_tail")
    head = node("Slice", [h, const("r_s1", [0]), const("r_e1", [-shift]), const("r_ax1", [1])], "roll_head")
    rolled = node("Concat", [tail, head], "rolled", axis=1)
    # pad H and W up to a multiple of the window: pad = (w - n % w) % w
    pad_h = node("Mod", [node("Sub", [w, node("Mod", [dim(rolled, 1), w], "mh")], "sh"), w], "pad_h")
    pad_w = node("Mod", [node("Sub", [w, node("Mod", [dim(rolled, 2), w], "mw")], "sw"), w], "pad_w")
    if torch_pads:  # F.pad's list (last axis first, begin/end pairs), as torch.onnx writes it for ONNX
        listed = cat("pad_list", [const("zc", [0, 0, 0]), pad_w, const("zw", [0]), pad_h])
        fill = node("ConstantOfShape", [node("Sub", [const("eight", [8]), dim(listed, 0)], "n_fill")], "pad_fill",
                    value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]))
        table = node("Reshape", [cat("pad_all", [listed, fill]), const("pairs", [-1, 2])], "pad_table")
        flipped = node("Slice", [table, const("f_s", [-1]), const("f_e", [-2 ** 63 + 1]), const("f_ax", [0]),
                                 const("f_st", [-1])], "pad_flipped")
        pads = node("Reshape", [node("Transpose", [flipped], "pad_t", perm=[1, 0]), const("flat", [-1])], "pads")
    else:
        pads = cat("pads", [const("z4", [0, 0, 0, 0, 0]), pad_h, pad_w, const("z1", [0])])
    padded = node("Pad", [rolled, pads], "padded")
    # window partition with computed targets
    b, ph, pw, c = dim(padded, 0), dim(padded, 1), dim(padded, 2), dim(padded, 3)
    nh, nw = node("Div", [ph, w], "nh"), node("Div", [pw, w], "nw")
    split = node("Reshape", [padded, cat("split_shape", [b, nh, w, nw, w, c])], "split")
    moved = node("Transpose", [split], "moved", perm=[0, 1, 3, 2, 4, 5])
    windows = node("Reshape", [moved, cat("win_shape", [const("m1", [-1]), const("ww", [WINDOW * WINDOW]), c])],
                   "windows")
    q = node("MatMul", [windows, weight("w_q", [hidden, hidden])], "q")
    k = node("MatMul", [windows, weight("w_k", [hidden, hidden])], "k")
    attn = node("Softmax", [node("MatMul", [q, node("Transpose", [k], "kt", perm=[0, 2, 1])], "scores")], "attn",
                axis=-1)
    mixed = node("MatMul", [attn, windows], "mixed")
    # merge the windows back (computed targets again) and cut the padding off (computed bounds)
    back = node("Reshape", [mixed, cat("back_shape", [b, nh, nw, w, w, c])], "back")
    unmoved = node("Transpose", [back], "unmoved", perm=[0, 1, 3, 2, 4, 5])
    merged = node("Reshape", [unmoved, cat("merge_shape", [b, ph, pw, c])], "merged")
    ends = cat("crop_ends", [dim(h, 1), dim(h, 2)])
    cropped = node("Slice", [merged, const("crop_starts", [0, 0]), ends, const("crop_axes", [1, 2])], "cropped")
    tail2 = node("Slice", [cropped, const("u_s0", [shift]), const("u_e0", [2 ** 62]), const("u_ax", [1])], "unroll_tail")
    head2 = node("Slice", [cropped, const("u_s1", [0]), const("u_e1", [shift]), const("u_ax1", [1])], "unroll_head")
    unrolled = node("Concat", [tail2, head2], "unrolled", axis=1)
    out = node("MatMul", [unrolled, weight("w_out", [hidden, channels])], "proj_out")
    nodes.append(helper.make_node("Add", [out, "x"], ["y"], name="residual"))
    assert dynamic in ("", "hw", "batch"), dynamic
    hw = ["H", "W"] if dynamic == "hw" else [size, size]
    batch = "N" if dynamic == "batch" else 1
    graph = helper.make_graph(nodes, "window_attention",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *hw, channels])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, *hw, channels])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="prunec.models")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model

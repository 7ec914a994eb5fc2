"""Fast zero-trial CPU kernels (x86 and aarch64): legalizations to our own computes, and schedule
rules for them.

Untuned TVM lowers conv2d to naive loop nests, 30-80x slower than ONNX Runtime. Here:

* conv2d (groups=1) is legalized to our own TE compute (compute/conv.py) that reads the weights
  pre-packed as [OC/ob, IC, KH, KW, ob] (packed at compile time by FoldConstant). The schedule
  (schedule/conv.py) keeps an output tile of reg_n output columns x ob output channels in
  registers, vectorizes over the ob channels, runs the reduction outside the tile, writes the
  tile back with the fused bias/ReLU/residual epilogue, and parallelizes the outer (channel
  block, row) loops. Convs with a short reduction and unit stride over wide rows instead keep a
  tile of a few channels x whole vectors of output columns.
* 3x3 stride-1 convs where compute.winograd.choose_tile expects a gain are Winograd
  F(4x4|2x2, 3x3) instead (compute/winograd.py, schedule/winograd.py).
* depthwise conv2d and max pools are vectorized along the output row (compute/depthwise.py,
  compute/pooling.py, schedule/depthwise.py); on NCHW{b}c (layout.py) one vector per pixel.
* every other fused function gets the generic rule (schedule/rest.py): matrix-vector heads
  streamed (gemv.py), reductions with a vector tile in registers, spatial blocks vectorized
  (elementwise.py), innermost concats cut per source (concat.py); exp/sigmoid/softmax are
  vectorizable (compute/fastmath.py), erf/GELU too (compute/erf.py).
* products of several rows by a constant weight use a packed-panel register tile
  (compute/matmul.py, schedule/matmul.py); products of two activations (attention's Q K^T,
  P V) the same tile with the panels packed per call (compute/bmm.py, schedule/bmm.py).
* last-axis softmax (attention scores) is a row kernel: every pass of a row while it is in L1
  (compute/softmax.py, schedule/softmax.py).
* channel splits and concats become views (zero_copy.py).

Layering, bottom up: facts (target facts) -> compute/ (TE) -> intrinsics, rule ->
schedule/common -> schedule/<family> -> rules (the list and the dispatcher), legalize (the
LegalizeOps map). No module imports one above it (tests/test_backend_layers.py checks).

Every rule is tried in rules.RULES order; a function whose rule fails keeps TVM's default
lowering (correct, slower) and is logged at WARNING. Tuning records, when present, are applied
before and take precedence.
"""

from .rules import RULES, schedule_module, schedule_pass, schedule_task

__all__ = ["RULES", "schedule_module", "schedule_pass", "schedule_task"]

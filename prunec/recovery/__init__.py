"""Accuracy recovery without the training code: unlabeled calibration inputs in, a pruned model that
stays close to the original out. A one-way flow; each module imports only modules above it here:

  data         calibration samples (.npz, image folders, arrays, iterables), validated; fit/check split
  stream       one ONNX Runtime session streaming batches with chosen intermediate tensors exposed;
               relative output error against a reference model
  statistics   per-channel activation moments and per-layer Gram matrices, accumulated in float64
  scores       the criterion `auto` picks, and the evidence a criterion declares (prunec.criteria)
  refit        least-squares reconstruction of the layers that read pruned channels
  sensitivity  what pruning costs: per-group probe curves, prune+refit measurements of whole plans
  allocation   a MACs budget spread over groups by measured cost; floors for stem, head, tiny groups

The prune pass (passes/prune.py) runs them per round: scores -> allocation -> shrink -> refit, and
the reconstruct pass (passes/reconstruct.py) wraps `refit`. Nothing here imports prunec.passes.
"""

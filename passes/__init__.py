"""Rewriting passes (installed as prunec.passes): each takes a Model and returns a new Model plus a
record of what it did (passes/base.py). The pipeline (prunec/pipeline.py) is a list of them."""
from .base import Pass, PassResult, run_passes
from .fold_bn import FoldBatchNorm, FoldResult
from .shrink import Shrink, ShrinkResult, shrink
from .reconstruct import Reconstruct, ReconstructResult
from .prune import Prune, PruneResult
from .sparsify import Sparsify, SparsityOptions, SparsityResult

__all__ = ["FoldBatchNorm", "FoldResult", "Pass", "PassResult", "Prune", "PruneResult", "Reconstruct",
           "ReconstructResult", "Shrink", "ShrinkResult", "Sparsify", "SparsityOptions", "SparsityResult", "run_passes",
           "shrink"]

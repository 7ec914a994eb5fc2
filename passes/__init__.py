"""Rewriting passes (installed as prunec.passes). Each takes a model and returns a new one."""
from .shrink import shrink
from .fold_bn import fold_batchnorm

__all__ = ["shrink", "fold_batchnorm"]

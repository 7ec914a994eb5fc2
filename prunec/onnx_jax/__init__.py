"""An ONNX graph as a differentiable JAX function (for distillation): graph.py runs it, the other
modules register one op family each (registry.py holds the registry)."""
from .graph import TRAINABLE_SLOTS, JaxGraph, require_jax

__all__ = ["JaxGraph", "TRAINABLE_SLOTS", "require_jax"]

"""Deterministic builders of small real-architecture ONNX models (onnx.helper + numpy only).

Use ``models.zoo.build(name)`` or ``python -m models.build NAME -o OUTDIR``.
"""

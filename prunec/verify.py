"""Nothing unverified is written: checker, an ONNX Runtime run, unchanged output shapes."""
from __future__ import annotations

import numpy as np
import onnx

from .errors import PrunecError
from .graph import Model
from .runtime import random_inputs, run_model


def verify(original: Model, pruned: Model, threads: int | None = None) -> dict:
    """Raise PrunecError if the pruned model is not a valid drop-in; else return what was checked."""
    proto = pruned.to_proto()
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise PrunecError(f"pruned model fails onnx.checker: {str(exc).splitlines()[0][:300]}") from None
    orig_proto = original.to_proto()
    feeds = random_inputs(orig_proto, original.input_shapes, seed=1)
    try:
        ref = run_model(orig_proto, feeds, threads=threads)
    except Exception as exc:
        raise PrunecError(f"ONNX Runtime cannot run the input model: {str(exc).splitlines()[0][:300]}") from None
    try:
        out = run_model(proto, feeds, threads=threads)
    except Exception as exc:
        raise PrunecError(f"ONNX Runtime cannot run the pruned model: {str(exc).splitlines()[0][:300]}") from None
    names = [o.name for o in proto.graph.output]
    shapes = {}
    for name, a, b in zip(names, ref, out):
        if np.shape(a) != np.shape(b):
            raise PrunecError(f"pruned model changes the shape of output {name!r}: {np.shape(a)} -> {np.shape(b)}")
        shapes[name] = list(np.shape(a))
    diffs = {}
    for name, a, b in zip(names, ref, out):
        if np.issubdtype(np.asarray(a).dtype, np.floating):
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            err = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
            scale = float(np.max(np.abs(a64))) if a64.size else 0.0
            diffs[name] = {"max_abs": err, "max_rel": err / scale if scale > 0 else err}
    return {
        "checker": "passed",
        "onnxruntime": "ran",
        "output_shapes": "unchanged",
        "outputs": shapes,
        # informational: pruning changes numbers; this says by how much on a random input
        "output_difference_random_input": diffs,
        "ok": True,
    }

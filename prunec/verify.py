"""Nothing unverified is written: checker, an ONNX Runtime run, unchanged output shapes."""
from __future__ import annotations

import numpy as np
import onnx

from .errors import PrunecError, one_line
from .graph import Model
from .runtime import random_inputs, run_model


def verify(original: Model, pruned: Model, threads: int | None = None) -> dict:
    """Raise PrunecError if the pruned model is not a valid drop-in; else return what was checked."""
    proto = pruned.to_proto()
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise PrunecError(f"pruned model fails onnx.checker: {one_line(exc)}") from None
    orig_proto = original.to_proto()
    feeds = random_inputs(orig_proto, original.input_shapes, seed=1)
    try:
        ref = run_model(orig_proto, feeds, threads=threads)
    except Exception as exc:
        raise PrunecError(f"ONNX Runtime cannot run the input model: {one_line(exc)}") from None
    try:
        out = run_model(proto, feeds, threads=threads)
    except Exception as exc:
        raise PrunecError(f"ONNX Runtime cannot run the pruned model: {one_line(exc)}") from None
    names = [o.name for o in proto.graph.output]
    shapes = {}
    for name, a, b in zip(names, ref, out):
        if np.shape(a) != np.shape(b):
            raise PrunecError(f"pruned model changes the shape of output {name!r}: {np.shape(a)} -> {np.shape(b)}")
        shapes[name] = list(np.shape(a))
    diffs = {}
    for name, a, b in zip(names, ref, out):
        if np.issubdtype(np.asarray(a).dtype, np.floating):
            err, scale = _max_abs_diff(np.asarray(a), np.asarray(b))
            diffs[name] = {"max_abs": err, "max_rel": err / scale if scale > 0 else err}
    other = _check_other_size(original, orig_proto, proto, threads)
    return {
        "checker": "passed",
        "onnxruntime": "ran",
        "output_shapes": "unchanged",
        "outputs": shapes,
        **({"other_input_size": other} if other else {}),
        # informational: pruning changes numbers; this says by how much on a random input
        "output_difference_random_input": diffs,
        "ok": True,
    }


def _max_abs_diff(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float]:
    """max |a - b| and max |a| in float64, a chunk at a time (outputs can be hundreds of MB)."""
    a, b = a.reshape(-1), b.reshape(-1)
    err = scale = 0.0
    for i in range(0, a.size, chunk):
        x, y = a[i:i + chunk].astype(np.float64), b[i:i + chunk].astype(np.float64)
        err = max(err, float(np.max(np.abs(x - y))))
        scale = max(scale, float(np.max(np.abs(x))))
    return err, scale


def other_input_shapes(model: Model) -> dict[str, list[int]]:
    """The analysed input shapes with every dynamic dim changed: batch dims to 2, the others +32
    (a multiple of 32 stays one: detector and recognizer strides)."""
    shapes = {k: list(v) for k, v in model.input_shapes.items()}
    for name, dims in model.dynamic_dims.items():
        for axis in dims:
            shapes[name][axis] = 2 if axis == 0 else shapes[name][axis] + 32
    return shapes


def _check_other_size(original: Model, orig_proto, proto, threads) -> dict | None:
    """A model exported with dynamic dims must stay a drop-in at sizes other than the analysed one:
    run both at another size and compare output shapes."""
    if not original.dynamic_dims:
        return None
    shapes = other_input_shapes(original)
    feeds = random_inputs(orig_proto, shapes, seed=2)
    try:
        ref = run_model(orig_proto, feeds, threads=threads)
    except Exception:  # the input model itself is not dynamic in practice: nothing to keep
        return {"input_shapes": shapes, "checked": False, "why": "the input model does not run at this size"}
    try:
        out = run_model(proto, feeds, threads=threads)
    except Exception as exc:
        raise PrunecError(f"the pruned model no longer runs at input shapes {shapes} (the input model does): "
                          f"{str(exc).splitlines()[0][:300]}") from None
    names = [o.name for o in proto.graph.output]
    for name, a, b in zip(names, ref, out):
        if np.shape(a) != np.shape(b):
            raise PrunecError(f"at input shapes {shapes} the pruned model changes the shape of output {name!r}: "
                              f"{np.shape(a)} -> {np.shape(b)}")
    return {"input_shapes": shapes, "checked": True, "outputs": {n: list(np.shape(a)) for n, a in zip(names, ref)}}

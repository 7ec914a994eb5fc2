"""ONNX Runtime helpers: sessions, random feeds, runs with intermediate tensors exposed."""
from __future__ import annotations

import numpy as np
import onnx



def session(proto: onnx.ModelProto, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # Basic optimizations only: extended fusions can rename intermediate tensors we ask for.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    init = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in init]


def input_dtype(vi: onnx.ValueInfoProto) -> np.dtype:
    return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)


def random_array(shape, dtype, rng: np.random.Generator) -> np.ndarray:
    """A test input: standard normal floats, 0/1 booleans, integers in [0, 4) (small enough to be a
    valid index or count for most integer inputs)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 4, shape).astype(dtype)


def random_inputs(proto: onnx.ModelProto, input_shapes: dict[str, list[int]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in graph_inputs(proto):
        shape = input_shapes.get(vi.name)
        if shape is None:
            dims = vi.type.tensor_type.shape.dim
            shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims]
        feeds[vi.name] = random_array(shape, input_dtype(vi), rng)
    return feeds


def run_model(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str] | None = None,
              threads: int | None = None) -> list[np.ndarray]:
    sess = session(proto, threads)
    return sess.run(outputs, feeds)


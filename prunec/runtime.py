"""ONNX Runtime helpers: sessions, random feeds, runs with intermediate tensors exposed."""
from __future__ import annotations

import functools

import numpy as np
import onnx

from .errors import PrunecError, one_line


def max_run_bytes() -> int:
    """What one ONNX Runtime run of a model prunec checks may allocate: half the machine's memory."""
    import os

    import psutil

    return int(os.environ.get("PRUNEC_MAX_RUN_BYTES", psutil.virtual_memory().total // 2))


@functools.lru_cache(maxsize=1)
def _bounded_allocator() -> bool:
    """A process-wide CPU arena with a ceiling, for the one-shot runs of models read from outside
    (verify, shape probes): a Range(0, 1e10) in a 500-byte model then fails with an error instead
    of taking the machine's memory. Registered once; False where this runtime cannot do it."""
    import onnxruntime as ort

    try:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(max_run_bytes(), 1, -1, -1))
        return True
    except Exception:
        return False


def session(proto: onnx.ModelProto, threads: int | None = None, bounded: bool = False, optimize: bool = False):
    """`optimize`: all of ONNX Runtime's graph optimizations, for a session asked only for graph outputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if bounded and _bounded_allocator():
        opts.add_session_config_entry("session.use_env_allocators", "1")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # Basic optimizations only: extended fusions can rename intermediate tensors we ask for.
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
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
    if dtype == np.float32 and int(np.prod(shape)) > 1 << 24:
        return rng.standard_normal(shape, dtype=np.float32)  # a big input: no float64 copy of it
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
    import onnxruntime as ort

    sess = session(proto, threads, bounded=True)
    run_opts = ort.RunOptions()
    # give the arena's memory back after the run: nothing else runs on this session
    run_opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    try:
        return sess.run(outputs, feeds, run_opts)
    except Exception as exc:
        if "Available memory of" in str(exc):
            raise PrunecError(f"running the model needs more memory than prunec allows ({max_run_bytes():,} "
                              f"bytes, PRUNEC_MAX_RUN_BYTES): {one_line(exc, 400)}") from None
        raise


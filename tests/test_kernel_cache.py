"""Compiled kernels cached by workload (prunec/backend/kernel_cache.py): a second model reuses
the first one's kernels, a recompile compiles nothing, and the library computes what ONNX
Runtime does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")


def _convs(last: int, seed: int = 0) -> onnx.ModelProto:
    """Two 16->16 3x3 conv+ReLU blocks (the same kernel twice) and a 16->`last` 1x1 conv."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i, (ci, co, k) in enumerate(((16, 16, 3), (16, 16, 3), (16, last, 1))):
        w = numpy_helper.from_array((rng.standard_normal((co, ci, k, k)) * 0.2)
                                    .astype(np.float32), f"w{i}")
        b = numpy_helper.from_array(rng.standard_normal(co).astype(np.float32), f"b{i}")
        inits += [w, b]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"],
                                      pads=[k // 2] * 4))
        x = f"c{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 24, 24])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, last, 24, 24])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(compiled, x):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_kernels_shared_within_and_across_models_and_runs(tmp_path):
    import onnxruntime as ort

    import prunec

    db = tmp_path / "db"
    a, b = _convs(8), _convs(4, seed=1)
    x = np.random.default_rng(2).standard_normal((1, 16, 24, 24)).astype(np.float32)

    first = prunec.compile(a, "x86", threads=1, tuning_db=str(db))
    k = first.stats["kernels"]
    assert k["compiled"] == k["distinct"] and k["cached"] == 0
    assert sorted(p.name for p in (db / "kernels").glob("*.o")) == \
        sorted(p.name for p in (db / "kernels").iterdir())  # no temporary file left
    ref = ort.InferenceSession(a.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(_run(first, x), ref, rtol=1e-4, atol=1e-4)

    other = prunec.compile(b, "x86", threads=1, tuning_db=str(db))
    k = other.stats["kernels"]
    assert 0 < k["cached"] and 0 < k["compiled"] < k["distinct"]  # the 1x1 conv is new
    ref_b = ort.InferenceSession(b.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(_run(other, x), ref_b, rtol=1e-4, atol=1e-4)

    again = prunec.compile(a, "x86", threads=1, tuning_db=str(db))
    assert again.stats["kernels"]["compiled"] == 0
    assert again.stats["kernels"]["cached"] == again.stats["kernels"]["distinct"]
    np.testing.assert_allclose(_run(again, x), ref, rtol=1e-4, atol=1e-4)
    lib = again.export(tmp_path / "a.so")  # the deployable library links the cached kernels
    from prunec.backend import measure as M

    _, out = M.tvm_sampler(lib, again.signature, {"x": x}, min_repeat_ms=1)
    np.testing.assert_allclose(out[0], ref, rtol=1e-4, atol=1e-4)


def test_cache_off_compiles_the_whole_module(tmp_path, monkeypatch):
    import prunec

    monkeypatch.setenv("PRUNEC_KERNEL_CACHE", "0")
    compiled = prunec.compile(_convs(8), "x86", threads=1, tuning_db=str(tmp_path / "db"))
    assert "kernels" not in compiled.stats
    assert "tvm_compile" in compiled.stats["compile_phases"]
    assert not (tmp_path / "db" / "kernels").exists()


def test_an_unusable_cache_folder_compiles_without_it(tmp_path):
    import prunec

    (tmp_path / "db").write_text("a file where the tuning folder would be")
    compiled = prunec.compile(_convs(8), "x86", threads=1, tuning_db=str(tmp_path / "db"))
    assert "kernels" not in compiled.stats
    assert "tvm_compile" in compiled.stats["compile_phases"]


def test_content_names_ignore_the_importers_numbering():
    from prunec.backend.kernel_cache import _readable

    assert _readable("fused_prunec_conv2d12_add11_sigmoid8_multiply8") == \
        _readable("fused_prunec_conv2d_add_sigmoid_multiply") == \
        "fused_prunec_conv2d_add_sigmoid_multiply"
    assert _readable("concatenate17") == "concatenate"

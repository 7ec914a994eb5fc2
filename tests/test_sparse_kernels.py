"""The BSR kernel and the Relax rewrite: outputs match ONNX Runtime, the choice is recorded per layer."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import prunec
from prunec.backend import sparse as S
from prunec.passes.sparsify import SparsityOptions, sparsify
from prunec.runtime import run_model
from prunec.sparsity import Pattern, make_mask

tvm = pytest.importorskip("tvm")


def x86_target():
    from prunec.backend import tvm_target

    return tvm_target("x86", threads=1)


@pytest.mark.parametrize("r,c", [(1, 8), (8, 1), (4, 4), (1, 1)])
def test_to_bsr_roundtrip_and_choose_block(r, c):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 48)).astype(np.float32)
    w = np.where(make_mask(np.abs(w), Pattern("block", rows=r, cols=c) if r * c > 1 else Pattern("unstructured"),
                           0.75), w, 0).astype(np.float32)
    data, indices, indptr = S.to_bsr(w, r, c)
    dense = np.zeros_like(w)
    for nb in range(32 // r):
        for j in range(indptr[nb], indptr[nb + 1]):
            dense[nb * r:(nb + 1) * r, indices[j] * c:(indices[j] + 1) * c] = data[j]
    assert np.array_equal(dense, w)
    br, bc, fill = S.choose_block(w)
    assert fill <= S.FILL_SLACK and br * bc >= r * c  # the written block shape (or a larger fitting one)


@pytest.mark.parametrize("r,c,p,relu", [(1, 8, 70, True), (8, 1, 33, False), (4, 4, 16, True)])
def test_bsr_kernel_matches_numpy(r, c, p, relu):
    """P not a multiple of the vector tile: the tail nest runs too."""
    rng = np.random.default_rng(1)
    n, k, batch = 32, 40, 2
    w = rng.standard_normal((n, k)).astype(np.float32)
    w = np.where(make_mask(np.abs(w), Pattern("block", rows=r, cols=c), 0.8), w, 0).astype(np.float32)
    data, indices, indptr = S.to_bsr(w, r, c)
    f = S.bsr_kernel(batch, n, k, p, r, c, len(data), 8, relu)
    lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=x86_target())
    x = rng.standard_normal((batch, k, p)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in (x, data, indices, indptr, b, np.zeros((batch, n, p), np.float32))]
    lib["main"](*args)
    ref = np.einsum("nk,bkp->bnp", w, x) + b[None, :, None]
    ref = np.maximum(ref, 0) if relu else ref
    np.testing.assert_allclose(args[-1].numpy(), ref, rtol=1e-5, atol=1e-4)


def chain_model(c: int = 32, hw: int = 8, tokens: int = 12) -> onnx.ModelProto:
    """1x1 conv + bias + ReLU, 1x1 conv without ReLU, then a token-major MatMul + bias (Gemm-like)."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32), "w0"),
             numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), "b0"),
             numpy_helper.from_array((rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((hw * hw, tokens))).astype(np.float32), "wt"),
             numpy_helper.from_array((rng.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32), "wm"),
             numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), "bm"),
             numpy_helper.from_array(np.array([1, c, hw * hw], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0"),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1"),
             helper.make_node("Reshape", ["c1", "shape"], ["flat"], name="flat"),
             helper.make_node("MatMul", ["flat", "wt"], ["tok"], name="to_tokens"),  # [1, c, tokens]
             helper.make_node("Transpose", ["tok"], ["tokT"], perm=[0, 2, 1], name="tr"),  # [1, tokens, c]
             helper.make_node("MatMul", ["tokT", "wm"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "bm"], ["y"], name="bias")]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, c])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_rewrite_matches_onnxruntime_and_records_choice(tmp_path, monkeypatch):
    from prunec.backend.build import build
    from prunec.backend.frontend import import_onnx
    from tvm import relax

    model = prunec.from_proto(chain_model())
    sp, _ = sparsify(model, SparsityOptions(sparsity=0.9, pattern="block:1x8", exclude=["to_tokens"]))
    path = tmp_path / "sp.onnx"
    prunec.save(sp, path)
    mod, _ = import_onnx(path, {"x": [1, 32, 8, 8]})
    # force the sparse kernel on every candidate (timing decides in real builds; here: correctness)
    monkeypatch.setattr(S, "_time_layer", lambda plan, target, lanes: (2.0, 1.0))
    monkeypatch.setattr(S, "_TIMINGS", {})
    target = x86_target()
    new, records = S.rewrite(mod, target, 8)
    assert [r["op"] for r in records] == ["conv2d 1x1", "conv2d 1x1", "matmul", "matmul"]
    by_op = {(r["op"], r["n"], r["k"]): r for r in records}
    assert by_op[("conv2d 1x1", 32, 32)]["kernel"] == "bsr 1x8"
    assert records[0]["epilogue"] == "bias relu" and records[1]["epilogue"] == ""
    dense_tok = [r for r in records if r["op"] == "matmul" and r["sparsity"] < S.MIN_SPARSITY]
    assert dense_tok and dense_tok[0]["kernel"] == "dense" and "sparsity" in dense_tok[0]["why"]
    assert sum(r["kernel"].startswith("bsr") for r in records) == 3
    x = np.random.default_rng(3).standard_normal((1, 32, 8, 8)).astype(np.float32)
    ref = run_model(sp.to_proto(), {"x": x})[0]
    vm = relax.VirtualMachine(build(new, target, "x86"), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x, tvm.cpu()))
    out = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_dense_kept_when_slower(tmp_path, monkeypatch):
    from prunec.backend.frontend import import_onnx

    model = prunec.from_proto(chain_model())
    sp, _ = sparsify(model, SparsityOptions(sparsity=0.9, pattern="block:8x1"))
    prunec.save(sp, tmp_path / "sp.onnx")
    mod, _ = import_onnx(tmp_path / "sp.onnx", {"x": [1, 32, 8, 8]})
    monkeypatch.setattr(S, "_time_layer", lambda plan, target, lanes: (2.0, 3.0))
    monkeypatch.setattr(S, "_TIMINGS", {})
    _, records = S.rewrite(mod, x86_target(), 8)
    assert all(r["kernel"] == "dense" and "slower" in r["why"] for r in records)

"""Low-rank factorization (passes/factorize.py): a large output layer whose outputs live near a
low-dimensional subspace becomes two thin layers that reproduce them; a layer without such structure
is left alone; pruning after it counts the MACs budget from the model as given."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import prunec
from prunec.macs import graph_macs
from prunec.passes.factorize import BASE_MACS, Factorize
from prunec.pipeline import PruneOptions, prune_model
from prunec.recovery.data import CalibData
from prunec.runtime import session
from tests.cli_helpers import run_prunec

IN, HID, OUT, LATENT = 32, 256, 2048, 12


def classifier(op: str) -> onnx.ModelProto:
    """x [N, 32] -> Gemm 256 + Tanh -> `op` 256 -> 2048 classes (the output)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.01, (HID, IN)).astype(np.float32), "w0"),
             numpy_helper.from_array(np.zeros(HID, np.float32), "b0"),
             numpy_helper.from_array(rng.normal(0, 0.1, (OUT, HID)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, OUT).astype(np.float32), "b1")]
    nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["h0"], transB=1), helper.make_node("Tanh", ["h0"], ["h"])]
    if op == "Gemm":
        nodes.append(helper.make_node("Gemm", ["h", "w1", "b1"], ["y"], transB=1))
    else:  # MatMul with an [in, out] weight, then the bias
        inits[2] = numpy_helper.from_array(numpy_helper.to_array(inits[2]).T.copy(), "w1")
        nodes += [helper.make_node("MatMul", ["h", "w1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["y"])]
    g = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, IN])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, OUT])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def inputs(n: int, seed: int, latent: int = LATENT) -> np.ndarray:
    """Samples near a `latent`-dimensional subspace of the input (plus a little noise)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(latent, IN))
    return (rng.normal(size=(n, latent)) @ basis + 0.01 * rng.normal(size=(n, IN))).astype(np.float32)


def relative_error(a: onnx.ModelProto, b: onnx.ModelProto, x: np.ndarray) -> float:
    sa, sb = session(a), session(b)
    ya = np.concatenate([sa.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    yb = np.concatenate([sb.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    return float(np.square(ya - yb).sum() / np.square(ya - ya.mean(0)).sum())


@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
def test_low_rank_layer_reproduces_the_outputs_with_fewer_macs(op):
    model = prunec.from_proto(onnx.shape_inference.infer_shapes(classifier(op)))
    fit, check = CalibData({"x": inputs(200, 1)}), CalibData({"x": inputs(50, 2)})
    out, res = Factorize(fit, check, tol=2e-3)(model)
    assert [l["name"] for l in res.layers] == [n.name for n in model.graph.nodes if len(n.inputs) > 1 and n.inputs[1].name == "w1"]
    layer = res.layers[0]
    # the tanh bends the 12 latent directions a little: a few more are needed, far fewer than 256
    assert 8 <= layer["rank"] <= 64 and layer["held_out_error"] <= 2e-3
    assert graph_macs(out.graph, out.shapes) < 0.7 * graph_macs(model.graph, model.shapes)
    assert out.annotations[BASE_MACS] == graph_macs(model.graph, model.shapes)
    proto = out.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    assert relative_error(model.to_proto(), proto, inputs(64, 3)) < 4e-3  # unseen samples of the same kind


def test_layer_without_low_rank_structure_is_left_alone():
    model = prunec.from_proto(onnx.shape_inference.infer_shapes(classifier("Gemm")))
    wide = lambda n, s: inputs(n, s, latent=IN)  # noqa: E731  inputs that fill every direction
    out, res = Factorize(CalibData({"x": wide(300, 1)}), CalibData({"x": wide(60, 2)}), tol=1e-4)(model)
    assert res.layers == [] and out is model


def test_pruning_after_factorizing_counts_the_budget_from_the_given_model(tmp_path):
    proto = classifier("Gemm")
    model = prunec.from_proto(onnx.shape_inference.infer_shapes(proto))
    calib = {"x": inputs(256, 1)}
    pruned, report, _ = prune_model(model, PruneOptions(calib=calib, target_macs=0.25, factorize=2e-3,
                                                        recover="refit"))
    assert report["factorize"]["layers"] and report["factorize"]["layers"][0]["rank"] < HID
    before = graph_macs(model.graph, model.shapes)
    assert report["macs"]["before"] == before and report["macs"]["after"] <= 0.25 * before * 1.02
    assert BASE_MACS not in pruned.annotations  # consumed by the prune pass, not written out
    assert relative_error(model.to_proto(), pruned.to_proto(), inputs(64, 3)) < 0.05


def test_factorize_without_calibration_data_is_a_clear_error(tmp_path):
    path = tmp_path / "cls.onnx"
    onnx.save(classifier("Gemm"), path)
    res = run_prunec(path, "--factorize", "--ratio", "0.3", "-o", tmp_path / "out")
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("prunec: error: --factorize")
    assert "--calib" in res.stderr and "Traceback" not in res.stderr


def test_distillation_after_factorizing_learns_from_the_model_as_given():
    from prunec.pipeline import pipeline_passes

    model = prunec.from_proto(onnx.shape_inference.infer_shapes(classifier("Gemm")))
    passes = pipeline_passes(PruneOptions(calib={"x": inputs(128, 1)}, target_macs=0.5, factorize=2e-3))
    assert [p.name for p in passes] == ["factorize", "prune"]
    factorized, res = passes[0](model)
    assert res.layers and factorized is not model
    assert passes[1].teacher is model  # the prune pass distills towards the unfactorized model

"""LSTM/GRU/RNN lowered to primitive ONNX ops for TVM (prunec/backend/lower_recurrent.py): the
lowered graph computes what ONNX Runtime computes on the original node, every direction and
option the lowering accepts; what it does not implement is refused by name."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from prunec.backend.lower_recurrent import lower_recurrent
from prunec.errors import PrunecError

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STEPS, BATCH, INPUT, HIDDEN = 5, 2, 6, 7


def _recurrent(op, direction="forward", *, bias=True, initial=False, peephole=False,
               opset=17, seq_lens=None, runtime_h0=False, outputs=(True, True, True),
               seed=0, steps=STEPS, **attrs) -> onnx.ModelProto:
    """X -> one recurrent node -> its outputs, random weights; initial states constants, or h0
    a graph input (runtime_h0)."""
    rng = np.random.default_rng(seed)
    nd = 2 if direction == "bidirectional" else 1
    g = GATES[op]

    def t(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32),
                                       name)

    inits = [t("W", nd, g * HIDDEN, INPUT), t("R", nd, g * HIDDEN, HIDDEN)]
    ins = ["X", "W", "R", "", "", "", "", ""]
    if bias:
        inits.append(t("B", nd, 2 * g * HIDDEN))
        ins[3] = "B"
    if seq_lens is not None:
        inits.append(numpy_helper.from_array(np.array(seq_lens, np.int32), "L"))
        ins[4] = "L"
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                  [steps, BATCH, INPUT])]
    if runtime_h0:
        graph_inputs.append(helper.make_tensor_value_info("H0", TensorProto.FLOAT,
                                                          [nd, BATCH, HIDDEN]))
        ins[5] = "H0"
    elif initial:
        inits.append(t("H0", nd, BATCH, HIDDEN))
        ins[5] = "H0"
    if initial and op == "LSTM":
        inits.append(t("C0", nd, BATCH, HIDDEN))
        ins[6] = "C0"
    if peephole:
        inits.append(t("P", nd, 3 * HIDDEN))
        ins[7] = "P"
    n_in = {"LSTM": 8, "GRU": 6, "RNN": 6}[op]
    ins = ins[:n_in]
    while ins and not ins[-1]:
        ins.pop()
    names = [n if want else "" for n, want in zip(("Y", "Y_h", "Y_c"), outputs)]
    names = names[:3 if op == "LSTM" else 2]
    node = helper.make_node(op, ins, names, name="rnn", direction=direction,
                            hidden_size=HIDDEN, **attrs)
    shapes = {"Y": [steps, nd, BATCH, HIDDEN], "Y_h": [nd, BATCH, HIDDEN],
              "Y_c": [nd, BATCH, HIDDEN]}
    graph = helper.make_graph([node], "rnn", graph_inputs,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n])
                               for n in names if n], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _feeds(model, seed=1) -> dict:
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
            .astype(np.float32) for i in model.graph.input}


def _run(model, feeds) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def _assert_lowered_matches(model):
    lowered = lower_recurrent(model)
    onnx.checker.check_model(lowered, full_check=True)
    assert not any(n.op_type in GATES for n in lowered.graph.node)
    feeds = _feeds(model)
    want, got = _run(model, feeds), _run(lowered, feeds)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    return lowered


DIRECTIONS = ["forward", "reverse", "bidirectional"]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("initial", [False, True])
def test_lstm(direction, initial):
    _assert_lowered_matches(_recurrent("LSTM", direction, initial=initial))


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("initial", [False, True])
def test_gru(direction, lbr, initial):
    _assert_lowered_matches(_recurrent("GRU", direction, initial=initial,
                                       linear_before_reset=lbr))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_rnn(direction):
    _assert_lowered_matches(_recurrent("RNN", direction, initial=True))


@pytest.mark.parametrize("opset", [9, 12, 13, 18])
def test_opsets_old_and_new_split(opset):
    _assert_lowered_matches(_recurrent("LSTM", "bidirectional", opset=opset, initial=True))


def test_lstm_peepholes_no_bias_full_sequence_lens():
    _assert_lowered_matches(_recurrent("LSTM", "bidirectional", bias=False, initial=True,
                                       peephole=True, seq_lens=[STEPS] * BATCH))


def test_initial_state_at_run_time():
    _assert_lowered_matches(_recurrent("LSTM", "bidirectional", runtime_h0=True))
    _assert_lowered_matches(_recurrent("GRU", "reverse", runtime_h0=True, linear_before_reset=1))


def test_explicit_activations():
    _assert_lowered_matches(_recurrent("RNN", "bidirectional", activations=["Relu", "Tanh"]))
    _assert_lowered_matches(_recurrent("LSTM", "forward",
                                       activations=["Sigmoid", "Tanh", "Relu"]))


@pytest.mark.parametrize("outputs", [(True, False, False), (False, True, False),
                                     (False, False, True)])
def test_only_the_used_outputs(outputs):
    lowered = _assert_lowered_matches(_recurrent("LSTM", "bidirectional", outputs=outputs))
    made = {o for n in lowered.graph.node for o in n.output}
    for name, want in zip(("Y", "Y_h", "Y_c"), outputs):
        assert (name in made) == want


def test_zero_initial_state_skips_the_first_product():
    """A zero h0 (absent, or a constant of zeros as exporters write) makes the first step's
    h x R^T zero: it is not computed. One MatMul for the input sequence plus one per later step."""
    lowered = _assert_lowered_matches(_recurrent("LSTM", "forward"))
    assert sum(n.op_type == "MatMul" for n in lowered.graph.node) == 1 + (STEPS - 1)
    with_h0 = _assert_lowered_matches(_recurrent("LSTM", "forward", initial=True))
    assert sum(n.op_type == "MatMul" for n in with_h0.graph.node) == 1 + STEPS


def test_model_without_recurrent_nodes_is_returned_as_is():
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph)
    assert lower_recurrent(model) is model


def test_weights_of_the_node_are_dropped():
    lowered = lower_recurrent(_recurrent("LSTM", "bidirectional", initial=True))
    assert not {"W", "R", "B"} & {t.name for t in lowered.graph.initializer}


@pytest.mark.parametrize("kwargs,what", [
    ({"clip": 3.0}, "attribute clip=3.0"),
    ({"layout": 1}, "attribute layout=1"),
    ({"input_forget": 1}, "attribute input_forget=1"),
    ({"activations": ["HardSigmoid", "Tanh", "Tanh"]}, "activation 'HardSigmoid'"),
    ({"activations": ["Sigmoid", "Tanh", "Tanh"], "activation_alpha": [1.0]},
     "attribute activation_alpha"),
    ({"seq_lens": [STEPS, STEPS - 1]}, "sequence_lens [5, 4] shorter than the sequence (5)"),
])
def test_unsupported_attributes_are_refused_by_name(kwargs, what):
    with pytest.raises(PrunecError,
                       match=re.escape(f"LSTM node 'rnn': {what} is not supported")):
        lower_recurrent(_recurrent("LSTM", **kwargs))


def test_weights_computed_at_run_time_are_refused():
    model = _recurrent("LSTM")
    w = model.graph.initializer[0]
    model.graph.initializer.remove(w)
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.dims)))
    with pytest.raises(PrunecError, match="W computed at run time"):
        lower_recurrent(model)


def test_dynamic_sequence_length_is_refused():
    model = _recurrent("GRU")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"
    with pytest.raises(PrunecError, match="without a static shape"):
        lower_recurrent(model)


def test_tvm_compiles_a_lowered_bidirectional_lstm(tmp_path):
    """prunec's TVM backend (zero trials) runs an LSTM model end to end and agrees with ONNX
    Runtime on the original; identical steps share their fused functions, so a sequence twice
    as long compiles no more of them."""
    pytest.importorskip("tvm")
    import tvm
    from tvm import relax

    import prunec

    functions = []
    for steps in (STEPS, 2 * STEPS):
        model = _recurrent("LSTM", "bidirectional", initial=True, steps=steps)
        feeds = _feeds(model)
        compiled = prunec.compile(model, "x86", threads=1, tuning_db=str(tmp_path / "db"))
        vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
        got = vm["main"](tvm.runtime.tensor(feeds["X"]))
        got = [got[i].numpy() for i in range(len(got))]
        for w, g in zip(_run(model, feeds), got):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        functions.append(compiled.stats["kernels"]["functions"])
    assert functions[0] == functions[1], functions



@pytest.mark.parametrize("op,kwargs", [
    ("GRU", {"direction": "reverse", "linear_before_reset": 1, "runtime_h0": True}),
    ("GRU", {"direction": "bidirectional", "initial": True}),
    ("RNN", {"direction": "bidirectional", "activations": ["Relu", "Tanh"]}),
])
def test_tvm_runs_gru_and_rnn(tmp_path, op, kwargs):
    pytest.importorskip("tvm")
    import tvm
    from tvm import relax

    import prunec

    model = _recurrent(op, **kwargs)
    feeds = _feeds(model)
    compiled = prunec.compile(model, "x86", threads=1, tuning_db=str(tmp_path / "db"))
    vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(feeds[i["name"]])
                       for i in compiled.signature["inputs"]])
    for i, w in enumerate(_run(model, feeds)):
        np.testing.assert_allclose(got[i].numpy(), w, rtol=1e-5, atol=1e-5)

def test_cli_refuses_an_unsupported_lstm_for_tvm_in_one_line(tmp_path):
    """`prunec --target x86` on an LSTM the lowering does not cover: exit 2, the error as one
    line (after any progress lines of a slow host) naming the node and the attribute, nothing
    written."""
    from cli_helpers import run_prunec

    path = tmp_path / "clip.onnx"
    onnx.save(_recurrent("LSTM", clip=2.0), path)
    res = run_prunec(path, "--target", "x86", "-o", tmp_path / "out")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("prunec: error: LSTM node 'rnn': attribute clip=2.0 is not "
                                "supported"), res.stderr
    assert sum(line.startswith("prunec: error") for line in lines) == 1, res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_real_ddddocr_recognizer_on_tvm(ddddocr_model, tmp_path):
    """ddddocr 1.6.1's recognizer (bidirectional LSTM, 32 steps at width 256) compiled by the TVM
    backend: the logits agree with ONNX Runtime's, and the steps share their functions."""
    pytest.importorskip("tvm")
    import tvm
    from tvm import relax

    import prunec

    path = ddddocr_model("common.onnx")
    x = np.random.default_rng(0).standard_normal((1, 1, 64, 256)).astype(np.float32)
    compiled = prunec.compile(str(path), "x86", threads=1, tuning_db=str(tmp_path / "db"),
                              input_shapes={"input1": [1, 1, 64, 256]})
    got = relax.VirtualMachine(compiled.executable, tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input1": x})[0]
    assert got.shape == want.shape == (32, 1, 8210)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4)
    assert compiled.stats["kernels"]["functions"] < 40  # not one set per step

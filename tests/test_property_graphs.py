"""Property: for random valid conv graphs (conv / batchnorm / relu / residual add / concat / split
chains), every model prunec writes passes the full onnx.checker and runs in ONNX Runtime with the
original's output shapes. The default run draws a fixed set of examples (derandomized: the suite
gives the same answer every time); `-m slow` draws many more at random."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from prunec.pipeline import PruneOptions, prune_file

BLOCKS = ("conv", "bn", "relu", "add", "concat", "split")


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, prefix: str, a: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(a.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op + "_"), **attrs))
        return outs

    def conv(self, x: str, c_in: int, c_out: int, k: int) -> str:
        w = self.const("w", self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2 / (c_in * k * k)))
        b = self.const("b", 0.1 * self.rng.standard_normal(c_out))
        return self.node("Conv", [x, w, b], pads=[k // 2] * 4)[0]


def build(blocks: list[tuple[str, int, int]], c0: int) -> onnx.ModelProto:
    """blocks: (kind, channels, kernel) in order; the graph is a chain of them on [1, c0, 8, 8]."""
    g = _Builder(len(blocks) * 31 + c0)
    t, c = "x", c0
    for kind, width, k in blocks:
        if kind == "conv":
            t, c = g.conv(t, c, width, k), width
        elif kind == "bn":
            args = [g.rng.uniform(0.5, 1.5, c), g.rng.standard_normal(c) * 0.1, g.rng.standard_normal(c) * 0.1,
                    g.rng.uniform(0.5, 1.5, c)]
            t = g.node("BatchNormalization", [t] + [g.const(p, a) for p, a in zip(("s", "sh", "m", "v"), args)])[0]
        elif kind == "relu":
            t = g.node("Relu", [t])[0]
        elif kind == "add":
            t = g.node("Add", [t, g.conv(g.node("Relu", [t])[0], c, c, k)])[0]
        elif kind == "concat":
            a, b = g.conv(t, c, width, k), g.conv(t, c, max(2, width // 2), 1)
            t, c = g.node("Concat", [a, b], axis=1)[0], width + max(2, width // 2)
        elif kind == "split" and c >= 4:
            s = c // 2
            sizes = g.name("sizes")
            g.inits.append(numpy_helper.from_array(np.array([s, c - s], np.int64), sizes))
            p, q = g.node("Split", [t, sizes], n_out=2, axis=1)
            t = g.node("Concat", [g.conv(p, s, s, k), q], axis=1)[0]
    y = g.conv(g.node("Relu", [t])[0], c, 5, 1)  # a fixed head: the graph output keeps its channels
    graph = helper.make_graph(g.nodes, "random_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c0, 8, 8])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 5, 8, 8])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


graphs = st.tuples(
    st.lists(st.tuples(st.sampled_from(BLOCKS), st.integers(2, 12), st.sampled_from([1, 3])), min_size=1, max_size=7),
    st.integers(1, 4),
)
options = st.fixed_dictionaries({
    "ratio": st.floats(0.0, 0.9),
    "criterion": st.sampled_from(["l1", "l2", "random"]),
    "round_to": st.sampled_from([1, 2, 4]),
    "fold_bn": st.booleans(),
    "global_ranking": st.booleans(),
})


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def check_written_model(graph_spec, opts) -> None:
    blocks, c0 = graph_spec
    model = build(blocks, c0)
    x = np.random.default_rng(0).standard_normal((1, c0, 8, 8)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "m.onnx"
        onnx.save(model, src)
        report = prune_file(src, Path(d) / "out", PruneOptions(**opts), log=lambda s: None)
        written = onnx.load(report["output"])
    onnx.checker.check_model(written, full_check=True)
    before, after = _outputs(model, x), _outputs(written, x)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert all(np.isfinite(a).all() for a in after)
    if opts["ratio"] == 0.0 and not opts["fold_bn"]:  # nothing removed: the same function
        for a, b in zip(after, before):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(graphs, options)
def test_written_models_pass_checker_and_run(graph_spec, opts):
    check_written_model(graph_spec, opts)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs, options)
def test_written_models_pass_checker_and_run_many(graph_spec, opts):
    check_written_model(graph_spec, opts)

"""An aarch64 artifact compiled by TVM is correct, proved without a board.

A small ONNX conv net (conv + batchnorm + relu + pool + gemm) is compiled with TVM for
aarch64 + NEON, cross-linked with aarch64-linux-gnu-g++, and run by TVM's RPC server inside
an emulated arm64 Debian root (qemu-user via binfmt_misc), through prunec's RPC measuring
path both directly (--rpc) and through a tracker (--tracker/--key). Outputs must match
ONNX Runtime on the host. Emulated timings are not performance figures: not checked.

Set up once (root, ~5 min):  sudo tools/arm_emulator/setup.sh
Run:                         .venv/bin/python -m pytest -m slow tests/test_arm_emulation.py
The emulation tests skip with the reason when the root, binfmt or the cross compiler is
missing; the error-message tests need neither and run in the default (fast) suite.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "arm_emulator"))

import arm_emu  # noqa: E402

from prunec.backend.rpc import measure_over_rpc  # noqa: E402
from prunec.errors import PrunecError  # noqa: E402

INPUT_NAME = "input.1"  # a dot on purpose: TVM's importer renames it, positional order must hold
INPUT_SHAPE = [1, 3, 32, 32]
ATOL = RTOL = 1e-4

UNAVAILABLE = arm_emu.unavailable_reason(arm_emu.DEFAULT_ROOT)
needs_emulator = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


def _small_convnet():
    """conv3x3(3->8) + BatchNorm + Relu + MaxPool + conv3x3(8->16) + Relu + GAP + Flatten + Gemm(16->10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1234)

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

    inits = [
        init("w1", rng.standard_normal((8, 3, 3, 3)) * 0.3),
        init("b1", rng.standard_normal(8) * 0.1),
        init("bn_scale", rng.uniform(0.5, 1.5, 8)),
        init("bn_bias", rng.standard_normal(8) * 0.1),
        init("bn_mean", rng.standard_normal(8) * 0.1),
        init("bn_var", rng.uniform(0.5, 1.5, 8)),
        init("w2", rng.standard_normal((16, 8, 3, 3)) * 0.2),
        init("b2", rng.standard_normal(16) * 0.1),
        init("fc_w", rng.standard_normal((10, 16)) * 0.3),
        init("fc_b", rng.standard_normal(10) * 0.1),
    ]
    nodes = [
        # a stride-2 stem: on NEON its taps' columns come from 4-lane shuffles (_phase_conv_te)
        helper.make_node("Conv", [INPUT_NAME, "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn1"],
                         epsilon=1e-5),
        helper.make_node("Relu", ["bn1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_convnet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, INPUT_SHAPE)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """(model, aarch64 .so path, input, ONNX Runtime reference output)."""
    import onnxruntime as ort

    import onnx
    import tvm

    from prunec.backend import frontend
    from prunec.backend.targets import get_target

    model = _small_convnet()
    work = tmp_path_factory.mktemp("arm")
    onnx.save(model, work / "m.onnx")
    target = tvm.target.Target(arm_emu.AARCH64_TARGET)
    arm = get_target("arm")
    scheduled = arm.schedule(arm.fuse(frontend.import_onnx(work / "m.onnx", {
        INPUT_NAME: INPUT_SHAPE})[0], target), target)
    assert any("prunec_conv2d" in gv.name_hint and "T.Shuffle" in f.script()
               for gv, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc))
    ex = arm_emu.compile_onnx(model, {INPUT_NAME: INPUT_SHAPE})
    lib = arm_emu.cross_export(ex, work / "small_convnet_aarch64.so")
    with open(lib, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183, "not an aarch64 ELF"
    x = np.random.default_rng(7).standard_normal(INPUT_SHAPE).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {INPUT_NAME: x})
    return model, lib, x, ref


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """A direct emulated server, and a tracker with a second emulated server behind a key."""
    logs = tmp_path_factory.mktemp("arm-logs")
    key = f"arm64-emu-{uuid.uuid4().hex[:6]}"
    tracker = arm_emu.Tracker(arm_emu.free_port(), logs / "tracker.log").start()
    direct = tracked = None
    try:
        direct = arm_emu.EmulatedServer(arm_emu.DEFAULT_ROOT, arm_emu.free_port(), logs / "direct.log")
        tracked = arm_emu.EmulatedServer(arm_emu.DEFAULT_ROOT, arm_emu.free_port(), logs / "tracked.log",
                                         tracker=tracker, key=key)
        direct.start()
        tracked.start()
        yield {"rpc": direct.address, "tracker": tracker.address, "key": key}
    finally:
        for proc in (tracked, direct, tracker):
            if proc is not None:
                proc.stop()


def _check(result, ref):
    assert set(result["latency_ms"]) >= {"median", "p10", "p90"}
    assert result["latency_ms"]["p10"] <= result["latency_ms"]["median"] <= result["latency_ms"]["p90"]
    (out,) = result["outputs"]
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@needs_emulator
@pytest.mark.parametrize("via", ["rpc", "tracker"])
def test_aarch64_matches_onnxruntime(artifact, emulated, via):
    """Directly (--rpc HOST:PORT) and through a tracker (--tracker HOST:PORT --key KEY)."""
    _, lib, x, ref = artifact
    where = {"rpc": emulated["rpc"]} if via == "rpc" else {"tracker": emulated["tracker"], "key": emulated["key"]}
    res = measure_over_rpc(lib, {INPUT_NAME: INPUT_SHAPE}, "float32", rpc=where.get("rpc"),
                           tracker=where.get("tracker"), key=where.get("key"), repeat=3, log=print,
                           inputs={INPUT_NAME: x})
    _check(res, ref)
    assert (where.get("rpc") or where["key"]) in res["device"]


@pytest.mark.slow
@needs_emulator
def test_aarch64_seeded_random_inputs_are_deterministic(artifact, emulated):
    """Without explicit inputs the seeded random ones are used; same seed, same outputs."""
    import onnxruntime as ort

    model, lib, _, _ = artifact
    res = measure_over_rpc(lib, {INPUT_NAME: INPUT_SHAPE}, "float32", rpc=emulated["rpc"], tracker=None,
                           key=None, repeat=1)
    from prunec.backend.rpc import random_inputs

    x = random_inputs({INPUT_NAME: INPUT_SHAPE}, "float32", seed=0)[INPUT_NAME]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {INPUT_NAME: x})
    _check(res, ref)


@pytest.mark.slow
@needs_emulator
def test_aarch64_blocked_mobilenet_matches_onnxruntime(tmp_path, emulated):
    """A depthwise-separable net: activations NCHW4c on NEON (backend/layout.py), blocked
    depthwise and pointwise convs, mixed-layout stem and projections."""
    import onnxruntime as ort

    from models.mobilenet import mobilenetv2

    model = mobilenetv2(image=32, num_classes=10)
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    import onnx
    import tvm

    from prunec.backend import frontend
    from prunec.backend.targets import get_target

    onnx.save(model, tmp_path / "m.onnx")
    fused = get_target("arm").fuse(frontend.import_onnx(tmp_path / "m.onnx", {name: shape})[0],
                                   tvm.target.Target(arm_emu.AARCH64_TARGET))
    assert any("nchwc" in gv.name_hint for gv in fused.functions)
    lib = arm_emu.cross_export(arm_emu.compile_onnx(model, {name: shape}),
                               tmp_path / "mobilenetv2_aarch64.so")
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    (ref,) = ort.InferenceSession(model.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {name: x})
    res = measure_over_rpc(lib, {name: shape}, "float32", rpc=emulated["rpc"], tracker=None,
                           key=None, repeat=1, inputs={name: x})
    _check(res, ref)


@pytest.mark.slow
@needs_emulator
def test_aarch64_zero_copy_split_and_concat(tmp_path, emulated):
    """YOLOv8's C2f block on the device's runtime: the split's halves are views and three convs
    write into the concat's buffer (backend/zero_copy.py), through the aarch64 wheel's VM."""
    import onnxruntime as ort
    import tvm

    from prunec.backend import build, frontend
    from test_zero_copy import c2f

    model = c2f(c=16, hw=8, inner=8)
    import onnx

    onnx.save(model, tmp_path / "c2f.onnx")
    stats = {}
    ex = build.build(frontend.import_onnx(tmp_path / "c2f.onnx", {"x": [1, 16, 8, 8]})[0],
                     tvm.target.Target(arm_emu.AARCH64_TARGET), "arm", stats=stats)
    assert stats["zero_copy"] == {"split": 2, "concat": 1}
    lib = arm_emu.cross_export(ex, tmp_path / "c2f.so")
    x = np.random.default_rng(4).standard_normal((1, 16, 8, 8)).astype(np.float32)
    (ref,) = ort.InferenceSession(model.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {"x": x})
    res = measure_over_rpc(lib, {"x": [1, 16, 8, 8]}, "float32", rpc=emulated["rpc"], tracker=None,
                           key=None, repeat=1, inputs={"x": x})
    _check(res, ref)


@pytest.mark.slow
@needs_emulator
def test_aarch64_tuple_outputs_over_rpc(tmp_path, emulated):
    """Two graph outputs come back as two arrays, in the ONNX order (a remote tuple is opaque
    unless fetched through the VM's stateful API)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["relu"]),
        helper.make_node("Sigmoid", ["c"], ["sig"]),
    ]
    graph = helper.make_graph(
        nodes, "two_outputs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("relu", TensorProto.FLOAT, [2, 4, 8, 8]),
         helper.make_tensor_value_info("sig", TensorProto.FLOAT, [2, 4, 8, 8])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    lib = arm_emu.cross_export(arm_emu.compile_onnx(model, {"x": [2, 3, 8, 8]}), tmp_path / "two.so")
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    refs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    res = measure_over_rpc(lib, {"x": [2, 3, 8, 8]}, "float32", rpc=emulated["rpc"], tracker=None, key=None,
                           repeat=1, inputs={"x": x})
    assert len(res["outputs"]) == 2
    for out, ref in zip(res["outputs"], refs):
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


# ---- error messages: no emulator needed (fast suite) ---------------------------------------

def _dummy_lib(tmp_path):
    lib = tmp_path / "dummy.so"
    lib.write_bytes(b"\x7fELF")
    return lib


def test_unreachable_rpc_server_is_a_clear_error(tmp_path):
    port = arm_emu.free_port()  # nothing listens there
    with pytest.raises(PrunecError, match=rf"cannot reach the RPC server at 127\.0\.0\.1:{port}"):
        measure_over_rpc(_dummy_lib(tmp_path), {"x": [1]}, "float32", rpc=f"127.0.0.1:{port}",
                         tracker=None, key=None, repeat=1, log=None)


def test_unreachable_tracker_is_a_clear_error(tmp_path):
    port = arm_emu.free_port()
    with pytest.raises(PrunecError, match=rf"cannot reach the RPC tracker at 127\.0\.0\.1:{port}"):
        measure_over_rpc(_dummy_lib(tmp_path), {"x": [1]}, "float32", rpc=None,
                         tracker=f"127.0.0.1:{port}", key="k", repeat=1, log=None)


def test_bad_arguments_are_clear_errors(tmp_path):
    lib = _dummy_lib(tmp_path)
    with pytest.raises(PrunecError, match="HOST:PORT"):
        measure_over_rpc(lib, {"x": [1]}, "float32", rpc="localhost", tracker=None, key=None, repeat=1)
    with pytest.raises(PrunecError, match="needs --key"):
        measure_over_rpc(lib, {"x": [1]}, "float32", rpc=None, tracker="127.0.0.1:1", key=None, repeat=1)
    with pytest.raises(PrunecError, match="not found"):
        measure_over_rpc(tmp_path / "missing.so", {"x": [1]}, "float32", rpc="127.0.0.1:1", tracker=None,
                         key=None, repeat=1)


def test_tracker_without_the_key_is_a_clear_error(tmp_path):
    pytest.importorskip("tornado")  # the tracker needs it
    with arm_emu.Tracker(arm_emu.free_port(), tmp_path / "tracker.log").start() as tracker:
        with pytest.raises(PrunecError, match=r"has no device with key 'no-such-board' \(keys registered: none\)"):
            measure_over_rpc(_dummy_lib(tmp_path), {"x": [1]}, "float32", rpc=None, tracker=tracker.address,
                             key="no-such-board", repeat=1, log=None)


def test_silent_rpc_server_times_out_with_a_clear_error(tmp_path, monkeypatch):
    """A server that accepts TCP but never answers the handshake (a TVM rpc_server busy with
    another session does exactly this) must not hang prunec."""
    import socket
    import time

    from prunec.backend import rpc

    monkeypatch.setattr(rpc, "HANDSHAKE_TIMEOUT_S", 1.0)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(PrunecError, match=rf"RPC server at 127\.0\.0\.1:{port}: no answer within 1 s"):
            measure_over_rpc(_dummy_lib(tmp_path), {"x": [1]}, "float32", rpc=f"127.0.0.1:{port}",
                             tracker=None, key=None, repeat=1, log=None)
        assert time.monotonic() - t0 < 30

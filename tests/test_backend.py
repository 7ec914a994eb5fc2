"""TVM backend: compile, export and measure a tiny conv net for each target."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from prunec import backend
from prunec.errors import PrunecError
from test_backend_nets import resnet18_like, tiny_convnet, yolo_like

tvm = pytest.importorskip("tvm")


def _args(target: str, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--target", default=target)
    p.add_argument("--quiet", action="store_true")  # the CLI's -q, which run() reads too
    backend.add_arguments(p)
    return p.parse_args(["--target", target, "--repeat", "3", "--rounds", "1", *extra])


def _opts(target: str, *extra: str) -> backend.BackendOptions:
    return backend.BackendOptions.from_args(_args(target, *extra))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    onnx.save(tiny_convnet(seed=0), d / "a.onnx")
    onnx.save(tiny_convnet(seed=1), d / "b.onnx")
    return d / "a.onnx", d / "b.onnx"


SHAPES = {"input": [1, 3, 32, 32]}


@pytest.mark.parametrize("env,want", [(None, "0"), ("1", "1")])
def test_tvm_threads_not_pinned_unless_asked(env, want):
    """Importing the backend leaves TVM's workers unpinned (as ONNX Runtime's): a pinned worker
    stalls every parallel kernel on a shared host. TVM_BIND_THREADS=1 in the environment opts
    back in. A fresh interpreter: this one imported the backend long ago."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "TVM_BIND_THREADS"}
    if env is not None:
        environ["TVM_BIND_THREADS"] = env
    out = subprocess.run([sys.executable, "-c", "import os, prunec.backend; "
                          "print(os.environ['TVM_BIND_THREADS'])"], env=environ,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == want


def test_set_tvm_threads_leaves_the_main_thread_unpinned():
    import os

    from prunec.backend import measure as M

    M.set_tvm_threads(2)
    assert os.environ["TVM_NUM_THREADS"] == "2"
    if os.environ["TVM_BIND_THREADS"] == "0" and M._ALLOWED_CPUS:
        assert os.sched_getaffinity(0) == M._ALLOWED_CPUS


def test_arguments_parse():
    a = _args("x86", "--tune-trials", "8", "--threads", "1", "--rpc", "10.0.0.2:9090")
    assert a.tune_trials == 8 and a.threads == 1 and a.rpc == "10.0.0.2:9090"
    assert a.cuda_arch is None  # the GPU present decides, else sm_80
    with pytest.raises(SystemExit):
        _args("x86", "--rpc", "nohostport")
    assert not a.no_winograd and _args("x86", "--no-winograd").no_winograd
    assert not a.no_blocked_layout and _args("x86", "--no-blocked-layout").no_blocked_layout
    o = backend.BackendOptions.from_args(a)
    assert (o.tune_trials, o.threads, o.rpc, o.winograd, o.blocked_layout) == (8, 1, "10.0.0.2:9090",
                                                                              True, True)
    assert _opts("x86", "--no-winograd", "--no-blocked-layout").winograd is False
    assert _opts("x86", "--no-blocked-layout").blocked_layout is False


def test_options_are_checked():
    from prunec.backend import BackendOptions

    from prunec.backend.targets import get_target

    with pytest.raises(PrunecError, match="unknown target 'riscv'"):
        get_target("riscv")
    for bad, what in ((dict(rpc="nohost"), "--rpc"),
                      (dict(tracker="h:1"), "--key"), (dict(repeat=0), "--repeat")):
        with pytest.raises(PrunecError, match=what):
            BackendOptions(**bad).check()
    assert BackendOptions(target="arm", tracker="h:9190", key="rk").check().key == "rk"


def test_cuda_arch_is_the_gpus_unless_given():
    from prunec.backend.targets import cuda as C

    cuda = C.Cuda()
    assert cuda.config(_opts("cuda", "--cuda-arch", "sm_86"))["arch"] == "sm_86"
    detected = C.detected_cuda_arch()
    assert cuda.config(_opts("cuda"))["arch"] == (detected or C.DEFAULT_CUDA_ARCH)
    if detected:
        assert re.fullmatch(r"sm_\d+", detected)
    for bad in ("80", "sm_x", "compute_80"):
        with pytest.raises(PrunecError, match="--cuda-arch"):
            cuda.config(_opts("cuda", "--cuda-arch", bad))


def test_x86_zero_trials_matches_onnxruntime(pair, tmp_path):
    logs = []
    r = backend.run(_opts("x86", "--tuning-db", str(tmp_path / "db")), pair[0], pair[1], SHAPES,
                    tmp_path, logs.append)
    assert r["measured"] is True
    for name in ("original", "pruned"):
        m = r["models"][name]
        assert Path(m["artifact"]).is_file(), m
        assert m["output_check"]["ok"], m["output_check"]
        assert m["latency_ms"]["median"] > 0 and m["onnxruntime_latency_ms"]["median"] > 0
        assert len(m["latency_ms"]["round_medians"]) == 1  # --rounds 1
        io = json.loads(Path(m["io"]).read_text())
        assert io["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert r["speedup"] > 0
    assert r["timing"]["rounds"] == 1 and r["timing"]["samples_per_round"] == 3
    assert r["tuning"]["new_records"] == 0
    assert r["compiler"]["winograd"] is True  # the default on CPU targets (--no-winograd: False)
    assert r["compiler"]["blocked_layout"] is True  # --no-blocked-layout: False
    assert r["unscheduled"] == {"count": 0, "original": [], "pruned": []}
    # the exported library loads on its own and runs
    from tvm import relax

    lib = tvm.runtime.load_module(r["models"]["original"]["artifact"])
    vm = relax.VirtualMachine(lib, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(np.zeros((1, 3, 32, 32), "float32")))
    assert out.numpy().shape == (1, 10)


def test_a_failing_rule_is_warned_about_and_reported(pair, monkeypatch, caplog):
    """A rule that takes a function and fails leaves it to TVM's naive loops: a WARNING names
    it, and the build's stats list it (report.json: targets.<t>.unscheduled)."""
    from prunec.backend import build as B, frontend
    from prunec.backend.cpu.schedule.conv import DirectConv
    from schedule_helpers import host_target

    def fail(self, sch, lanes, threads):
        raise ValueError("no tile fits")

    monkeypatch.setattr(DirectConv, "schedule", fail)
    mod, _ = frontend.import_onnx(pair[0], SHAPES)
    stats: dict = {}
    with caplog.at_level("WARNING"):
        B.lower(mod, host_target(), "x86", stats=stats)
    failed = sorted(f for f, rule in stats["rules"].items() if rule is None)
    assert failed and all("conv2d" in f for f in failed)
    assert stats["unscheduled"] == failed
    assert any(r.levelname == "WARNING" and "the conv2d schedule failed" in r.getMessage()
               and "no tile fits" in r.getMessage() for r in caplog.records)
    assert {"winograd", "generic"} & set(stats["rules"].values())  # the others still scheduled


def test_x86_yolo_ops_match_onnxruntime(tmp_path):
    """Conv+BN folding, fast SiLU/softmax, stride-2 depthwise, split/concat/resize and a
    Shape-computed Reshape on a dynamic-shape model: compiled and checked against ORT."""
    onnx.save(yolo_like(seed=0), tmp_path / "a.onnx")
    onnx.save(yolo_like(seed=1), tmp_path / "b.onnx")
    r = backend.run(_opts("x86", "--tuning-db", str(tmp_path / "db")), tmp_path / "a.onnx",
                    tmp_path / "b.onnx", {"input": [1, 3, 32, 32]}, tmp_path, print)
    for name in ("original", "pruned"):
        assert r["models"][name]["output_check"]["ok"], r["models"][name]["output_check"]


def test_fold_conv_bn_is_exact():
    import onnxruntime as ort

    from prunec.backend.frontend import fold_conv_bn

    m = yolo_like(seed=2)
    f = fold_conv_bn(m, {"input": [1, 3, 32, 32]})  # prunec's FoldBatchNorm pass
    assert sum(n.op_type == "BatchNormalization" for n in f.graph.node) == 0
    assert sum(n.op_type == "BatchNormalization" for n in m.graph.node) == 2
    # the nodes keep their order (the Relax importer names values in node order)
    kept = [n.output[0] for n in m.graph.node if n.op_type != "BatchNormalization"]
    convs_renamed = {n.input[0]: n.output[0] for n in m.graph.node
                     if n.op_type == "BatchNormalization"}
    assert [n.output[0] for n in f.graph.node] == [convs_renamed.get(o, o) for o in kept]
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    run = lambda mm: ort.InferenceSession(mm.SerializeToString(), providers=[  # noqa: E731
        "CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(run(f), run(m), rtol=1e-4, atol=1e-5)


def test_arm_cross_compiles_to_aarch64_elf(pair, tmp_path):
    from prunec.backend.toolchain import arm_linker

    if arm_linker() is None:
        pytest.skip("no aarch64 linker (pip install 'prunec[arm]', or apt: g++-aarch64-linux-gnu)")
    r = backend.run(_opts("arm", "--target-cpu", "cortex-a72", "--tuning-db",
                          str(tmp_path / "db")), pair[0], pair[1], SHAPES, tmp_path, print)
    assert r["measured"] is False and "no device" in r["reason"]
    assert "latency_ms" not in r["models"]["original"]  # never a number we did not measure
    so = Path(r["models"]["pruned"]["artifact"])
    head = so.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 2  # ELF64
    assert int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    assert '"cortex-a72"' in r["target"]


def test_cuda_builds_and_exports_without_gpu(pair, tmp_path):
    r = backend.run(_opts("cuda", "--tuning-db", str(tmp_path / "db")), pair[0], pair[1], SHAPES,
                    tmp_path, print)
    assert Path(r["models"]["original"]["artifact"]).stat().st_size > 0
    from prunec.backend.targets.cuda import DEFAULT_CUDA_ARCH, detected_cuda_arch

    assert f'"{detected_cuda_arch() or DEFAULT_CUDA_ARCH}"' in r["target"]
    if not tvm.cuda().exist:
        assert r["measured"] is False and r["reason"] == "compiled, not measured: no GPU"


def test_cuda_replays_static_regions_as_cuda_graphs_unless_told_not_to(pair):
    """A batch-1 call is ~100 launches and VM allocations: by default the exported library
    captures them once and replays a CUDA graph (measured on an H200: docs/performance.md)."""
    assert _opts("cuda").cuda_graph and not _opts("cuda", "--no-cuda-graph").cuda_graph
    texts = {}
    for flag in (True, False):
        c = backend.compile_model(pair[0], "cuda", cuda_arch="sm_90", input_shapes=SHAPES,
                                  cuda_graph=flag)
        texts[flag] = c.executable.as_text()
    assert "vm.builtin.cuda_graph.run_or_capture" in texts[True]
    assert "cuda_graph" not in texts[False]


def test_cuda_load_hook_serves_kernels_compiled_at_build_time(pair, tmp_path, monkeypatch):
    """The library's CUDA C is answered from model.cuda/<hash>.<arch>.fatbin, so the machine
    that loads it needs no CUDA compiler; a source with no binary and no nvcc is a clear error."""
    import tvm_ffi

    from prunec.backend import cuda_kernels as K

    monkeypatch.setattr(K, "nvcc_path", lambda: None)  # the build host has no nvcc either
    c = backend.compile_model(pair[0], "cuda", cuda_arch="sm_90", input_shapes=SHAPES)
    lib = c.export(tmp_path / "m.so")
    assert not K.kernels_dir(lib).exists()
    code = K.cuda_source(c.executable)
    assert code and "__global__" in code
    folder = K.kernels_dir(lib)
    folder.mkdir()
    (folder / f"{K._key(code)}.sm_90.fatbin").write_bytes(b"binary for sm_90")
    K.use_precompiled(folder, arch="sm_90")
    hook = tvm_ffi.get_global_func("tvm_callback_cuda_compile")
    assert bytes(hook(code)) == b"binary for sm_90"
    with pytest.raises(Exception, match="no nvcc here"):
        hook(code + "// edited")


@pytest.mark.skipif(not __import__("shutil").which("nvcc"), reason="needs nvcc")
def test_cuda_export_compiles_kernels_with_nvcc(pair, tmp_path):
    from prunec.backend import cuda_kernels as K

    c = backend.compile_model(pair[0], "cuda", cuda_arch="sm_90", input_shapes=SHAPES)
    lib = c.export(tmp_path / "m.so")
    files = list(K.kernels_dir(lib).glob("*.sm_90.fatbin"))
    assert len(files) == 1 and files[0].name.startswith(K._key(K.cuda_source(c.executable)))
    assert files[0].read_bytes()[:4] == b"\x50\xed\x55\xba"  # a fatbin's magic number


def test_user_errors_are_prunec_errors(pair, tmp_path):
    with pytest.raises(PrunecError):
        backend.run(_opts("x86", "--tracker", "h:1"), pair[0], pair[1], SHAPES, tmp_path, print)
    with pytest.raises(PrunecError):
        backend.run(_opts("cuda", "--cuda-arch", "80"), pair[0], pair[1], SHAPES, tmp_path,
                    print)


@pytest.mark.slow
def test_tuning_database_is_reused(pair, tmp_path):
    db = tmp_path / "db"
    logs: list[str] = []
    r1 = backend.run(_opts("x86", "--tune-trials", "32", "--tuning-db", str(db)), pair[0],
                     pair[1], SHAPES, tmp_path, logs.append)
    assert r1["tuning"]["new_records"] > 0
    assert any("trials" in m and "left" in m for m in logs)  # progress was shown
    r2 = backend.run(_opts("x86", "--tune-trials", "32", "--tuning-db", str(db), "--quiet"),
                     pair[0], pair[1], SHAPES, tmp_path, logs.append)
    assert r2["tuning"]["new_records"] == 0
    assert sum(r2["tuning"]["measured_trials"].values()) == 0
    assert r2["models"]["original"]["output_check"]["ok"]
    # records applied: the whole model was timed with and without them, the faster one kept
    checks = [r["models"][m].get("schedule_check") for r in (r1, r2) for m in ("original", "pruned")]
    assert any(checks)
    assert all(c["kept"] in ("tuned", "default") for c in checks if c)
    # the same database after the hand schedules changed (another prunec): its default-schedule
    # records are dropped and today's defaults measured again, still without new trials
    from prunec.backend.tune import schedule_version

    records = db / "database_tuning_record.json"
    records.write_text(records.read_text().replace(schedule_version(), "0123456789abcdef"))
    logs.clear()
    r3 = backend.run(_opts("x86", "--tune-trials", "32", "--tuning-db", str(db)), pair[0],
                     pair[1], SHAPES, tmp_path, logs.append)
    assert sum(r3["tuning"]["measured_trials"].values()) == 0
    assert any("dropped" in m and "older prunec" in m for m in logs), logs
    assert any("measured today's default schedule" in m for m in logs), logs
    assert "0123456789abcdef" not in records.read_text()
    assert r3["models"]["pruned"]["output_check"]["ok"]


@pytest.mark.parametrize("tuned_ms,default_ms,kept", [(2.0, 1.0, "default"), (1.0, 2.0, "tuned")])
def test_whole_model_guard_keeps_the_faster_build(pair, tmp_path, monkeypatch, tuned_ms,
                                                  default_ms, kept):
    from prunec.backend import build as B, frontend, measure as M
    from prunec.backend.compare import check_tuned
    from prunec.backend.targets import get_target

    x86 = get_target("x86")
    tgt = x86.make_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                           "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 1})
    mod, sig = frontend.import_onnx(pair[0], SHAPES)
    lib = x86.export(B.build(mod, tgt, "x86"), tmp_path / "original.so")
    lib.write_bytes(lib.read_bytes() + b"tuned")  # marks the file as the "tuned" build
    monkeypatch.setattr(M, "compare_latency", lambda libs, sig: [tuned_ms, default_ms])
    logs: list[str] = []
    opts = backend.BackendOptions()
    got = check_tuned(x86, "original", mod, tgt, lib, sig, 1, logs.append, opts)
    assert got == {"kept": kept, "tuned_ms": tuned_ms, "default_ms": default_ms}
    assert lib.read_bytes().endswith(b"tuned") == (kept == "tuned")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["original.so"]  # no leftover build
    assert kept in logs[0]
    assert check_tuned(get_target("arm"), "original", mod, tgt, lib, sig, 1, logs.append,
                       opts) is None


def test_timed_rounds_interleaves_and_keeps_the_best_round(monkeypatch):
    """Rounds run A B, A B, ...; each figure is its best round's median, all rounds reported."""
    from prunec.backend import measure as M

    order: list[str] = []
    # A: a noisy first round (10 ms), then quiet (4 ms); B: the reverse
    plan = {"a": iter([[0.010] * 3, [0.004] * 3]), "b": iter([[0.002] * 3, [0.009] * 3])}

    def sampler(name):
        def sample(n):
            order.append(name)
            assert n == 3
            return next(plan[name])
        return sample

    got = M.timed_rounds({"a": sampler("a"), "b": sampler("b")}, repeat=3, rounds=2, settle_s=0)
    assert order == ["a", "b", "a", "b"]
    assert got["a"]["median"] == 4.0 and got["a"]["round_medians"] == [10.0, 4.0]
    assert got["b"]["median"] == 2.0 and got["b"]["round_medians"] == [2.0, 9.0]
    assert got["a"]["rounds"] == 2 and got["a"]["median_all"] == 7.0


def test_output_check_has_an_absolute_floor():
    """Outputs are held to 1e-4 of their own scale, except differences of a few float32 ulps of
    order-1 activations: a map that is ~0 everywhere (PP-OCRv4's detector on noise) matches."""
    from prunec.backend import measure as M

    ref = np.full((4, 4), 1e-9)
    ref[0, 0] = 6e-4  # ~0 but for a few pixels
    assert M.compare([ref + 1.3e-7], [ref])["ok"]  # was DIFFER: 1.3e-7 > 1e-4 x 6e-4
    assert not M.compare([ref + 2e-6], [ref])["ok"]  # 0.3% of the output is not rounding
    assert not M.compare([ref + 1.3e-7], [ref], abs_floor=0.0)["ok"]  # the check without it
    big = np.full((4, 4), 10.0)
    assert M.compare([big + 9e-4], [big])["ok"] and not M.compare([big + 2e-2], [big])["ok"]
    assert not M.compare([ref.reshape(16)], [ref])["ok"]


def test_compare_latency_times_each_library(pair, tmp_path):
    from prunec.backend import build as B, frontend, measure as M
    from prunec.backend.targets import get_target

    x86 = get_target("x86")
    tgt = x86.make_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                           "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 1})
    mod, sig = frontend.import_onnx(pair[0], SHAPES)
    lib = x86.export(B.build(mod, tgt, "x86"), tmp_path / "a.so")
    ms = M.compare_latency([lib, lib], sig, rounds=2)
    assert len(ms) == 2 and all(0 < t < 1000 for t in ms)


@pytest.mark.slow
def test_resnet18_like_zero_trials_correct(tmp_path):
    onnx.save(resnet18_like(1.0), tmp_path / "o.onnx")
    onnx.save(resnet18_like(0.5), tmp_path / "p.onnx")
    r = backend.run(_opts("x86", "--tuning-db", str(tmp_path / "db")), tmp_path / "o.onnx",
                    tmp_path / "p.onnx", {"input.1": [1, 3, 224, 224]}, tmp_path, print)
    for name in ("original", "pruned"):
        assert r["models"][name]["output_check"]["ok"], r["models"][name]
    assert r["speedup"] > 1.0

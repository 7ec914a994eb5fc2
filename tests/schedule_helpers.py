"""Shared steps of the schedule tests: an ONNX model through prunec's CPU pipeline on this host,
and its outputs next to ONNX Runtime's on the same random inputs."""

from __future__ import annotations

import numpy as np
import onnx


def host_target(cores: int = 2, mcpu: str | None = None):
    """This host's CPU, or an older one it can run (mcpu="haswell": AVX2, 8-lane vectors)."""
    import tvm

    from prunec.backend.targets import get_target

    return get_target("x86").make_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                               "mcpu": mcpu or tvm.target.codegen.llvm_get_system_cpu(),
                               "num-cores": cores})


def import_relax(model: onnx.ModelProto):
    """(relax module, input signature) of an ONNX model through prunec's frontend; unknown dims as 1."""
    import tempfile
    from pathlib import Path

    from prunec.backend import frontend

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        onnx.save(model, path)
        shapes = {i.name: [x.dim_value or 1 for x in i.type.tensor_type.shape.dim] for i in model.graph.input}
        return frontend.import_onnx(path, shapes)


def schedule_onnx(model: onnx.ModelProto, tmp_path, name: str = "model.onnx",
                  mcpu: str | None = None, blocked: bool = True):
    """(relax module with every PrimFunc scheduled by prunec, input signature, target).
    blocked=False keeps NCHW activations in depthwise-separable graphs (backend/layout.py)."""
    from prunec.backend import frontend
    from prunec.backend.cpu import schedule_module
    from prunec.backend.targets.cpu import fuse

    path = tmp_path / name
    onnx.save(model, path)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    mod, sig = frontend.import_onnx(str(path), shapes)
    tgt = host_target(mcpu=mcpu)
    return schedule_module(fuse(mod, tgt, blocked=blocked), tgt), sig, tgt


def scheduled_functions(mod, name_part: str) -> dict[str, bool]:
    """{PrimFunc name: whether our schedule applied} for the functions whose name has name_part."""
    import tvm

    return {gv.name_hint: bool(f.attrs and f.attrs.get("tirx.is_scheduled", False))
            for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and name_part in gv.name_hint}


def run_against_onnxruntime(model: onnx.ModelProto, scheduled, sig, tgt, seed: int = 1):
    """(TVM outputs, ONNX Runtime outputs) as numpy arrays, on the same seeded inputs."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    ex = tvm.compile(scheduled, target=tgt, relax_pipeline=relax.get_pipeline("default_build"))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    rng = np.random.default_rng(seed)
    feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in sig["inputs"]}
    outs = vm["main"](*[tvm.runtime.tensor(feeds[i["name"]]) for i in sig["inputs"]])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {i.name: feeds[s["name"]] for i, s in zip(model.graph.input, sig["inputs"])})
    outs = outs if isinstance(outs, (list, tuple)) or type(outs).__name__ == "Array" else [outs]
    return [o.numpy() for o in outs], ref

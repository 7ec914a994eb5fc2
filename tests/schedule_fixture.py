"""Which CPU schedule rule took each fused PrimFunc of the bundled test models, and a digest of
the scheduled TIR: the record that keeps refactors of prunec/backend from changing a schedule.

`python tests/schedule_fixture.py` rewrites tests/fixtures/schedules.json (do it only when a
schedule is meant to change, and say so in the commit); tests/test_schedule_fixture.py compares
today's schedules with it. Targets are named CPUs (not this host's), so the record is the same
on every machine with the same TVM.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "schedules.json"

# (name, llvm target dict): AVX-512 (16 lanes), AVX2 (8 lanes, 16 registers), NEON (4 lanes)
TARGETS = {
    "avx512": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512",
               "num-cores": 2},
    "avx2": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell", "num-cores": 2},
    "neon": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 2},
}


def _models():
    """(name, onnx model, options) of every recorded case."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from models.zoo import build
    from test_backend_nets import tiny_convnet, yolo_like
    from test_cpu_schedule import _model as kernels

    return [
        ("resnet18", build("resnet18"), {}),
        ("resnet18_direct", build("resnet18"), {"winograd": False}),
        ("mobilenetv2", build("mobilenetv2"), {}),
        ("mobilenetv2_nchw", build("mobilenetv2"), {"blocked": False}),
        ("mobilenetv3", build("mobilenetv3"), {}),
        ("yolov8", build("yolov8"), {}),
        ("tiny_convnet", tiny_convnet(), {}),
        ("yolo_like", yolo_like(), {}),
        ("kernels", kernels(), {}),
        ("kernels_nchw", kernels(), {"blocked": False}),
    ]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_model(model, target_cfg: dict, winograd: bool = True, blocked: bool = True) -> dict:
    """{"funcs": {PrimFunc: {"rule": rule name or None, "tir": digest}}, "main": digest of the
    Relax main after the zero-copy views} for one model on one target."""
    from schedule_helpers import import_relax

    from prunec.backend.cpu import schedule_module
    from prunec.backend.targets import get_target
    from prunec.backend.targets.cpu import fuse, zero_copy_views

    tgt = get_target("x86").make_target(target_cfg)
    mod, _ = import_relax(model)
    fused = fuse(mod, tgt, winograd=winograd, blocked=blocked)
    rules: dict = {}
    mod = schedule_module(fused, tgt, applied=rules)
    funcs = {}
    import tvm

    for gv, f in fused.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            funcs[gv.name_hint] = {"rule": rules.get(gv.name_hint),
                                   "tir": _digest(mod[gv.name_hint].script())}
    main = zero_copy_views(mod, tgt)["main"].script()
    return {"funcs": dict(sorted(funcs.items())), "main": _digest(main)}


def record_all() -> dict:
    out = {}
    for name, model, opts in _models():
        for tname, cfg in TARGETS.items():
            out[f"{name}/{tname}"] = record_model(model, cfg, **opts)
    return out


if __name__ == "__main__":
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(record_all(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")

"""Refactors keep behaviour: the pruned models of the test zoo stay byte for byte what they were.

tests/fixtures/golden_digests.json holds the sha256 of each written model (and of its plan) for a
set of option sets, recorded before the architecture refactor of issue 17. A change that alters
any pruned model fails here; a deliberate change re-records with
    PRUNEC_RECORD_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden_outputs.py
and says why in its commit.

Data-free cases are numpy slicing only, the same bytes on any machine. Calibrated cases run ONNX
Runtime and least-squares solves whose float rounding depends on the CPU's vector kernels and the
BLAS, and on the thread count: their bytes are compared on a host with the recorded fingerprint
(ISA, core count, versions), their plans everywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest

import prunec
from models.zoo import BUILDERS, build
from prunec.pipeline import PruneOptions, prune_model
from tests.calib_helpers import calib_arrays, small_cnn

FIXTURE = Path(__file__).parent / "fixtures" / "golden_digests.json"
PLAN_IN = Path(__file__).parent / "fixtures" / "resnet18_plan.json"
RECORD = bool(os.environ.get("PRUNEC_RECORD_GOLDEN"))


def _fashion_calib(n: int = 64) -> dict:
    from models.fashion_mnist import INPUT_NAME

    x = np.random.default_rng(0).random((n, 1, 28, 28)).astype(np.float32)
    return {INPUT_NAME: x}


def _fashion():
    from models.fashion_mnist import MODEL_PATH

    return prunec.load(MODEL_PATH)


# name -> (model factory, options factory, calibrated?)
CASES: dict[str, tuple] = {}
# built with ONNX Runtime's static quantizer: activation scales come from ORT runs (host-dependent bits)
HOST_DEPENDENT_BUILDS = {"qdq_resnet"}
for _name in BUILDERS:
    if _name != "resnet50_full":
        CASES[f"{_name}/ratio0.5"] = (lambda n=_name: prunec.from_proto(build(n)), lambda: PruneOptions(ratio=0.5),
                                      _name in HOST_DEPENDENT_BUILDS)
CASES.update({
    "resnet18/l1-global-r1": (lambda: prunec.from_proto(build("resnet18")),
                              lambda: PruneOptions(ratio=0.3, criterion="l1", global_ranking=True, round_to=1), False),
    "mobilenetv2/foldbn-bn": (lambda: prunec.from_proto(build("mobilenetv2")),
                              lambda: PruneOptions(ratio=0.4, criterion="bn", fold_bn=True, target="x86"), False),
    "vit/random-min": (lambda: prunec.from_proto(build("vit")),
                       lambda: PruneOptions(ratio=0.6, criterion="random", round_to=2, min_keep=3), False),
    "yolov8/protect-steps2": (lambda: prunec.from_proto(build("yolov8")),
                              lambda: PruneOptions(ratio=0.5, protect=True, steps=2), False),
    "resnet18/exclude-plan-in": (lambda: prunec.from_proto(build("resnet18")),
                                 lambda: PruneOptions(exclude=["conv_0"], plan_in=str(PLAN_IN)), False),
    "resnet18/target-macs-datafree": (lambda: prunec.from_proto(build("resnet18")),
                                      lambda: PruneOptions(target_macs=0.5), False),
    "small_cnn/act": (lambda: prunec.from_proto(small_cnn()),
                      lambda: PruneOptions(ratio=0.4, criterion="act", calib=calib_arrays(48), round_to=4), True),
    "small_cnn/apoz-norecon": (lambda: prunec.from_proto(small_cnn()),
                               lambda: PruneOptions(ratio=0.4, criterion="apoz", calib=calib_arrays(48),
                                                    reconstruct=False, round_to=4), True),
    "small_cnn/output-var-local": (lambda: prunec.from_proto(small_cnn()),
                                   lambda: PruneOptions(ratio=0.5, criterion="output-var", calib=calib_arrays(48),
                                                        recon_mode="local", round_to=4), True),
    "small_cnn/output-probe": (lambda: prunec.from_proto(small_cnn()),
                               lambda: PruneOptions(target_macs=0.6, criterion="output", calib=calib_arrays(48),
                                                    allocation="probe", round_to=4), True),
    "fashion_mnist/target-macs": (_fashion, lambda: PruneOptions(target_macs=0.5, calib=_fashion_calib(), steps=1), True),
    "fashion_mnist/lsq-steps2": (_fashion, lambda: PruneOptions(ratio=0.4, criterion="lsq", steps=2,
                                                              calib=_fashion_calib(48), calib_mirror=3), True),
})


def _fingerprint() -> str:
    import onnxruntime

    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = " ".join(sorted(f for f in line.split(":", 1)[1].split()
                                        if f.startswith(("avx", "fma", "sse4", "amx"))))
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.machine()} {cores} cores numpy {np.__version__} onnxruntime {onnxruntime.__version__} "
            f"{flags}")


def _digests(name: str, tmp_path: Path) -> dict:
    make_model, make_opts, _ = CASES[name]
    pruned, _, plan = prune_model(make_model(), make_opts())
    path = prunec.save(pruned, tmp_path / "m.onnx")
    return {"model": hashlib.sha256(path.read_bytes()).hexdigest(),
            "plan": hashlib.sha256(json.dumps(plan.to_json(), sort_keys=True).encode()).hexdigest()}


def _fixture() -> dict:
    return json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {"fingerprint": None, "cases": {}}


@pytest.mark.parametrize("name", list(CASES))
def test_pruned_model_bytes_unchanged(name, tmp_path):
    got = _digests(name, tmp_path)
    fixture = _fixture()
    if RECORD:
        fixture["cases"][name] = got
        fixture["fingerprint"] = _fingerprint()
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
        return
    want = fixture["cases"].get(name)
    assert want is not None, f"no recorded digest for {name}: record with PRUNEC_RECORD_GOLDEN=1"
    assert got["plan"] == want["plan"], f"{name}: the plan changed"
    calibrated = CASES[name][2]
    if calibrated and fixture["fingerprint"] != _fingerprint():
        return  # float rounding of this host's kernels differs: the plan (above) is what must hold
    assert got["model"] == want["model"], f"{name}: the written model changed"

"""prunec's compile-time weight folding (backend/cpu/fold.py) gives exactly what Relax's
FoldConstant gives, leaves no call on constants behind, and compiles each distinct folding
kernel once per process (the original and the pruned model share them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

tvm = pytest.importorskip("tvm")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.zoo import build  # noqa: E402
from tests.schedule_helpers import import_relax  # noqa: E402


def _legalized(model, target):
    """The Relax module just before constant folding in targets/cpu.fuse."""
    from tvm import relax

    from prunec.backend.cpu import layout
    from prunec.backend.cpu.facts import vector_lanes
    from prunec.backend.cpu.legalize import legalize_passes

    mod, _ = import_relax(model)
    passes = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
              layout.blocked_layout_pass(vector_lanes(target)), *legalize_passes(target),
              relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern()]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def _calls_on_constants(mod) -> int:
    from tvm import relax

    n = 0
    consts = set()
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, tvm.ir.expr.Constant):
                consts.add(b.var)
            elif isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.call_tir" \
                    and all(isinstance(a, tvm.ir.expr.Constant) or a in consts
                            for a in v.args[1].fields):
                n += 1
    return n


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])  # Winograd / NCHWc packing
def test_fold_matches_relax_fold_constant(name):
    from tvm import relax
    from tvm_ffi import structural_equal

    from prunec.backend.cpu import fold
    from prunec.backend.targets import get_target

    target = get_target("x86").make_target(
        {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell", "num-cores": 2})
    mod = _legalized(build(name), target)
    assert _calls_on_constants(mod) > 10
    with target:
        theirs = relax.transform.FoldConstant()(mod)
        fold._BUILT.clear()
        ours = relax.transform.FoldConstant()(fold.fold_weight_transforms()(mod))
        kernels = sum(len(v) for v in fold._BUILT.values())
        assert kernels > 0
        fold.fold_weight_transforms()(mod)  # the same model again: nothing new compiled
        assert sum(len(v) for v in fold._BUILT.values()) == kernels
    assert _calls_on_constants(ours) == 0
    # constants compared by value: the folded weights are bit for bit Relax's
    assert structural_equal(ours["main"], theirs["main"], map_free_vars=True)


def test_relax_constants_fold_with_numpy():
    """Reshapes, transposes and Clip's NaN guard (where(isnan(c), inf, c)) of constants become
    constants, with Relax's FoldConstant's values; ops on activations stay."""
    import numpy as np
    from tvm import relax

    from prunec.backend.cpu.fold import fold_relax_constants

    w = np.arange(24, dtype="float32").reshape(2, 3, 4)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4, 6], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = relax.const(w)
            r = bb.emit(relax.op.reshape(relax.op.permute_dims(c, [2, 0, 1]), [4, 6]))
            hi = relax.const(np.float32(np.nan))
            g = bb.emit(relax.op.where(relax.op.isnan(hi), relax.const(np.float32(np.inf)), hi))
            y = bb.emit(relax.op.minimum(relax.op.add(x, r), g))
            out = bb.emit_output(relax.op.reshape(y, [24]))
        bb.emit_func_output(out)
    mod = bb.get()
    folded = fold_relax_constants()(mod)
    txt = folded["main"].script()
    assert "R.permute_dims" not in txt and "R.isnan" not in txt and "R.where" not in txt
    assert txt.count("R.reshape(") == 1  # the activation's
    want = relax.transform.FoldConstant()(mod)
    xs = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
    got = [relax.VirtualMachine(tvm.compile(m, "llvm"), tvm.cpu())["main"](tvm.runtime.tensor(xs))
           .numpy() for m in (folded, want)]
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_array_equal(got[0], (xs + w.transpose(2, 0, 1).reshape(4, 6)).ravel())

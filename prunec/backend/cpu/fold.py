"""Compile-time weight transforms (packing, Winograd weight transforms, folded bias reshapes):
every call_tir whose inputs are all constants is run once at compile time and replaced by its
result.

Relax's FoldConstant does the same but took 12 of the 14 s of `fuse` on YOLOv8n (2 cores): it
compiles and JIT-loads every folded call as a library of its own (~0.1 s each, 102 calls). Here
the distinct PrimFuncs are compiled together, one library per round of folding (a round per
step of a chain such as reshape -> pack), and kept for the process, keyed by structure, so the
original and the pruned model share the kernels of the layers pruning left alone. Relax's
FoldConstant still runs afterwards for whatever else is constant (it finds nothing heavy left).
"""

from __future__ import annotations

import numpy as np

from ..relax_rewrite import rewrite_functions

_BUILT: dict = {}  # structural hash -> [(PrimFunc, compiled function)], shared by a run's models
_MAX_CACHED = 1024
_MAX_ROUNDS = 8    # folding chains are reshape -> transpose -> pack at most


def _lookup(func):
    from tvm_ffi import structural_equal, structural_hash

    for f, fn in _BUILT.get(structural_hash(func), ()):
        if structural_equal(f, func):
            return fn
    return None


def _compile_all(funcs) -> None:
    """Compiles the PrimFuncs into one host library and caches each function of it."""
    import tvm
    from tvm_ffi import structural_hash

    if sum(len(v) for v in _BUILT.values()) + len(funcs) > _MAX_CACHED:
        _BUILT.clear()
    names = [f"prunec_fold_{i}" for i in range(len(funcs))]
    # LLVM at -O0: these kernels run once, on weights (moves and casts of a few MB); optimizing
    # them took 2.4 of YOLOv8n's 4.8 s of fusion (CPU seconds), unoptimized 1.1-1.4
    lib = tvm.tirx.build(tvm.IRModule({n: f.with_attr("global_symbol", n)
                                       for n, f in zip(names, funcs)}),
                         target=tvm.target.Target({"kind": "llvm", "opt-level": 0}))
    for n, f in zip(names, funcs):
        _BUILT.setdefault(structural_hash(f), []).append((f, lib[n]))


def _fold_round(mod):
    """(module with every foldable call whose kernel is compiled replaced by its value,
    the PrimFuncs of foldable calls not compiled yet)."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    missing: list = []

    @relax.expr_functor.mutator
    class Folder(relax.PyExprMutator):
        def _const(self, arg):
            """The tensor of a constant (or of a var bound to one), else None."""
            if isinstance(arg, relax.Var):
                arg = self.lookup_binding(arg)
            if isinstance(arg, tvm.ir.expr.Constant):
                value = arg.value if hasattr(arg, "value") else arg.data
                if isinstance(value, tvm.runtime.Tensor):
                    return value
            return None

        def visit_call_(self, op):
            call = super().visit_call_(op)
            if not (isinstance(call, relax.Call) and call.op.same_as(call_tir)) \
                    or len(call.args) != 2 or len(call.ty_args) != 1:
                return call
            out = call.ty_args[0]
            if not isinstance(out, relax.TensorType) or out.shape is None:
                return call
            shape = [int(d) if isinstance(d, tvm.tirx.IntImm) else None
                     for d in out.shape.values]
            consts = [self._const(a) for a in call.args[1].fields]
            if None in shape or None in consts:
                return call
            func = mod[call.args[0]]
            fn = _lookup(func)
            if fn is None:
                if not any(f.same_as(func) for f in missing):
                    missing.append(func)
                return call
            result = tvm.runtime.empty(shape, out.dtype, tvm.cpu())
            fn(*consts, result)
            return relax.const(result.numpy(), out.dtype)

    return rewrite_functions(mod, Folder(mod), dce=False), missing


def fold_weight_transforms():
    """A module pass: calls of PrimFuncs on constants become constants (see the module doc)."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="PrunecFoldWeightTransforms")
    def run(mod, ctx):
        for _ in range(_MAX_ROUNDS):
            mod, missing = _fold_round(mod)
            if not missing:
                break
            _compile_all(missing)
        return mod

    return run


# relax ops that fold_relax_constants evaluates with numpy: op -> (how many leading arguments
# are tensors that must be constant, (call, their arrays) -> array); a reshape's shape argument
# is a ShapeExpr, read from the call's type instead
_NUMPY_OPS = {
    "relax.reshape": (1, lambda call, a: a[0].reshape([int(d) for d in call.ty.shape])),
    "relax.permute_dims": (1, lambda call, a: a[0].transpose(
        None if call.attrs.axes is None else [int(x) for x in call.attrs.axes])),
    "relax.isnan": (1, lambda call, a: np.isnan(a[0])),
    "relax.where": (3, lambda call, a: np.where(*a)),
}


def fold_relax_constants():
    """A module pass: reshapes, transposes and the importer's NaN guards of Clip bounds
    (where(isnan(c), inf, c)) of constants become constants, evaluated with numpy. Relax's
    FoldConstant does this by compiling each call as a library of its own: 4.7 of the 8.5 s of
    fusing PP-OCRv4's recognizer (56 Clip guards, one library each)."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Folder(relax.PyExprMutator):
        def _value(self, arg):
            if isinstance(arg, relax.Var):
                bound = self.lookup_binding(arg)
                arg = arg if bound is None else bound
            if isinstance(arg, tvm.ir.expr.Constant):
                return (arg.value if hasattr(arg, "value") else arg.data).numpy()
            return None

        def visit_call_(self, op):
            call = super().visit_call_(op)
            rule = _NUMPY_OPS.get(getattr(call.op, "name", None))
            out = call.ty
            if rule is None or not isinstance(out, relax.TensorType) or out.shape is None:
                return call
            n, fn = rule
            args = [self._value(a) for a in call.args[:n]]
            if len(args) != n or any(a is None for a in args):
                return call
            dtype = str(out.dtype)
            return relax.const(np.asarray(fn(call, args)).astype(dtype), dtype)

    @tvm.transform.module_pass(opt_level=0, name="PrunecFoldRelaxConstants")
    def run(mod, ctx):
        return rewrite_functions(mod, Folder(mod))

    return run

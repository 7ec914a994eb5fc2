"""Running a Relax expression mutator over a module: the loop every prunec rewrite pass ends with."""
from __future__ import annotations


def rewrite_functions(mod, mutator, dce: bool = True):
    """`mod` with each Relax function replaced by `mutator`'s visit of it (a PyExprMutator built on
    `mod`); with `dce`, the bindings the rewrite left unused are dropped."""
    from tvm import relax

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    out = mutator.builder_.get()
    return relax.transform.DeadCodeElimination()(out) if dce else out

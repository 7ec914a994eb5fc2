"""Compiled kernels cached by workload: every fused PrimFunc is compiled to an object file of
its own, named by a digest of its structure and the target, kept on disk (beside the tuning
database) and linked into the library with the Relax VM code.

So the pruned model reuses the kernels of the layers pruning left alone (YOLOv8n at --ratio 0.5:
26 of its 75 distinct kernels are the original's), a model compiled again (a second run, the
whole-model check after tuning) compiles no kernel at all, and structurally identical fused
functions inside one model (repeated blocks) are compiled once. The kernels that are missing
are compiled side by side on the process's cores: TIR lowering and LLVM release the GIL.

Only what TVM gives an object file for is cached: the PrimFuncs of the module after Relax's
build pipeline. The VM bytecode and the weights are written again for every library.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# bump when what goes into an object changes without changing the PrimFunc (TIR pass config)
FORMAT = 1
_MAX_FILES = 4096  # then the least recently used quarter goes (~40 KB a kernel)
_TIR_CONFIG = {"tirx.disable_cse_tir": True}  # see build.compile_lowered


def enabled() -> bool:
    return os.environ.get("PRUNEC_KERNEL_CACHE", "1") != "0"


def _readable(name: str) -> str:
    """fused_prunec_conv2d12_add11_sigmoid8 -> fused_prunec_conv2d_add_sigmoid: the op chain
    without the importer's numbering, so the same kernel gets the same name in every model."""
    return re.sub(r"(?<=[A-Za-z])\d+(?=_|$)", "", name)[:48]


def usable(cache_dir) -> bool:
    """Whether kernels can be kept in cache_dir (made if missing): a read-only or misplaced
    cache means compiling without it, not failing."""
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(cache_dir, os.W_OK | os.X_OK)


def kernel_names(mod, target) -> dict[str, str]:
    """{PrimFunc name: content name}: one content name per (structure, target, TVM version)."""
    import tvm
    from tvm_ffi import structural_hash

    salt = json.dumps([FORMAT, tvm.__version__, str(target), _TIR_CONFIG], sort_keys=True)
    names = {}
    for gv, f in mod.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            h = structural_hash(f.with_attr("global_symbol", "k"))
            digest = hashlib.sha256(f"{salt}|{h}".encode()).hexdigest()[:16]
            names[gv.name_hint] = f"{_readable(gv.name_hint)}_k{digest}"
    return names


def rename(mod, names: dict[str, str]):
    """mod with every PrimFunc under its content name (calls rewritten), one copy of each."""
    import tvm
    from tvm import relax

    new_gv: dict = {}
    funcs: dict = {}
    for gv, f in mod.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            key = names[gv.name_hint]
            if key not in funcs:
                funcs[key] = f.with_attr("global_symbol", key)
                new_gv[key] = tvm.ir.GlobalVar(key)
                relax.expr._update_type(new_gv[key], gv.ty)
    by_old = {old: new_gv[key] for old, key in names.items()}

    @relax.expr_functor.mutator
    class Renamer(relax.PyExprMutator):
        def visit_global_var_(self, op):
            return by_old.get(op.name_hint, op)

    renamer = Renamer(mod)
    out = {new_gv[k]: f for k, f in funcs.items()}
    for gv, f in mod.functions.items():
        if isinstance(f, relax.Function):
            out[gv] = renamer.visit_expr(f)
        elif not isinstance(f, tvm.tirx.PrimFunc):
            out[gv] = f
    return tvm.IRModule(out, attrs=mod.attrs)


def _compile_one(gv, func, attrs, target, path: Path) -> None:
    import tvm

    with tvm.transform.PassContext(opt_level=3, config=_TIR_CONFIG):
        lib = tvm.tirx.build(tvm.IRModule({gv: func}, attrs=attrs), target=target)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{id(func)}.o")
    lib.write_to_file(str(tmp))
    os.replace(tmp, path)  # whole or absent: another process may be reading the cache


def _trim(cache: Path) -> None:
    files = sorted(cache.glob("*.o"), key=lambda p: p.stat().st_mtime)
    if len(files) > _MAX_FILES:
        for p in files[:len(files) // 4]:
            p.unlink(missing_ok=True)


def compile_cached(mod, target, cache_dir, stats: dict | None = None, workers: int | None = None):
    """tvm.compile of a lowered module (build.compile_lowered's contract) with its kernels from
    and into cache_dir. stats, when given, receives "kernels": {"functions", "distinct",
    "cached", "compiled"} and "compile_phases" (seconds)."""
    import tvm
    from tvm import relax
    from tvm.relax.vm_build import _filter_tir, _vmcodegen, _vmlink

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    phases = {}
    t0 = time.perf_counter()
    ctx = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(opt_level=ctx.opt_level, config={**dict(ctx.config),
                                                                    **_TIR_CONFIG}):
        with target:
            mod = relax.get_pipeline("default_build")(mod)
        names = kernel_names(mod, target)
        mod = rename(mod, names)
        attrs = dict(mod.attrs) if mod.attrs else {}
        params = dict(attrs.get("const_name_to_constant", {}))
        ext_libs = list(attrs.get("external_mods", []))
        builder = relax.ExecBuilder()
        mod = _vmcodegen(builder, mod, "bytecode")
        tir_mod = _filter_tir(mod)
    phases["relax_build"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    funcs = list(tir_mod.functions.items()) if tir_mod is not None else []
    missing = [(gv, f) for gv, f in funcs if not (cache / f"{gv.name_hint}.o").is_file()]
    workers = workers or max(1, min(len(missing), len(os.sched_getaffinity(0))))
    if missing:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda item: _compile_one(item[0], item[1], tir_mod.attrs, target,
                                                    cache / f"{item[0].name_hint}.o"), missing))
        _trim(cache)
    phases["kernels"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for gv, _ in funcs:  # touched: the least recently used go first when the cache is trimmed
        os.utime(cache / f"{gv.name_hint}.o")
    statics = [tvm.runtime.load_static_library(str(cache / f"{gv.name_hint}.o"), [gv.name_hint])
               for gv, _ in funcs]
    ex = _vmlink(builder, target, None, None, ext_libs + statics, params)
    phases["link"] = time.perf_counter() - t0
    if stats is not None:
        stats["kernels"] = {"functions": len(names), "distinct": len(funcs),
                            "cached": len(funcs) - len(missing), "compiled": len(missing),
                            "dir": str(cache)}
        stats.setdefault("compile_phases", {}).update(
            {k: round(v, 2) for k, v in phases.items()})
    return ex

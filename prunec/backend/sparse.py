"""Block-sparse (BSR) kernels for CPU targets, and the Relax rewrite that uses them where they win.

TVM 0.27's Relax pipeline has no sparse operator, so the kernel is written here in TIR:

    Y[b, n, p] = act(sum_k W[n, k] * X[b, k, p] + bias[n])        W in BSR with R x C blocks

W's nonzero blocks are stored row-block by row-block (data [nnzb, R, C], indices: column block of
each, indptr: where each row block starts). X is [K, P] per sample: a 1x1 stride-1 conv in NCHW
(P = H*W), or a MatMul/Gemm whose tokens were moved to the last axis (P = tokens). One task per
(sample, row block, tile of P): R x PV accumulators in registers (PV = 1-4 vectors, fewer as R grows),
then for every stored block and each of its C columns one vector load of X per R FMAs. The loop over
stored blocks reads indptr/indices at run time; the bias and an optional ReLU are fused into the
write-back. A tail tile of P % PV columns has a loop nest of its own (vectorized at that width).

`rewrite(mod, target, ...)` replaces each eligible conv2d / matmul with a constant weight by a call
to this kernel when the weight is sparse enough to try AND a timing of both versions of that layer
on this machine says the sparse one is faster; every candidate's decision and timings are returned
(the report's per-layer "which kernel ran and why").
"""
from __future__ import annotations

import math
import time

import numpy as np

from .relax_rewrite import rewrite_functions

# Block shapes tried for a weight, largest first; the first whose blocks hold at most FILL_SLACK
# times the nonzeros is used (the pattern the sparsify pass wrote is exact, so its shape is found).
BLOCK_SHAPES = [(16, 1), (8, 1), (4, 4), (1, 16), (1, 8), (4, 1), (1, 4), (2, 2), (2, 1), (1, 2), (1, 1)]
FILL_SLACK = 1.05
# Not even timed below this: at 50% the BSR kernel already lost on some layers (bench_sparsity.py kernels:
# 512x512 1x1 conv at 14x14, 1x8 blocks 0.86x, unstructured 0.71x of dense).
MIN_SPARSITY = 0.3
_TIMINGS: dict = {}  # (target, layer shape, block, density, epilogue) -> (dense s, sparse s), per process


# --------------------------------------------------------------------------- BSR form
def to_bsr(w: np.ndarray, r: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """w [N, K] (N % r == 0, K % c == 0) -> (data [nnzb, r, c], indices [nnzb] int32, indptr [N/r + 1] int32)."""
    n, k = w.shape
    tiles = w.reshape(n // r, r, k // c, c).transpose(0, 2, 1, 3)  # [NB, KB, r, c]
    nz = np.any(tiles != 0, axis=(2, 3))
    rows, cols = np.nonzero(nz)
    data = np.ascontiguousarray(tiles[rows, cols], dtype=np.float32)
    if len(data) == 0:  # an all-zero weight: one zero block keeps the buffers non-empty, no row reads it
        return np.zeros((1, r, c), np.float32), np.zeros(1, np.int32), np.zeros(n // r + 1, np.int32)
    indptr = np.zeros(n // r + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return data, cols.astype(np.int32), np.cumsum(indptr).astype(np.int32)


def choose_block(w: np.ndarray) -> tuple[int, int, float] | None:
    """(R, C, fill) for the largest block shape that stores at most FILL_SLACK x the nonzeros."""
    n, k = w.shape
    nnz = int(np.count_nonzero(w))
    if nnz == 0:
        return None
    for r, c in BLOCK_SHAPES:
        if n % r or k % c:
            continue
        tiles = np.any((w != 0).reshape(n // r, r, k // c, c), axis=(1, 3))
        fill = int(np.count_nonzero(tiles)) * r * c / nnz
        if fill <= FILL_SLACK:
            return r, c, fill
    return None


# --------------------------------------------------------------------------- the kernel
def vector_tile(lanes: int, r: int) -> int:
    """Columns of P per task: 4 vectors for one row per block, fewer as R grows (<= 16 accumulators)."""
    return lanes * max(1, min(4, 16 // max(r, 1)))


def bsr_kernel(batch: int, n: int, k: int, p: int, r: int, c: int, nnzb: int, lanes: int, relu: bool):
    """The PrimFunc Y[b, n, p] = act(W_bsr @ X[b] + bias)."""
    from tvm.script import tirx as T

    nb = n // r
    pv = min(vector_tile(lanes, r), p)
    full, tail = p // pv, p % pv
    tail_tasks, tail_w = (batch * nb, tail) if tail else (0, 1)

    def out(v):
        return T.max(v, T.float32(0)) if relu else v

    @T.prim_func(private=True)
    def kernel(X: T.Buffer((batch, k, p), "float32"), data: T.Buffer((nnzb, r, c), "float32"),
               indices: T.Buffer((nnzb,), "int32"), indptr: T.Buffer((nb + 1,), "int32"),
               bias: T.Buffer((n,), "float32"), Y: T.Buffer((batch, n, p), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        for task in T.parallel(batch * nb * full):
            acc = T.alloc_buffer((r, pv), "float32", scope="local")
            for i in T.unroll(r):
                for v in T.vectorized(pv):
                    acc[i, v] = T.float32(0)
            for j in T.serial(indptr[task // full % nb], indptr[task // full % nb + 1]):
                for cc in T.unroll(c):
                    for i in T.unroll(r):
                        for v in T.vectorized(pv):
                            acc[i, v] = acc[i, v] + data[j, i, cc] * X[task // (full * nb), indices[j] * c + cc,
                                                                       task % full * pv + v]
            for i in T.unroll(r):
                for v in T.vectorized(pv):
                    Y[task // (full * nb), task // full % nb * r + i, task % full * pv + v] = out(
                        acc[i, v] + bias[task // full % nb * r + i])
        for task in T.parallel(tail_tasks):
            acc2 = T.alloc_buffer((r, tail_w), "float32", scope="local")
            for i in T.unroll(r):
                for v in T.vectorized(tail_w):
                    acc2[i, v] = T.float32(0)
            for j in T.serial(indptr[task % nb], indptr[task % nb + 1]):
                for cc in T.unroll(c):
                    for i in T.unroll(r):
                        for v in T.vectorized(tail_w):
                            acc2[i, v] = acc2[i, v] + data[j, i, cc] * X[task // nb, indices[j] * c + cc,
                                                                         full * pv + v]
            for i in T.unroll(r):
                for v in T.vectorized(tail_w):
                    Y[task // nb, task % nb * r + i, full * pv + v] = out(acc2[i, v] + bias[task % nb * r + i])

    return kernel


# --------------------------------------------------------------------------- finding candidates
def _const(expr, lookup):
    """The numpy value of a constant (or a var bound to one), else None."""
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Var):
        bound = lookup(expr)
        expr = bound if bound is not None else expr
    if isinstance(expr, (tvm.ir.expr.GenericConst, tvm.ir.expr.Constant)):
        value = expr.value if hasattr(expr, "value") else expr.data
        return value.numpy() if hasattr(value, "numpy") else None
    return None


def _weight_of(call, lookup):
    """(kind, W [N, K] as numpy, x) for a conv2d 1x1 / matmul with a constant weight, else None."""
    from tvm import relax

    name = getattr(call.op, "name", "")
    if name == "relax.nn.conv2d":
        a = call.attrs
        w = _const(call.args[1], lookup)
        if w is None or w.ndim != 4 or w.shape[2:] != (1, 1) or int(a.groups) != 1:
            return None
        if [int(v) for v in a.strides] != [1, 1] or any(int(v) for v in a.padding) \
                or [int(v) for v in a.dilation] != [1, 1]:
            return None
        if (a.data_layout, a.kernel_layout, a.out_layout or "NCHW") != ("NCHW", "OIHW", "NCHW"):
            return None
        return "conv1x1", w.reshape(w.shape[0], w.shape[1]), call.args[0]
    if name == "relax.matmul":
        wt = call.args[1]
        if isinstance(wt, relax.Var):
            bound = lookup(wt)
            if bound is not None and getattr(getattr(bound, "op", None), "name", "") == "relax.permute_dims":
                w = _const(bound.args[0], lookup)
                axes = [int(v) for v in bound.attrs.axes] if bound.attrs.axes is not None else [1, 0]
                if w is not None and w.ndim == 2 and axes == [1, 0]:
                    return "matmul", w, call.args[0]
        w = _const(wt, lookup)
        if w is not None and w.ndim == 2:
            return "matmul", np.ascontiguousarray(w.T), call.args[0]
    return None


def _shape(expr) -> list[int] | None:
    try:
        return [int(d) for d in expr.ty.shape]
    except Exception:  # noqa: BLE001 - symbolic or non-tensor
        return None


class _Plan:
    """One candidate layer: the weight's op chain (op -> bias add -> ReLU) and its BSR form."""

    def __init__(self, index, kind, w, x, top, bias, relu, x_shape):
        self.index, self.kind, self.w, self.x, self.top = index, kind, w, x, top
        self.bias, self.relu, self.x_shape = bias, relu, x_shape
        n, k = w.shape
        self.p = (x_shape[2] * x_shape[3]) if kind == "conv1x1" else int(np.prod(x_shape[:-1]))
        self.batch = x_shape[0] if kind == "conv1x1" else 1
        self.record = {"layer": index, "op": "conv2d 1x1" if kind == "conv1x1" else "matmul",
                       "n": int(n), "k": int(k), "p": int(self.p), "batch": int(self.batch),
                       "sparsity": float(np.mean(w == 0)), "epilogue": ("bias" if bias is not None else "")
                       + (" relu" if relu else "")}
        self.block = None

    def bsr(self):
        r, c, _ = self.block
        return to_bsr(self.w.astype(np.float32), r, c)


def _uses(func) -> dict:
    """How many times each Var is read in the function."""
    from tvm import relax

    counts: dict = {}

    def visit(e):
        if isinstance(e, relax.Var):
            counts[e] = counts.get(e, 0) + 1
        elif isinstance(e, relax.Call):
            for a in e.args:
                visit(a)
        elif isinstance(e, relax.Tuple):
            for a in e.fields:
                visit(a)
        elif isinstance(e, relax.TupleGetItem):
            visit(e.tuple_value)

    for block in func.body.blocks:
        for b in block.bindings:
            visit(b.value)
    visit(func.body.body)
    return counts


def find_candidates(func) -> list[_Plan]:
    """conv2d 1x1 / matmul layers with a constant weight, with the bias add and ReLU that follow them."""
    from tvm import relax

    bound, users = {}, {}
    for block in func.body.blocks:
        for b in block.bindings:
            if isinstance(b, relax.VarBinding):
                bound[b.var] = b.value
                if isinstance(b.value, relax.Call):
                    for a in b.value.args:
                        if isinstance(a, relax.Var):
                            users.setdefault(a, []).append(b)
    uses = _uses(func)
    lookup = bound.get
    plans = []
    for block in func.body.blocks:
        for b in block.bindings:
            if not isinstance(b, relax.VarBinding) or not isinstance(b.value, relax.Call):
                continue
            found = _weight_of(b.value, lookup)
            if found is None:
                continue
            kind, w, x = found
            xs = _shape(x)
            if xs is None or getattr(x.ty, "dtype", "") != "float32" or w.dtype != np.float32:
                continue
            if (kind == "conv1x1" and len(xs) != 4) or (kind == "matmul" and len(xs) < 2):
                continue
            n = w.shape[0]
            top, bias, relu, var = b.value, None, False, b.var
            nxt = users.get(var, [])
            if uses.get(var, 0) == 1 and len(nxt) == 1 and getattr(nxt[0].value.op, "name", "") == "relax.add":
                add = nxt[0].value
                other = add.args[1] if add.args[0].same_as(var) else add.args[0]
                c = _const(other, lookup)
                per_channel = (1, n, 1, 1) if kind == "conv1x1" else (n,)
                if c is not None and c.size == n and c.shape in (per_channel, (n,), (1, n), (n, 1, 1)):
                    top, bias, var = add, c.reshape(n).astype(np.float32), nxt[0].var
                    nxt = users.get(var, [])
            if uses.get(var, 0) == 1 and len(nxt) == 1 and getattr(nxt[0].value.op, "name", "") == "relax.nn.relu":
                top, relu = nxt[0].value, True
            plans.append(_Plan(len(plans), kind, w, x, top, bias, relu, xs))
    return plans


# --------------------------------------------------------------------------- emitting
def sparse_expr(emit, add_func, x, plan: _Plan, lanes: int):
    """Emit the BSR call for a plan (reshapes / transposes around it); returns the result expr."""
    from tvm import relax
    from tvm.script import relax as R

    n, k = plan.w.shape
    r, c, _ = plan.block
    data, indices, indptr = plan.bsr()
    bias = plan.bias if plan.bias is not None else np.zeros(n, np.float32)
    kern = bsr_kernel(plan.batch, n, k, plan.p, r, c, len(data), lanes, plan.relu)
    gv = add_func(kern, "bsr_matmul")
    consts = [relax.const(data), relax.const(indices), relax.const(indptr), relax.const(bias)]
    if plan.kind == "conv1x1":
        b, _, h, wd = plan.x_shape
        xr = emit(relax.op.reshape(x, [b, k, h * wd]))
        y = emit(relax.call_tir(gv, [xr] + consts, R.Tensor((b, n, h * wd), "float32")))
        return relax.op.reshape(y, [b, n, h, wd])
    lead = plan.x_shape[:-1]
    xt = emit(relax.op.permute_dims(emit(relax.op.reshape(x, [plan.p, k])), [1, 0]))
    y = emit(relax.call_tir(gv, [emit(relax.op.reshape(xt, [1, k, plan.p]))] + consts,
                            R.Tensor((1, n, plan.p), "float32")))
    yt = emit(relax.op.permute_dims(emit(relax.op.reshape(y, [n, plan.p])), [1, 0]))
    return relax.op.reshape(yt, list(lead) + [n])


def dense_expr(emit, x, plan: _Plan):
    """The layer as the dense model computes it (for timing it alone)."""
    from tvm import relax

    n, k = plan.w.shape
    if plan.kind == "conv1x1":
        y = emit(relax.op.nn.conv2d(x, relax.const(plan.w.reshape(n, k, 1, 1))))
        bias_shape = (1, n, 1, 1)
    else:
        y = emit(relax.op.matmul(x, emit(relax.op.permute_dims(relax.const(plan.w), [1, 0]))))
        bias_shape = (n,)
    if plan.bias is not None:
        y = emit(relax.op.add(y, relax.const(plan.bias.reshape(bias_shape))))
    return relax.op.nn.relu(y) if plan.relu else y


# --------------------------------------------------------------------------- measuring
def _layer_sampler(plan: _Plan, target, lanes: int, sparse: bool):
    """The layer alone, compiled by prunec's pipeline: a function giving the best seconds per call
    over n samples of >= 40 ms each."""
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    from .build import build

    bb = relax.BlockBuilder()
    xv = relax.Var("x", R.Tensor(tuple(plan.x_shape), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            if sparse:
                out = sparse_expr(bb.emit, bb.add_func, xv, plan, lanes)
            else:
                out = dense_expr(bb.emit, xv, plan)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    ex = build(bb.get(), target, "x86")
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(plan.x_shape).astype(np.float32), dev)
    vm["main"](x)
    fte = vm.time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=40)
    return lambda n: min(float(fte(x).mean) for _ in range(n))


def _time_layer(plan: _Plan, target, lanes: int, rounds: int = 3, per_round: int = 2) -> tuple[float, float]:
    """(dense s, sparse s) for the layer alone, timed in alternation and the best of each kept: on a
    shared host load only ever adds time, and alternating gives both the same quiet moments."""
    dense, sparse = _layer_sampler(plan, target, lanes, False), _layer_sampler(plan, target, lanes, True)
    d = s = float("inf")
    for _ in range(rounds):
        d, s = min(d, dense(per_round)), min(s, sparse(per_round))
    return d, s


def decide(plan: _Plan, target, lanes: int, measure: bool = True) -> None:
    """Fill plan.record with the kernel choice and why; plan.block set when the sparse kernel is used."""
    rec = plan.record
    n, k = plan.w.shape
    rec["kernel"] = "dense"
    if rec["sparsity"] < MIN_SPARSITY:
        rec["why"] = f"sparsity {rec['sparsity']:.2f} < {MIN_SPARSITY}: not timed, dense kept"
        return
    block = choose_block(plan.w)
    if block is None:
        rec["why"] = "no block shape stores the nonzeros without fill-in"
        return
    plan.block = block
    rec["block"] = f"{block[0]}x{block[1]}"
    if not measure:
        rec["why"] = "not measured (measure=False): dense kept"
        plan.block = None
        return
    t0 = time.perf_counter()
    key = (str(target), plan.kind, n, k, plan.p, plan.batch, block[:2], round(rec["sparsity"], 2), plan.relu,
           plan.bias is not None)
    if key not in _TIMINGS:  # layers of one shape and density (ResNet stages) are timed once
        _TIMINGS[key] = _time_layer(plan, target, lanes)
    else:
        rec["timing"] = "reused from a layer of the same shape and density"
    dense_s, sparse_s = _TIMINGS[key]
    rec.update(dense_us=dense_s * 1e6, sparse_us=sparse_s * 1e6, speedup=dense_s / sparse_s,
               measure_s=time.perf_counter() - t0)
    if sparse_s < dense_s:
        rec["kernel"] = f"bsr {block[0]}x{block[1]}"
        rec["why"] = f"measured {dense_s / sparse_s:.2f}x faster than dense"
    else:
        rec["why"] = f"measured {sparse_s / dense_s:.2f}x slower than dense"
        plan.block = None


def rewrite(mod, target, lanes: int, measure: bool = True, log=lambda s: None):
    """Replace the layers where the BSR kernel measures faster. Returns (module, per-layer records)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    mod = relax.transform.FoldConstant()(mod)
    plans = find_candidates(mod["main"])
    for plan in plans:
        decide(plan, target, lanes, measure)
        rec = plan.record
        log(f"sparse: layer {rec['layer']} {rec['op']} {rec['n']}x{rec['k']} (p={rec['p']}, "
            f"{100 * rec['sparsity']:.0f}% zeros): {rec['kernel']} ({rec['why']})")
    chosen = [p for p in plans if p.block is not None]
    if not chosen:
        return mod, [p.record for p in plans]

    @mutator
    class _Rewriter(PyExprMutator):
        def visit_call_(self, call):
            for plan in chosen:
                if call.same_as(plan.top):
                    x = self.visit_expr(plan.x)
                    return self.builder_.normalize(
                        sparse_expr(self.builder_.emit, self.builder_.add_func, x, plan, lanes))
            return super().visit_call_(call)

    out = rewrite_functions(mod, _Rewriter(mod))
    del tvm
    return out, [p.record for p in plans]


def apply_to_annotated(mod, onnx_path, kind: str, target, log):
    """The build hook: a model carrying prunec's sparsity annotation gets the BSR kernels where they
    measure faster on this machine (x86); returns (module, report entry)."""
    import onnx

    from prunec.sparsity import ANNOTATION_KEY

    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    if ANNOTATION_KEY not in props:
        return mod, None
    if kind != "x86":
        return mod, {"layers": [], "note": f"sparse kernels are chosen by timing them on this machine: x86 only; "
                                           f"the {kind} build keeps the weights dense (zeros included)"}
    from .cpu.facts import vector_lanes

    t0 = time.perf_counter()
    mod, records = rewrite(mod, target, vector_lanes(target), log=log)
    return mod, {"layers": records, "sparse_layers": sum(r["kernel"] != "dense" for r in records),
                 "decide_s": round(time.perf_counter() - t0, 1)}

"""Measured latency of each weighted layer against its kept channel counts, on the target.

For `--target-latency`: every Conv / Gemm / MatMul with a constant weight is a *workload* (op,
attributes, input and weight shapes). Its kernel is timed alone, compiled exactly as prunec compiles
the model (same target, schedules, kernel cache), at a grid of kept output counts (inputs full) and
kept input counts (outputs full). The grid holds multiples of 16 and the counts 8 below them, so
the table also says which counts the schedules run fast at (AVX-512 kernels use 16-lane vectors: a
count of 40 can cost as much as 48).

Many probes are compiled as one model of independent branches (one graph input each) and every
kernel call is attributed to the branch whose input it reads. The table is a JSON file beside the
tuning database, keyed by a digest of the workload, the target, TVM's version, prunec's schedule
code and the timing method (CLOCK): a workload is timed once, whatever model it comes from.

The clock: probes and whole models run on THREADS = 1 runtime thread, in the calling thread, timed
by that thread's CPU time (time.thread_time), the fastest of several rounds, as bench_speedup's
one-thread mode. A thread that is descheduled accumulates no CPU time, so a shared host's load
(which made 2-thread wall-time probes stall 5-40x and whole models vary 3x between rounds) leaves
the figures nearly unchanged; the budget is therefore a share of single-thread latency.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunec import progress
from prunec.errors import PrunecError

TABLE_FILE = "latency_table.json"
CHUNK = 48  # probes compiled per probe model (one progress step each)
ROUNDS = 3  # every probe timed in this many rounds over the whole chunk, fastest kept
RETRIES = 1  # suspicious points (see `suspicious`) are timed again this many times at most: with
# thread CPU time a point slower than its neighbours is nearly always real (24 outputs of a 3x3 conv
# 2x slower than 32), and each retry compiles another probe model
JUMP = 1.25  # a point this much slower than its neighbours' trend is suspicious
THREADS = 1  # runtime threads while timing: the work runs in the calling thread ...
CLOCK = time.thread_time  # ... so its CPU time is the kernel's, whatever else the host runs
METHOD = "thread-cpu-1t"  # in every table key: entries timed another way are never mixed in


@dataclass(frozen=True)
class Workload:
    """One weighted node's kernel: what is timed, and which weight axes its channel counts are."""
    op: str               # Conv | Gemm | MatMul
    x_shape: tuple        # activation input (full)
    w_shape: tuple        # weight (full)
    attrs: tuple          # ((name, value), ...) as ONNX has them
    has_bias: bool
    out_axis: int         # weight axis of the output channels
    in_axis: int | None   # weight axis of the input channels; None for depthwise (one count for both)

    @property
    def out_full(self) -> int:
        return self.w_shape[self.out_axis]

    @property
    def in_full(self) -> int | None:
        return None if self.in_axis is None else self.w_shape[self.in_axis]

    def key(self, target_key: str) -> str:
        from tvm import __version__ as tvm_version

        from .tune import schedule_version

        text = json.dumps([self.op, self.x_shape, self.w_shape, self.attrs, self.has_bias, target_key,
                           tvm_version, schedule_version(), METHOD], sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def counts(full: int, unit: int = 8) -> list[int]:
    """Kept counts timed for an axis of `full` channels: every multiple of `unit` up to 12 of them,
    else multiples of 2*unit at eighths of `full` and the count `unit` below each; `full` always."""
    if full <= unit:
        return [full]
    if full <= 12 * unit:
        out = set(range(unit, full, unit))
    else:
        big = 2 * unit
        out = set()
        for k in range(1, 8):
            c = max(big, int(round(full * k / 8 / big)) * big)
            if c < full:
                out.update((c, c - unit))
    out.add(full)
    return sorted(c for c in out if 0 < c <= full)


def workload_of(node, shapes: dict) -> Workload | None:
    """The node's workload, or None for nodes this table does not time (no constant 2-D+ weight in
    the usual place, grouped non-depthwise convs, transposed Gemm inputs, unknown shapes)."""
    import onnx_graphsurgeon as gs

    if node.op not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
        return None
    x, w = node.inputs[0], node.inputs[1]
    if isinstance(x, gs.Constant) or not isinstance(w, gs.Constant):
        return None
    xs = shapes.get(x.name)
    if xs is None or any(not isinstance(d, int) or d <= 0 for d in xs):
        return None
    wshape = tuple(int(d) for d in w.values.shape)
    bias = len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant)
    attrs = tuple(sorted((k, v if not isinstance(v, (list, tuple)) else tuple(v))
                         for k, v in node.attrs.items() if isinstance(v, (int, float, str, list, tuple))))
    a = dict(attrs)
    if node.op == "Conv":
        group = int(a.get("group", 1))
        if len(xs) != len(wshape) or group not in (1, xs[1]) or (group > 1 and wshape[1] != 1):
            return None
        return Workload("Conv", tuple(xs), wshape, attrs, bias, 0, None if group > 1 else 1)
    if len(wshape) != 2:
        return None
    if node.op == "Gemm":
        if a.get("transA", 0) or len(xs) != 2:
            return None
        return Workload("Gemm", tuple(xs), wshape, attrs, bias, 0 if a.get("transB", 0) else 1,
                        1 if a.get("transB", 0) else 0)
    if xs[-1] != wshape[0]:
        return None
    return Workload("MatMul", tuple(xs), wshape, (), False, 1, 0)


GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass(frozen=True)
class Recurrent:
    """A recurrent node as prunec's backend lowers it (backend/lower_recurrent.py): one MatMul of
    the whole sequence by the input weights of every direction (`projection`), then `steps` x
    `directions` repetitions of one time step (`step`: the h x R^T product and the gate
    arithmetic, one workload timed at kept hidden counts). The step is where a recognizer's LSTM
    spends its time: a matrix-vector product per step reads all of R, so it is memory-bound and
    costs far more per MAC than the convolutions."""
    projection: Workload
    step: Workload
    steps: int
    directions: int


def recurrent_of(node, shapes: dict) -> Recurrent | None:
    """The node's lowered workloads, or None (not a recurrent op, or shapes/weights unknown)."""
    import onnx_graphsurgeon as gs

    if node.op not in GATES or len(node.inputs) < 3:
        return None
    x, w, r = node.inputs[:3]
    xs = shapes.get(x.name)
    if not isinstance(w, gs.Constant) or not isinstance(r, gs.Constant) or xs is None or len(xs) != 3 \
            or any(not isinstance(d, int) or d <= 0 for d in xs):
        return None
    steps, batch, width = (int(d) for d in xs)
    nd, gh, hidden = (int(d) for d in r.values.shape)
    acts = node.attrs.get("activations")
    attrs = (("activations", tuple(acts[:len(acts) // nd]) if acts else ()),
             ("linear_before_reset", int(node.attrs.get("linear_before_reset", 0))),
             ("peepholes", int(node.op == "LSTM" and len(node.inputs) > 7 and node.inputs[7].name != "")))
    projection = Workload("MatMul", (steps, batch, width), (width, nd * gh), (), False, 1, 0)
    step = Workload(node.op, (batch, hidden), (gh, hidden), attrs, False, 1, None)
    return Recurrent(projection, step, steps, nd)


def workloads_of(graph, shapes: dict) -> list[Workload]:
    """Every workload of a graph's nodes (weighted layers and the lowered recurrent nodes' parts)."""
    out = []
    for n in graph.nodes:
        wl = workload_of(n, shapes)
        if wl is not None:
            out.append(wl)
        rec = recurrent_of(n, shapes)
        if rec is not None:
            out += [rec.projection, rec.step]
    return out


def _variant(wl: Workload, out_n: int, in_n: int | None):
    """(input shape, weight shape, bias shape, attrs) of the workload at these kept counts."""
    x, w = list(wl.x_shape), list(wl.w_shape)
    attrs = dict(wl.attrs)
    if wl.in_axis is None:  # depthwise: channels = groups = outputs
        x[1], w[0], attrs["group"] = out_n, out_n, out_n
    else:
        w[wl.out_axis], w[wl.in_axis] = out_n, in_n
        if wl.op == "Conv":
            x[1] = in_n
        else:
            x[-1] = in_n
    return x, w, [out_n], attrs


def probe_model(probes: list[tuple[Workload, int, int | None]], seed: int = 0):
    """An ONNX model with one independent branch per probe: input x{k} -> the node -> y{k}."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, ins, outs = [], [], [], []
    for k, (wl, out_n, in_n) in enumerate(probes):
        if wl.op in GATES:
            _step_branch(k, wl, out_n, rng, nodes, inits, ins, outs)
            continue
        xs, ws, bs, attrs = _variant(wl, out_n, in_n)
        ins.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, xs))
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(ws)).astype(np.float32), f"w{k}"))
        inputs = [f"x{k}", f"w{k}"]
        if wl.has_bias:
            bias = bs if wl.op == "Conv" else [out_n]
            inits.append(numpy_helper.from_array(rng.standard_normal(bias).astype(np.float32), f"b{k}"))
            inputs.append(f"b{k}")
        nodes.append(helper.make_node(wl.op, inputs, [f"y{k}"], **attrs))
        outs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "latency_probes", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _step_branch(k: int, wl: Workload, hidden: int, rng, nodes, inits, ins, outs) -> None:
    """Branch k of a probe model: one time step of a recurrent node at `hidden` units, built by the
    lowering's own step function from inputs x{k}_x (the step's input projection), x{k}_h and
    x{k}_c (the state)."""
    from onnx import TensorProto, helper

    from .lower_recurrent import _ACTS, _DEFAULT_ACTS, _Builder, _Cell, _gru_step, _lstm_step, _rnn_step

    a = dict(wl.attrs)
    gates, batch = GATES[wl.op], wl.x_shape[0]
    acts = [_ACTS[x.lower()] for x in a["activations"]] or _DEFAULT_ACTS[wl.op]
    b = _Builder(helper.make_node(wl.op, [], [f"y{k}"], name=f"step{k}"), 17, k)
    rt = (0.1 * rng.standard_normal((hidden, gates * hidden))).astype(np.float32)
    rb = np.zeros(gates * hidden, np.float32)  # R's biases; the lowering folds most into x
    peep = (0.1 * rng.standard_normal(3 * hidden)).astype(np.float32) if a["peepholes"] else None
    cell = _Cell(b, rt, hidden, acts, bool(a["linear_before_reset"]), rb, peep)
    x, h, c = f"x{k}_x", f"x{k}_h", f"x{k}_c"
    ins.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, batch, gates * hidden]))
    ins.append(helper.make_tensor_value_info(h, TensorProto.FLOAT, [1, batch, hidden]))
    lstm = wl.op == "LSTM"
    if lstm:
        ins.append(helper.make_tensor_value_info(c, TensorProto.FLOAT, [1, batch, hidden]))
    step = {"LSTM": _lstm_step, "GRU": _gru_step, "RNN": _rnn_step}[wl.op]
    h_new, c_new = step(cell, x, h, c if lstm else None)
    nodes += b.nodes
    inits += b.inits
    for name in (h_new, c_new) if lstm else (h_new,):
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))


def time_probes(model, options, n: int) -> list[float]:
    """Microseconds of each of the n branches of a probe model: its kernel calls, each timed alone
    on one thread by that thread's CPU time (fastest of ROUNDS rounds of 10 samples of ~0.5 ms)."""
    import tvm

    from . import measure

    compiled, vm, _ = _loaded(model, options, None, "the layer probes")
    sig = compiled.signature
    inputs = measure.make_inputs(sig)
    args = [tvm.runtime.tensor(inputs[i["name"]]) for i in sig["inputs"]]
    branch_of_input = {i: branch_of(s["name"]) for i, s in enumerate(sig["inputs"])}
    calls: list[tuple[int, object, list]] = []
    state = {"branch": -1}

    def record(func, name, before_run, _ret, *fargs):
        if before_run and not name.startswith(("vm.builtin", "runtime.")) and "layout_transform" not in name:
            tensors = [a for a in fargs if isinstance(a, tvm.runtime.Tensor)]
            for j, arg in enumerate(args):
                if any(t.same_as(arg) for t in tensors):
                    state["branch"] = branch_of_input[j]
                    break
            calls.append((state["branch"], func, tensors))
        return 0

    vm.set_instrument(record)
    vm["main"](*args)
    vm.set_instrument(None)
    if any(b < 0 for b, _, _ in calls):
        raise PrunecError("latency table: a probe kernel ran before any branch input (a bug)")
    best = [np.inf] * len(calls)
    reps = []
    for j, (_, func, fargs) in enumerate(calls):  # calls per sample: ~0.5 ms of work
        func(*fargs)
        t0 = CLOCK()
        func(*fargs)
        reps.append(int(np.clip(5e-4 / max(CLOCK() - t0, 1e-7), 1, 100)))
    for _ in range(ROUNDS):
        for j, (_, func, fargs) in enumerate(calls):
            for _ in range(10):
                t0 = CLOCK()
                for _ in range(reps[j]):
                    func(*fargs)
                best[j] = min(best[j], (CLOCK() - t0) / reps[j])
    us = [0.0] * n
    for (b, _, _), t in zip(calls, best):
        us[b] += t * 1e6
    return us


def branch_of(input_name: str) -> int:
    """The branch a probe model's input belongs to: x{k}, or x{k}_{part} for a branch with more."""
    return int(input_name[1:].split("_")[0])


class LatencyTable:
    """Per workload digest: {"out": {count: µs}, "in": {count: µs}} (depthwise: "out" only)."""

    def __init__(self, path: Path | None, target_key: str):
        self.path, self.target_key = path, target_key
        self.entries: dict = {}
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text()).get("workloads", {})
            except (OSError, ValueError):
                self.entries = {}  # a broken file is rebuilt, not fatal
        self.measured_now = 0

    def lookup(self, wl: Workload) -> dict | None:
        return self.entries.get(wl.key(self.target_key))

    def missing(self, workloads: list[Workload], unit: int = 8) -> list[tuple[Workload, int, int | None]]:
        """Probes not in the table yet: (workload, out count, in count)."""
        todo, seen = [], set()
        for wl in workloads:
            key = wl.key(self.target_key)
            if key in seen:
                continue
            seen.add(key)
            have = self.entries.get(key, {})
            for c in counts(wl.out_full, unit):
                if str(c) not in have.get("out", {}):
                    todo.append((wl, c, wl.in_full))
            if wl.in_axis is not None:
                for c in counts(wl.in_full, unit):
                    if c != wl.in_full and str(c) not in have.get("in", {}):
                        todo.append((wl, wl.out_full, c))
        return todo

    def record(self, wl: Workload, out_n: int, in_n: int | None, us: float) -> None:
        """One timing of a probe; a probe timed again keeps its fastest (noise only adds time)."""
        e = self.entries.setdefault(wl.key(self.target_key), {
            "op": wl.op, "x": list(wl.x_shape), "w": list(wl.w_shape), "out": {}, "in": {}})
        side, n = ("out", out_n) if in_n == wl.in_full else ("in", in_n)
        if side == "in" and (out_n != wl.out_full or in_n is None):
            return
        old = e[side].get(str(n))
        e[side][str(n)] = round(us if old is None else min(old, us), 3)
        self.measured_now += 1

    def suspicious(self, workloads: list[Workload]) -> list[tuple[Workload, int, int | None]]:
        """Probes whose time looks like a stall, not the kernel: slower by JUMP than the next larger
        count, or than the next smaller count scaled linearly to this one. Each is retried RETRIES
        times at most (a real slow count, such as 40 of 16-lane vectors, stays as measured)."""
        out, seen = [], set()
        for wl in workloads:
            key = wl.key(self.target_key)
            e = self.entries.get(key)
            if e is None or key in seen:
                continue
            seen.add(key)
            tries = e.setdefault("retried", {})
            for side in ("out", "in"):
                pts = dict(e[side])
                if side == "in" and wl.in_axis is not None and e["out"].get(str(wl.out_full)) is not None:
                    pts[str(wl.in_full)] = e["out"][str(wl.out_full)]
                xs = sorted(int(k) for k in pts)
                for j, c in enumerate(xs):
                    t = pts[str(c)]
                    bad = (j + 1 < len(xs) and t > JUMP * pts[str(xs[j + 1])]) or (
                        j > 0 and t > JUMP * pts[str(xs[j - 1])] * c / xs[j - 1])
                    tag = f"{side}{c}"
                    if bad and tries.get(tag, 0) < RETRIES:
                        tries[tag] = tries.get(tag, 0) + 1
                        full_side = side == "out" or c == wl.in_full
                        out.append((wl, c, wl.in_full) if full_side else (wl, wl.out_full, c))
        return out

    def save(self) -> None:
        """Merged with what another run may have written meanwhile, replaced atomically."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            merged = {}
            if self.path.is_file():
                try:
                    merged = json.loads(self.path.read_text()).get("workloads", {})
                except ValueError:
                    merged = {}
            for k, e in self.entries.items():
                old = merged.get(k, {})
                merged[k] = dict(e, out=_fastest(old.get("out", {}), e["out"]), **{"in": _fastest(old.get("in", {}), e["in"])})
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".latency-")
            with os.fdopen(fd, "w") as f:
                json.dump({"version": 1, "workloads": merged}, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache folder: the table is used for this run only

    def build(self, workloads: list[Workload], options, unit: int = 8) -> None:
        """Time every probe the table lacks, CHUNK probes per compiled probe model, then time the
        suspicious points again (up to RETRIES passes)."""
        todo = self.missing(workloads, unit)
        if todo:
            with progress.phase(f"latency table: timing {len(todo)} layer variants on {options.target}",
                                total=len(todo), unit="kernel") as bar:
                self._time(todo, options, bar)
        for _ in range(RETRIES):
            again = self.suspicious(workloads)
            if not again:
                break
            with progress.phase(f"latency table: timing {len(again)} outliers again", total=len(again),
                                unit="kernel") as bar:
                self._time(again, options, bar)

    def _time(self, todo: list, options, bar) -> None:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            us = time_probes(probe_model(chunk), options, len(chunk))
            for (wl, out_n, in_n), t in zip(chunk, us):
                self.record(wl, out_n, in_n, t)
            self.save()
            bar.update(len(chunk))


def _fastest(a: dict, b: dict) -> dict:
    return {k: min(v for v in (a.get(k), b.get(k)) if v is not None) for k in {**a, **b}}


def open_table(options) -> tuple[LatencyTable, object]:
    """The table of the options' target (beside its tuning database) and the DeployTarget; a target
    whose code does not run on this machine cannot be timed here: PrunecError."""
    from .targets import base, get_target

    tgt = get_target(options.target)
    if not tgt.runs_here:
        raise PrunecError(f"--target-latency times layers on the target, and {options.target} code does not run "
                          "on this machine: use --target x86 (or --target-macs for other targets)")
    cfg = tgt.config(options)
    db = Path(options.tuning_db or base.default_db_dir(cfg)).expanduser()
    return LatencyTable(db / TABLE_FILE, base.target_key(cfg)), tgt


def _loaded(model, options, input_shapes, what: str):
    """(compiled, vm, device): the model compiled as prunec compiles it, exported, loaded, and the
    runtime on THREADS threads (see the module's doc on the clock)."""
    from . import measure

    compiled = _compile(model, options, input_shapes, what)
    with tempfile.TemporaryDirectory(prefix="prunec-latency-") as d:
        vm, dev = measure.load_vm(compiled.export(Path(d, "model.so")))
    measure.set_tvm_threads(THREADS)
    return compiled, vm, dev


def _compile(model, options, input_shapes, what: str):
    """compile_model, a TVM failure (an op its ONNX importer lacks, such as LSTM) as one line."""
    from .api import compile_model
    from .compare import _one_line

    try:
        return compile_model(model, options=options, input_shapes=input_shapes)
    except PrunecError:
        raise
    except Exception as e:
        raise PrunecError(f"--target-latency times {what} with TVM, which cannot compile it for "
                          f"{options.target}: {_one_line(e)}; use --target-macs") from e


class ModelTimer:
    """Whole models' latency on the target, timed like the probes (one thread, its CPU time) in
    interleaved rounds: each round runs every model back to back for ROUND_S of thread CPU time
    and keeps its mean per call; a model's figure is its fastest round (noise only adds time)."""

    ROUND_S = 0.1

    def __init__(self, options):
        self.options = options
        self.runs: dict[str, object] = {}
        self.calling_thread_share = 1.0
        self.rounds: dict[str, list[float]] = {}  # the last time()'s ms per round, per model

    def add(self, name: str, model, input_shapes: dict | None = None) -> None:
        """Compile and load `model` (an ONNX proto) as `name`; TVM failures as one line."""
        import tvm

        from . import measure

        compiled, vm, dev = _loaded(model, self.options, input_shapes, "the model")
        inputs = measure.make_inputs(compiled.signature)
        args = [tvm.runtime.tensor(inputs[i["name"]], dev) for i in compiled.signature["inputs"]]
        f = vm["main"]
        f(*args)
        self.runs[name] = lambda: f(*args)
        c0, p0 = time.thread_time(), time.process_time()
        for _ in range(2):
            f(*args)
        # ~1 when the runtime ran the model in this thread, as THREADS = 1 should make it
        self.calling_thread_share = min(self.calling_thread_share,
                                        (time.thread_time() - c0) / max(time.process_time() - p0, 1e-9))

    def drop(self, name: str) -> None:
        self.runs.pop(name, None)

    def time(self, names: list[str] | None = None, rounds: int = 7) -> dict[str, float]:
        """{name: ms} of the models `names` (all by default), the fastest of `rounds` interleaved rounds."""
        from . import measure

        measure.set_tvm_threads(THREADS)
        names = list(self.runs) if names is None else names
        self.rounds = measure.alternate({name: self.runs[name] for name in names}, rounds, self.ROUND_S, CLOCK)
        return {name: min(ms) for name, ms in self.rounds.items()}


def model_latency_ms(model, options, input_shapes: dict | None = None, rounds: int = 7) -> float:
    """One model's latency (ms) on the target, timed as ModelTimer times it."""
    timer = ModelTimer(options)
    timer.add("model", model, input_shapes)
    return timer.time(rounds=rounds)["model"]

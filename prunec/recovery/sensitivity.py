"""What pruning costs, measured on calibration data.

`group_sensitivity` (the probe allocation) zeroes channels without refitting, one group at a time, so
it rates groups whose loss reconstruction repairs well (often the stem) as costly. `RefitMeasure`
(the refit allocation) applies a whole candidate plan, refits the consumers on the fit split as the
pipeline will, and measures the end-to-end output error on the held-out split: the greedy of
allocation.budget_plan then walks on real pruned models, interactions included. Each step costs one
prune + refit per group, so it is for small models (allocation.choose).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from prunec.dependency import Analysis
from prunec.graph import Model
from prunec.layers import refit_kind
from prunec.plan import Plan, keep_count

from .data import CalibData
from .scoring import scoring_view
from .refit import reconstruct
from .statistics import collect_grams
from .downstream import Part, part_after, part_session
from .stream import (OriginalValues, Tapper, batch_capable, channel_energy, channel_sq, output_axes, output_segments,
                     relative_error)

CACHE_BYTES = 512 * 2**20  # the original's layer tensors on the fit split are kept when they fit in this
PROBE_CACHE_BYTES = 512 * 2**20  # the original's tensors where the probed parts read it, on the probe samples


GRAM_SAMPLES = 128  # fit samples whose Gram matrices the compensated probes solve with
GRAM_ROWS = 64  # im2col rows per sample, as the lsq criterion


@dataclass
class Consumer:
    """A refittable layer reading a group, with the Gram matrices of its input in the original model:
    any set of removed input channels gets its least-squares compensation by one solve, no data pass."""

    node: gs.Node
    G: np.ndarray  # [X 1]^T [X 1]
    B: np.ndarray  # [X 1]^T Y
    blocks: list[np.ndarray]  # row/column indices of G belonging to each channel of the group
    bias: str | None  # the bias constant fed per probe (None: no intercept, e.g. MatMul)
    _start: tuple | None = field(default=None, repr=False)

    def compensated(self, removed: np.ndarray, lam: float = 1e-3) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Weight and bias after the layer is refitted without the `removed` channels (local mode:
        on the original model's input), as the reconstruction pass would; None if the solve fails."""
        kind = refit_kind(self.node)
        if self._start is None:  # the layer's own weights, read once for all probes
            self._start = kind.matrices(self.node, 1)
        W0, b0 = self._start
        d = self.G.shape[0] - 1
        gone = np.concatenate([self.blocks[int(c)] for c in removed]) if len(removed) else np.zeros(0, int)
        keep = np.setdiff1d(np.arange(d), gone)
        idx = np.concatenate([keep, [d]]) if self.bias is not None else keep
        A = self.G[np.ix_(idx, idx)].copy()
        k = len(keep)
        reg = lam * (np.trace(A[:k, :k]) / max(k, 1) + 1e-12)
        A[np.arange(k), np.arange(k)] += reg
        rhs = self.B[idx].copy()
        rhs[:k] += reg * W0[0][keep]
        try:
            sol = np.linalg.solve(A, rhs)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(sol)):
            return None
        W = np.zeros_like(W0)
        W[0][keep] = sol[:k]
        b = sol[k:k + 1] if self.bias is not None else b0
        return kind.arrays(self.node, W, b.reshape(1, -1), self.node.inputs[1].values.shape)


def with_biases(model: Model, nodes: list[gs.Node]) -> tuple[Model, dict[str, str]]:
    """The model with an explicit zero bias on each Conv/Gemm in `nodes` that has none (same function),
    so a probe can feed the refitted intercept; and the bias constant's name by node."""
    graph = model.graph.copy()
    by_name = {n.name: n for n in graph.nodes}
    names, added = {}, False
    for orig in nodes:
        node = by_name[orig.name]
        if node.op not in ("Conv", "Gemm"):
            continue
        if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
            names[node.name] = node.inputs[2].name
            continue
        if len(node.inputs) > 2:
            continue  # a bias computed at run time: no intercept
        w = node.inputs[1].values
        m = w.shape[0] if node.op == "Conv" else (w.shape[0] if node.attrs.get("transB", 0) else w.shape[1])
        bias = gs.Constant(f"{node.name}.probe_bias", np.zeros(m, w.dtype))
        node.inputs.append(bias)
        if node.op == "Gemm":
            node.attrs["beta"] = 1.0
        names[node.name], added = bias.name, True
    return (model.with_graph(graph) if added else model), names


def gram_consumers(model: Model, analysis: Analysis, groups, fit: CalibData) -> tuple[Model, dict[str, list[Consumer]]]:
    """The refittable consumers of each group with their Gram matrices on (a subset of) the fit split,
    and the model to probe (zero biases made explicit)."""
    from prunec.criteria.lsq import LeastSquares

    jobs = LeastSquares().gram_jobs(analysis, groups)
    if not jobs:
        return model, {}
    probe_model, biases = with_biases(model, [j.node for j in jobs])
    grams = collect_grams(model, fit.subset(GRAM_SAMPLES), jobs, rows=GRAM_ROWS)
    out: dict[str, list[Consumer]] = {}
    for job, (G, B) in zip(jobs, grams):
        if G is None:
            continue
        K = refit_kind(job.node).patch_width(job.node.inputs[1].values.shape)
        blocks = [np.concatenate([np.arange(p * K, (p + 1) * K) for p in np.atleast_1d(job.positions[c])])
                  for c in range(job.group.size)]
        out.setdefault(job.group.id, []).append(Consumer(job.node, G, B, blocks, biases.get(job.node.name)))
    return probe_model, out


def group_sensitivity(model, analysis: Analysis, data, scores: dict[str, np.ndarray],
                      probes: tuple[float, ...] = (0.25, 0.5, 0.75), samples: int = 16,
                      log=lambda s: None, fit: CalibData | None = None,
                      cache_bytes: int = PROBE_CACHE_BYTES) -> dict[str, list[tuple[int, float]]]:
    """For each group: [(channels removed, end-to-end relative output error)] when that group alone
    loses its least important channels at each probe share, on calibration samples: its consumers'
    weights fed zeroed columns. With `fit` (reconstruction on), the refittable consumers are fed their
    least-squares compensation instead (solved from Gram matrices on the fit split, as the refit in
    local mode would), so a group that reconstruction repairs well is not rated as costly as one it
    cannot repair.
    A probe runs only the part of the model after the group's consumers (downstream.py), from the
    original's tensors where that part reads the rest, computed once for groups whose such tensors
    fit in `cache_bytes` together; a group whose own do not fit (or whose part ONNX Runtime cannot
    load) runs the whole model, its weights fed as graph inputs. cache_bytes=0: the whole model always."""
    model = scoring_view(model)  # softmax outputs measured by their logits
    tensors = analysis.graph.tensors()
    groups = [g for g in analysis.prunable_groups if g.id in scores]
    in_members = {g.id: [m for m in g.members if m.role == "in" and isinstance(tensors.get(m.tensor), gs.Constant)]
                  for g in groups}
    probe_model, comp = gram_consumers(model, analysis, groups, fit) if fit is not None else (model, {})
    ptensors = probe_model.graph.tensors()
    fed = {g.id: sorted({m.tensor for m in in_members[g.id]}
                        | {c.node.inputs[1].name for c in comp.get(g.id, [])}
                        | {c.bias for c in comp.get(g.id, []) if c.bias is not None}) for g in groups}
    base = {name: ptensors[name].values for names in fed.values() for name in names}

    def weights(g, n: int) -> dict[str, np.ndarray]:
        """What one probe feeds: the group's n least important channels gone from its consumers."""
        order = np.argsort(scores[g.id], kind="stable")
        extra = {name: base[name] for name in fed[g.id]}
        for m in in_members[g.id]:
            w = np.array(extra[m.tensor])
            index = [slice(None)] * w.ndim
            index[m.axis] = m.positions[order[:n]].ravel()
            w[tuple(index)] = 0
            extra[m.tensor] = w
        for c in comp.get(g.id, []):
            solved = c.compensated(order[:n])
            if solved is not None:
                extra[c.node.inputs[1].name] = solved[0]
                if c.bias is not None:
                    extra[c.bias] = solved[1].reshape(base[c.bias].shape)
        return extra

    counts = {g.id: sorted({g.size - keep_count(g.size, p, 1, 1) for p in probes} - {0}) for g in groups}
    data = data.subset(samples)
    out, whole = _downstream_curves(probe_model, groups, fed, counts, weights, data, cache_bytes, log)
    if whole:
        out.update(_whole_model_curves(probe_model, whole, fed, counts, weights, base, data))
    return {g.id: out[g.id] for g in groups}


def _downstream_curves(model: Model, groups, fed, counts, weights, data: CalibData, cache_bytes: int, log):
    """Curves of the groups whose parts run from cached frontier tensors; the groups left for the whole model."""
    if cache_bytes <= 0 or not groups:
        return {}, list(groups)
    proto = model.to_proto(restore_io=batch_capable(model) or bool(model.dynamic_dims))
    outputs = [o.name for o in proto.graph.output]
    parts = {g.id: part_after(proto, set(fed[g.id])) for g in groups}

    def nbytes(names) -> int:
        return OriginalValues.nbytes(model, data, list(names) + outputs)

    # Chunks of groups whose frontier tensors fit the budget together, in graph order (neighbours
    # share most of theirs); one pass of the original per chunk computes them.
    chunks, whole, taps = [], [], set()
    for g in sorted(groups, key=lambda g: parts[g.id].nodes[0] if parts[g.id].nodes else 0):
        own = set(parts[g.id].frontier)
        if nbytes(own) > cache_bytes:
            whole.append(g)
        elif chunks and nbytes(taps | own) <= cache_bytes:
            chunks[-1].append(g)
            taps |= own
        else:
            chunks.append([g])
            taps = own
    out, energy = {}, None
    axes = output_axes(model, outputs)
    segments = output_segments(model, outputs, axes)
    graph_inputs = {i.name for i in proto.graph.input}
    for chunk in chunks:
        need = sorted(set().union(*(parts[g.id].frontier for g in chunk)))
        tapper = Tapper(model, sorted(set(need) - graph_inputs) + outputs, only_taps=True)
        cache = []
        for feeds in tapper.feeds(data):
            values = tapper.run(feeds)
            cache.append({t: feeds[t] if t in graph_inputs else values[t] for t in need + outputs})
        ref = [[np.asarray(item[o], np.float64) for o in outputs] for item in cache]
        if energy is None:
            energy = [channel_energy([r[j] for r in ref], axes[j]) for j in range(len(outputs))]
        dtypes = {t: cache[0][t].dtype for t in need} if cache else {}
        for g in chunk:
            part = parts[g.id]
            try:
                out[g.id] = _part_curve(proto, part, g, counts[g.id], weights, cache, ref, outputs, axes,
                                        energy, segments, dtypes)
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime could not load or run the part
                log(f"probes: the part after {g.id} did not run on its own ({exc}); running the whole model")
                whole.append(g)
        del cache, ref
    return out, whole


def _part_curve(proto, part: Part, g, counts, weights, cache, ref, outputs, axes, energy, segments, dtypes):
    curve = []
    sess = part_session(proto, part, dtypes) if part.outputs else None
    for n in counts:
        extra = weights(g, n)
        err = [np.zeros_like(e) for e in energy]
        for item, r in zip(cache if sess is not None else [], ref):
            feeds = {t: item[t] for t in part.frontier}
            feeds.update((name, extra[name]) for name in part.fed)
            values = dict(zip(part.outputs, sess.run(part.outputs, feeds)))
            for j, o in enumerate(outputs):
                if o in values:  # the others are the original's: no error
                    err[j] += channel_sq(np.asarray(values[o], np.float64) - r[j], axes[j])
        curve.append((int(n), relative_error(err, energy, segments)))
    return curve


def _whole_model_curves(model: Model, groups, fed, counts, weights, base, data: CalibData):
    """Curves measured on the whole model: one session, the groups' weights fed as graph inputs."""
    names = sorted({name for g in groups for name in fed[g.id]})
    tapper = Tapper(model, [], weights_as_inputs=names)
    ref: list[list[np.ndarray]] = []
    tapper.stream(data, lambda v: ref.append([np.asarray(v[o], np.float64) for o in tapper.outputs]))
    axes = output_axes(model, tapper.outputs)
    segments = output_segments(model, tapper.outputs, axes)
    energy = [channel_energy([r[j] for r in ref], axes[j]) for j in range(len(tapper.outputs))]
    out = {}
    for g in groups:
        curve = []
        for n in counts[g.id]:
            extra = {name: base[name] for name in names}
            extra.update(weights(g, n))
            err = [np.zeros_like(e) for e in energy]
            it = iter(ref)

            def compare(values, err=err, it=it):
                r = next(it)
                for j, o in enumerate(tapper.outputs):
                    err[j] += channel_sq(np.asarray(values[o], np.float64) - r[j], axes[j])

            tapper.stream(data, compare, extra=extra)
            curve.append((int(n), relative_error(err, energy, segments)))
        out[g.id] = curve
    return out


class RefitMeasure:
    """measure(plan) -> relative output error on `check` of the pruned, refitted model vs `reference`.
    `shrink(analysis, plan) -> Model` applies a plan (the shrink pass; given, so recovery does not
    import the passes that use it)."""

    def __init__(self, model: Model, analysis: Analysis, fit: CalibData, check: CalibData,
                 shrink: Callable[[Analysis, Plan], Model], mode: str = "auto", reference: Model | None = None):
        self.model, self.analysis, self.fit, self.check, self.mode = model, analysis, fit, check, mode
        self.shrink = shrink
        reference = scoring_view(reference or model)  # softmax outputs measured by their logits
        ref = Tapper(reference, [])
        self.n_out, self.batch = ref.n_graph_outputs, ref.batch
        self.ref: list[list[np.ndarray]] = []
        ref.stream(check, lambda v: self.ref.append([np.asarray(v[o], np.float64)
                                                    for o in ref.outputs[:self.n_out]]))
        self.axes = output_axes(reference, ref.outputs[:self.n_out])
        self.segments = output_segments(reference, ref.outputs[:self.n_out], self.axes)
        self.energy = [channel_energy([r[j] for r in self.ref], self.axes[j]) for j in range(self.n_out)]
        self.evaluations, self.seconds = 0, 0.0
        tensors = [t.name for n in analysis.graph.nodes if refit_kind(n) is not None
                   for t in (n.inputs[0], n.outputs[0])]
        self.cache = (OriginalValues(model, fit, tensors)
                      if OriginalValues.nbytes(model, fit, tensors) <= CACHE_BYTES else None)

    def __call__(self, plan: Plan) -> float:
        t0 = time.perf_counter()
        pruned = self.shrink(self.analysis, plan)
        refit, _ = reconstruct(self.model, self.analysis, plan, pruned, self.fit, mode=self.mode,
                               cache=self.cache)
        err = min(self._error(pruned), self._error(refit))  # the pipeline keeps the better of the two
        self.evaluations += 1
        self.seconds += time.perf_counter() - t0
        return err

    def _error(self, model: Model) -> float:
        tap = Tapper(scoring_view(model), [])
        num = [np.zeros_like(e) for e in self.energy]
        it = iter(self.ref)

        def compare(values):
            r = next(it)
            for j, o in enumerate(tap.outputs[:self.n_out]):
                num[j] += channel_sq(np.asarray(values[o], np.float64) - r[j], self.axes[j])
        # same batches as the reference pass: a batch-capable model stays batch-capable after pruning
        tap.batch = self.batch if tap.batched else 1
        tap.stream(self.check, compare)
        return relative_error(num, self.energy, self.segments)

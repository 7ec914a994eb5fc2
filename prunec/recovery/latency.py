"""Latency, not MACs, as the budget: `--target-latency F` keeps at most F of the original model's
measured latency on the target.

`LatencyModel` has MacsModel's interface (allocation.py: `total`, `macs(removed)`), in microseconds:
each weighted node's time comes from the measured table (backend/latency_table.py) at its kept output
and input counts, t(out, in) = t(out, all in) * t(all out, in) / t(all, all); a recurrent node
(LSTM/GRU/RNN) is its input projection plus steps x directions times one time step at its kept
hidden count, as the backend lowers it; nodes the table does not time (grouped convs) scale with
their MACs at the µs per MAC of the timed ones; the rest of the
model (the measured whole-model latency minus the weighted nodes' time: copies, pools, activations
left unfused, and the in-model slowdown of the timed kernels) shrinks partly with the timed layers:
a share `fixed` of it stays, the rest scales with the timed layers' time; `fixed` is fitted on one
more measured model (LatencyBudget: every group pruned by half). `keep_counts` gives each group the kept counts worth stepping
through: those the table says run faster than every larger count (a count at which the schedules
run no faster than at a larger one buys nothing)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from prunec.backend.latency_table import LatencyTable, counts, recurrent_of, workload_of
from prunec.dependency import Analysis, Group
from prunec.macs import node_macs
from prunec.plan import rounding_multiple

MIN_GAIN = 0.002  # a smaller count must be at least this share faster than every larger one


class _Curve:
    """Time (µs) against a kept count, interpolated between measured counts. A count slower than a
    larger one is read at the larger one's time (its envelope from above: keeping the extra channels
    costs nothing, and a stall the table kept cannot make fewer channels look dear)."""

    def __init__(self, points: dict):
        xs = sorted(int(k) for k in points)
        self.x = np.array(xs, dtype=np.float64)
        y = np.array([points[str(k)] for k in xs], dtype=np.float64)
        self.y = np.minimum.accumulate(y[::-1])[::-1]

    def __call__(self, n: float) -> float:
        return float(np.interp(n, self.x, self.y))


@dataclass
class _Node:
    """One timed part of the model: a workload read from the table at the kept share of its axes
    (out/in: (weight axis size, group members on it)), `mult` times; or (wl None) an untimed layer
    scaled by the kept share of all its weight axes."""
    axes: dict
    wl: object
    out_c: _Curve | None
    in_c: _Curve | None
    t_full: float
    mult: int = 1


class LatencyModel:
    quantity = "latency_us"

    def __init__(self, analysis: Analysis, groups: list[Group], table: LatencyTable, original_us: float,
                 steps_from_table: bool = True, unit: int = 8, fixed: float = 1.0):
        shapes = analysis.model.shapes
        self.groups = groups
        index = {g.id: i for i, g in enumerate(groups)}
        members: dict[tuple[str, int], list] = {}  # (weight, axis) -> [(group index, reps, positions)]
        for g in groups:
            for m in g.members:
                if m.role in ("out", "in"):
                    members.setdefault((m.tensor, m.axis), []).append((index[g.id], m.positions.shape[1], m.positions))
        self.nodes: list[_Node] = []
        timed_us = timed_macs = 0.0
        untimed = []
        for n in analysis.graph.nodes:
            macs = node_macs(n, shapes)
            weights = [t for t in n.inputs if isinstance(t, gs.Constant) and t.values.ndim >= 2]
            if not macs or not weights:
                continue
            parts = self._timed_parts(n, shapes, table, members)
            if parts:
                self.nodes += parts
                timed_us += sum(p.t_full * p.mult for p in parts)
                timed_macs += macs
            else:
                axes = {f"{t.name}:{a}": (t.values.shape[a], members[(t.name, a)])
                        for t in weights for a in range(t.values.ndim) if (t.name, a) in members}
                untimed.append((axes, macs))
        per_mac = timed_us / timed_macs if timed_macs else 0.0
        for axes, macs in untimed:
            self.nodes.append(_Node(axes, None, None, None, macs * per_mac))
        self.weighted_us = sum(p.t_full * p.mult for p in self.nodes)
        self.original_us = original_us
        self.rest_us = max(0.0, original_us - self.weighted_us)
        self.fixed = fixed
        self.total = self.rest_us + self.weighted_us
        self.keep_counts = self._keep_counts(unit) if steps_from_table else None

    @staticmethod
    def _timed_parts(n, shapes, table: LatencyTable, members: dict) -> list[_Node]:
        """The node's parts the table has times for ([] when it lacks any of them)."""
        def part(wl, out_axis, in_axis, mult=1):
            entry = table.lookup(wl)
            if entry is None or not entry.get("out"):
                return None
            out_c = _Curve(entry["out"])
            t_full = out_c(wl.out_full)
            in_c = _Curve(dict(entry["in"], **{str(wl.in_full): t_full})) if wl.in_axis is not None else None
            axes = {"out": (out_axis[0].values.shape[out_axis[1]], members.get((out_axis[0].name, out_axis[1]), []))}
            if in_axis is not None:
                axes["in"] = (in_axis[0].values.shape[in_axis[1]], members.get((in_axis[0].name, in_axis[1]), []))
            return _Node(axes, wl, out_c, in_c, t_full, mult)

        wl = workload_of(n, shapes)
        if wl is not None:
            w = n.inputs[1]
            parts = [part(wl, (w, wl.out_axis), None if wl.in_axis is None else (w, wl.in_axis))]
        else:
            rec = recurrent_of(n, shapes)
            if rec is None:
                return []
            w, r = n.inputs[1], n.inputs[2]
            # W [directions, gates x hidden, input]: the projection's outputs and inputs; R's last
            # axis: the hidden units, the step's one count
            parts = [part(rec.projection, (w, 1), (w, 2)),
                     part(rec.step, (r, 2), None, rec.steps * rec.directions)]
        return [] if any(p is None for p in parts) else parts

    @staticmethod
    def _axis_keep(size: int, members: list, removed: np.ndarray) -> float:
        """Kept share of one weight axis (as MacsModel counts it)."""
        if not members:
            return 1.0
        if sum(p.size for _, _, p in members) <= size:
            return max(0.0, 1.0 - sum(removed[i] * reps for i, reps, _ in members) / size)
        mask = np.ones(size, dtype=bool)
        for i, _, pos in members:
            mask[pos[:int(removed[i])].ravel()] = False
        return mask.sum() / size

    def node_us(self, k: int, removed: np.ndarray) -> float:
        p = self.nodes[k]
        if p.wl is None:
            keep = 1.0
            for size, members in p.axes.values():
                keep *= self._axis_keep(size, members, removed)
            return p.t_full * keep
        size, members = p.axes["out"]
        t = p.out_c(p.wl.out_full * self._axis_keep(size, members, removed))
        if p.in_c is not None and p.t_full > 0:
            size, members = p.axes["in"]
            t *= p.in_c(p.wl.in_full * self._axis_keep(size, members, removed)) / p.t_full
        return t * p.mult

    def macs(self, removed: np.ndarray) -> float:
        """Estimated latency (µs) with removed[i] channels taken from groups[i] (the budget's unit)."""
        w = self.weighted(removed)
        share = w / self.weighted_us if self.weighted_us else 1.0
        return self.rest_us * (self.fixed + (1.0 - self.fixed) * share) + w

    def weighted(self, removed: np.ndarray) -> float:
        """The timed and MAC-scaled layers' µs alone."""
        return sum(self.node_us(k, removed) for k in range(len(self.nodes)))

    def _keep_counts(self, unit: int) -> list[list[int] | None]:
        """Per group: the kept counts the table measured on all its timed nodes, those faster than
        every larger one; None (the rounding multiple) for groups the table says nothing about."""
        out: list[list[int] | None] = []
        touching: list[list[int]] = [[] for _ in self.groups]
        for k, p in enumerate(self.nodes):
            for _, members in p.axes.values():
                for i, reps, _ in members:
                    touching[i].append(k if p.wl is not None and reps == 1 else -1)
        for i, g in enumerate(self.groups):
            ks = touching[i]
            if not ks or -1 in ks or rounding_multiple(g, unit) != unit:
                out.append(None)
                continue
            removed = np.zeros(len(self.groups))
            allowed, best = [], np.inf
            for c in sorted(counts(g.size, unit), reverse=True):
                removed[i] = g.size - c
                t = sum(self.node_us(k, removed) for k in set(ks))
                if c == g.size or t < best * (1.0 - MIN_GAIN):
                    allowed.append(c)
                    best = min(best, t)
            out.append(sorted(allowed))
        return out


class LatencyBudget:
    """What `--target-latency F` measures on the target before the allocation (the original model's
    latency, the table of its layers) and after it (the pruned model's latency), for report.json."""

    def __init__(self, opts):
        from prunec.backend.latency_table import open_table
        from prunec.backend.options import BackendOptions
        from prunec.errors import PrunecError

        share = opts.target_latency
        if not isinstance(share, (int, float)) or not 0.0 < share <= 1.0:
            raise PrunecError(f"--target-latency {share}: must be in (0, 1] (the share of the original latency to keep)")
        if opts.target_macs is not None:
            raise PrunecError("--target-latency and --target-macs are two budgets: give one of them")
        if (opts.steps or 1) > 1:
            raise PrunecError("--target-latency prunes in one round: drop --steps")
        backend = getattr(opts, "backend", None)
        if backend is None:
            backend = BackendOptions(target=opts.target if opts.target not in (None, "none") else "x86")
        elif backend.target in (None, "none"):
            from dataclasses import replace

            backend = replace(backend, target="x86")
        self.options = backend.check()
        self.table, _ = open_table(self.options)
        self.steps_from_table = opts.round_to is None
        self.share = float(share)
        self.original_ms = None
        self.fixed = 1.0
        self.entry: dict = {}

    def prepare(self, model, analysis, shrink) -> None:
        """Time the original model and fill the table with its layers (cached ones cost nothing).
        shrink(analysis, plan) -> model: the pruning pass's (recovery never imports the passes)."""
        import time

        from prunec import progress
        from prunec.backend.latency_table import METHOD, THREADS, ModelTimer, workloads_of

        if self.original_ms is not None and self.entry.get("model") is model:
            return  # another budget on the same model (prunec sweep, benchmarks): measured already
        t0 = time.perf_counter()
        workloads = workloads_of(analysis.graph, analysis.model.shapes)
        distinct = {w.key(self.table.target_key): w for w in workloads}
        cached = sum(self.table.lookup(w) is not None for w in distinct.values())
        self.timer = ModelTimer(self.options)
        with progress.phase(f"compiling the original model for {self.options.target}"):  # first: fails fast
            self.timer.add("original", model.to_proto(), self._shapes(model))
        self.table.build(workloads, self.options)
        half_ms, half_share = self._fit_rest(analysis, shrink)
        self.entry = {"target": self.options.target, "share": self.share, "original_ms": round(self.original_ms, 4),
                      "clock": {"method": METHOD, "threads": THREADS,
                                "calling_thread_share": round(self.timer.calling_thread_share, 3),
                                "whole_models": "fastest of interleaved rounds of >= 0.1 s of thread CPU time"},
                      "table": {"path": str(self.table.path), "workloads": len(distinct),
                                "cached_before": cached, "probes_timed_now": self.table.measured_now,
                                "method": "each layer's kernel (a recurrent node: its input projection and one "
                                          "time step) alone at kept output/input counts, fastest of 3 rounds of "
                                          "10 short samples of thread CPU time, outliers timed again"},
                      "uniform_half": {"measured_ms": round(half_ms, 4), "timed_layers_share": round(half_share, 4),
                                       "rest_fixed_share": round(self.fixed, 3)},
                      "prepare_s": round(time.perf_counter() - t0, 2), "model": model}

    def _fit_rest(self, analysis, shrink) -> tuple[float, float]:
        """The original's latency, and how much of the untimed rest shrinks with the layers: time
        the model with every group pruned by half (l2) in the same rounds as the original, and solve
        rest_half = rest * (fixed + (1 - fixed) * share) for `fixed`."""
        from prunec import criteria, progress
        from prunec.plan import make_plan

        groups = analysis.prunable_groups
        scores = criteria.score_groups(analysis, "l2")
        plan = make_plan(analysis, scores, 0.5, round_to=16)
        half = shrink(analysis, plan)
        with progress.phase(f"compiling the model pruned by half for {self.options.target}"):
            self.timer.add("half", half.to_proto(), self._shapes(half))
        with progress.phase(f"latency of the original and the model pruned by half on {self.options.target}"):
            ms = self.timer.time(["original", "half"])
        self.timer.drop("half")
        self.original_ms, half_ms = ms["original"], ms["half"]
        m = LatencyModel(analysis, groups, self.table, self.original_ms * 1e3, steps_from_table=False)
        removed = np.array([len(plan.groups.get(g.id, [])) for g in groups], dtype=np.float64)
        w_half = m.weighted(removed)
        share = w_half / m.weighted_us if m.weighted_us else 1.0
        if m.rest_us > 0 and share < 0.99:
            rest_half = half_ms * 1e3 - w_half
            self.fixed = float(np.clip((rest_half / m.rest_us - share) / (1.0 - share), 0.0, 1.0))
        return half_ms, share

    @staticmethod
    def _shapes(model) -> dict:
        names = {i.name for i in model.graph.inputs}
        return {k: list(v) for k, v in model.shapes.items() if k in names}

    def size_model(self, analysis, groups):
        m = LatencyModel(analysis, groups, self.table, self.original_ms * 1e3, self.steps_from_table,
                         fixed=self.fixed)
        self.entry.update(weighted_layers_ms=round(m.weighted_us / 1e3, 4), rest_ms=round(m.rest_us / 1e3, 4),
                          timed_parts=sum(1 for p in m.nodes if p.wl is not None),
                          untimed_layers=sum(1 for p in m.nodes if p.wl is None),
                          steps="kept counts the table says run faster" if m.keep_counts is not None
                          else "multiples of --round-to")
        return m

    def finish(self, plan, pruned) -> dict:
        """The prediction next to the pruned model's measured latency (timed in the same rounds as
        the original again: measured_share is pruned / original from those rounds). The pruned
        model stays loaded in self.timer as "pruned" until the next finish (benchmarks time it again)."""
        from prunec import progress

        self.entry["share"] = self.share
        est = plan.meta.get("estimated_latency_us")
        orig_us = plan.meta.get("original_latency_us")
        if est is not None and orig_us:
            self.entry["predicted_ms"] = round(self.original_ms * est / orig_us, 4)
            self.entry["predicted_share"] = round(est / orig_us, 4)
        with progress.phase(f"compiling the pruned model for {self.options.target}"):
            self.timer.add("pruned", pruned.to_proto(), self._shapes(pruned))
        with progress.phase(f"latency of the original and the pruned model on {self.options.target}"):
            ms = self.timer.time(["original", "pruned"])
        self.entry["measured_ms"] = round(ms["pruned"], 4)
        self.entry["original_ms_again"] = round(ms["original"], 4)
        self.entry["measured_share"] = round(ms["pruned"] / ms["original"], 4)
        return {k: v for k, v in self.entry.items() if k != "model"}

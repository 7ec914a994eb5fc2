"""A model run over the calibration data in steps that reach ever deeper tensors, each node once.

The sequential refit (refit.py) asks, pass after pass, for tensors further down the model. Run from
the input each time, every pass recomputes all the layers before it. A walk keeps, batch by batch,
the tensors that later steps read from earlier ones (their frontier) and runs each step's new
nodes only, as a part model fed from those tensors (downstream.py builds it).

The model may change between steps (the refit writes a pass's layers after its step): `changes[k]`
names the nodes changed after step k, and a segment never spans a change to a node it has run, so
what it keeps is always the current model's (the refit's changes feed only later steps' targets).

Memory: the kept tensors are held for every batch. The steps are cut into segments whose kept
tensors fit `budget` bytes during every step; a segment's first step runs from the graph inputs, as
a plain Tapper would, so with no budget a walk runs what running each step from the input runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import onnx

from prunec.graph import Model

from .data import CalibData
from .downstream import Part, node_reads, part_model
from .stream import Tapper, batch_capable


@dataclass
class Step:
    targets: list[str]  # what the step yields per batch
    nodes: list[str]  # the nodes it runs (by first output name), in graph order
    frontier: list[str]  # what they read from outside: graph inputs or tensors earlier steps kept
    outputs: list[str]  # what its run returns: the targets it computes and `keep`
    keep: list[str]  # what it computes that later steps of its segment read
    start: bool  # first step of a segment: runs from the graph inputs


def model_proto(model: Model) -> onnx.ModelProto:
    """The proto a Tapper runs (batch and open dims restored)."""
    return model.to_proto(restore_io=batch_capable(model) or bool(model.dynamic_dims))


def _ancestors(graph: onnx.GraphProto, names, producer: dict[str, int]) -> set[int]:
    """Positions of the nodes `names` depend on (the nodes keep_only keeps for them)."""
    todo, seen = list(names), set()
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in seen:
            seen.add(i)
            todo.extend(node_reads(graph.node[i]))
    return seen


def plan_walk(proto: onnx.ModelProto, targets: list[list[str]], nbytes: Callable[[list[str]], int],
              budget: int, changes: list[set[str]] | None = None) -> tuple[list[Step], int]:
    """Steps for the target lists, in segments whose kept tensors (nbytes of the names: over all
    samples, additive) stay within `budget` during every step and whose nodes no change
    (`changes[k]`: node first output names changed after step k) touches once run; and the most
    they hold at once."""
    graph = proto.graph
    changes = changes or [set() for _ in targets]
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    inputs = {i.name for i in graph.input}
    needs = [_ancestors(graph, t, producer) for t in targets]
    size: dict[str, int] = {}

    def parts(s: int):
        """(nodes, produced, frontier) of the steps of a segment starting at s, one step at a time."""
        done = set()
        for k in range(s, len(targets)):
            nodes = sorted(needs[k] - done)
            done |= needs[k]
            produced = {o for i in nodes for o in graph.node[i].output if o}
            reads = set().union(*(node_reads(graph.node[i]) for i in nodes)) if nodes else set()
            yield nodes, produced, sorted({t for t in reads if t in producer or t in inputs} - produced)

    out, held, s = [], 0, 0
    while s < len(targets):
        # extend the segment [s, e) one step at a time; a kept tensor t counts from the step that
        # makes it to the last one that reads it (load[k]: bytes held during step s + k)
        made, last, load, segment, ran = {}, {}, [], [], set()
        for k, (nodes, produced, frontier) in enumerate(parts(s), s):
            if segment and ran & set(changes[k - 1]):
                break
            grown = list(load) + [0]
            for t in set(frontier) | set(targets[k]):
                if t in made:
                    if t not in size:
                        size[t] = nbytes([t])
                    for j in range(last.get(t, made[t]) + 1 if t in last else made[t], k + 1):
                        grown[j - s] += size[t]
            if segment and max(grown) > budget:
                break
            for t in set(frontier) | set(targets[k]):
                if t in made:
                    last[t] = k
            made.update((t, k) for t in produced - inputs if t not in made)
            load = grown
            ran.update(graph.node[i].output[0] for i in nodes)
            segment.append((nodes, produced, frontier))
        for k, (nodes, produced, frontier) in enumerate(segment, s):
            keep = sorted(t for t in produced if last.get(t, k) > k)
            outputs = list(dict.fromkeys([t for t in targets[k] if t in produced] + keep))
            names = [graph.node[i].output[0] for i in nodes]
            out.append(Step(list(targets[k]), names, frontier, outputs, keep, start=k == s))
        held, s = max([held] + load), s + len(segment)
    return out, held


class Walk:
    """Steps of `plan_walk` run over `data` in batches of `size` samples (the same batches every step).
    `optimize`: parts run with all of ONNX Runtime's graph optimizations (they are asked only for
    their outputs) instead of the basic ones a Tapper uses: faster, but other kernels round
    differently, so the tensors are not those of a run from the input to the bit. `proto`:
    (model, model_proto(model)) where the caller has it already."""

    def __init__(self, steps: list[Step], data: CalibData, size: int, optimize: bool = False,
                 proto: tuple[Model, onnx.ModelProto] | None = None):
        self.steps, self.data, self.size, self.optimize = steps, data, size, optimize
        self.kept: list[dict[str, np.ndarray]] = []  # per batch: the tensors later steps read
        self.fallbacks = 0  # steps whose part ONNX Runtime could not load, run from the inputs instead
        self._proto = proto

    @property
    def segments(self) -> int:
        return sum(s.start for s in self.steps)

    def step(self, k: int, model: Model) -> Iterator[dict[str, np.ndarray]]:
        """Step k's targets on each batch of the data, from `model` as it is now (a model changes
        only between steps: its proto is made again only for another Model object)."""
        step = self.steps[k]
        if self._proto is None or self._proto[0] is not model:
            self._proto = (model, model_proto(model))
        proto = self._proto[1]
        inputs = {i.name for i in proto.graph.input}
        if step.start:
            self.kept = []
        run = self._part(model, proto, step)
        later = set()
        for s in self.steps[k + 1:]:
            if s.start:
                break
            later.update(s.frontier, s.targets)
        for b, batch in enumerate(self.data.batches(self.size)):
            have = dict(self.kept[b]) if b < len(self.kept) else {}
            have.update((t, batch[t]) for t in inputs if t in batch)
            if step.nodes:
                have.update(run(batch, have))
            kept = {t: have[t] for t in have if t in later and t not in inputs}
            if b < len(self.kept):
                self.kept[b] = kept
            else:
                self.kept.append(kept)
            yield {t: have[t] for t in step.targets}

    def _part(self, model: Model, proto: onnx.ModelProto, step: Step):
        """run(batch, have) -> the step's outputs: its part model fed from the kept tensors, or (a
        part ONNX Runtime cannot load) a run from the graph inputs."""
        from prunec.runtime import session

        pos = {n.output[0]: i for i, n in enumerate(proto.graph.node) if n.output}
        part = Part(nodes=[pos[n] for n in step.nodes], frontier=step.frontier, outputs=step.outputs, fed=[])
        made: dict = {}

        def run(batch, have):
            if "tap" not in made:
                try:
                    if "part" not in made:
                        dtypes = {t: have[t].dtype for t in step.frontier}
                        made["part"] = session(part_model(proto, part, dtypes), optimize=self.optimize)
                    return dict(zip(step.outputs, made["part"].run(step.outputs, {t: have[t] for t in step.frontier})))
                except Exception:  # noqa: BLE001 - whatever keeps ONNX Runtime from loading or running the part
                    self.fallbacks += 1
                    made["tap"] = Tapper(model, step.outputs, only_taps=True)
            return made["tap"].run(batch)
        return run

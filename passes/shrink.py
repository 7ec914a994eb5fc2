"""The shrink pass: physically remove the channels a plan names.

Every constant whose axes belong to a pruned group is sliced; then each node's rule rewrites the
attributes and shape constants that spell channel counts (Conv `group`, Reshape shapes, Split
sizes, Slice bounds, ...). Activations shrink as a consequence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from prunec.dependency import Analysis, analyze
from prunec.errors import PrunecError
from prunec.graph import Model
from prunec.ops import rule_for
from prunec.subgraphs import all_nodes, all_tensors
from prunec.plan import Plan, removal_map

from .base import PassResult


@dataclass
class ShrinkResult(PassResult):
    groups: int = 0  # groups that lost channels
    channels_removed: int = 0


class Rewriter:
    """What rewrite hooks may ask: old/new shapes, kept sizes, and a safe way to replace constants."""

    def __init__(self, analysis: Analysis, removed: dict):
        self.analysis = analysis
        self.model = analysis.model
        self.spaces = analysis.spaces
        self.removed = removed
        self._new_shapes: dict[str, tuple[int, ...]] = {}
        self._fresh = 0

    def state(self, node: gs.Node) -> dict:
        return self.analysis.node_state.get(node.name, {})

    def kept(self, space) -> int:
        return self.spaces.kept_size(space, self.removed)

    def shape(self, t: gs.Tensor) -> tuple[int, ...]:
        return self.analysis.shape(t)

    def const(self, t: gs.Tensor | None):
        return t.values if isinstance(t, gs.Constant) else None

    def new_shape(self, t: gs.Tensor) -> tuple[int, ...]:
        if t.name not in self._new_shapes:
            old = self.shape(t)
            dims = []
            for i, n in enumerate(old):
                space = self.analysis.layouts.get((t.name, i))
                dims.append(self.kept(space) if space is not None else n)
            self._new_shapes[t.name] = tuple(dims)
        return self._new_shapes[t.name]

    def set_const_input(self, node: gs.Node, index: int, values) -> None:
        """Give this node its own new constant (the old one may be shared with other nodes)."""
        old = node.inputs[index]
        dtype = old.values.dtype if isinstance(old, gs.Constant) else np.int64
        self._fresh += 1
        node.inputs[index] = gs.Constant(f"{old.name}__pruned{self._fresh}", np.asarray(values, dtype=dtype))




def shrink(analysis: Analysis, plan: Plan) -> Model:
    """Apply `plan` to the analysed model; returns a new, re-normalized model (the input is untouched)."""
    model = analysis.model
    removed = removal_map(analysis, plan)
    rw = Rewriter(analysis, removed)
    graph = model.graph.copy()  # the analysed graph stays as it was
    tensors = all_tensors(graph)  # If/Loop/Scan bodies included
    sliced: dict[str, np.ndarray] = {}
    for (name, axis), space in analysis.layouts.items():
        t = tensors.get(name)
        if not isinstance(t, gs.Constant):
            continue
        mask = analysis.spaces.keep_mask(space, removed)
        if mask is not None:
            sliced[name] = np.compress(mask, sliced.get(name, t.values), axis=axis)
    for name, values in sliced.items():
        tensors[name].values = values
    for node in all_nodes(graph):
        rule = rule_for(node)
        if rule is not None and rule.rewrite is not None:
            rule.rewrite(node, rw)
    top = graph.tensors()
    for name, t in tensors.items():
        # Body tensors keep the shapes they declare (dynamic dims too), with pruned axes' new sizes.
        if name not in top and isinstance(t, gs.Variable) and t.shape is not None and name in model.shapes:
            old, new = model.shapes[name], rw.new_shape(t)
            if len(t.shape) == len(old):
                t.shape = [b if b != a else d for d, a, b in zip(t.shape, old, new)]
    try:
        return model.with_graph(graph)
    except PrunecError as exc:
        raise PrunecError(f"the pruned graph is inconsistent ({exc}); nothing written") from None


class Shrink:
    """The pass: remove the channels `plan` names. `analysis` (of the model the pass will be given)
    saves analysing it again; without it, or for another model, the pass analyses its input."""

    name = "shrink"

    def __init__(self, plan: Plan, analysis: Analysis | None = None, exclude: list[str] | None = None):
        self.plan, self.analysis, self.exclude = plan, analysis, exclude

    def __call__(self, model: Model) -> tuple[Model, ShrinkResult]:
        analysis = self.analysis
        if analysis is None or analysis.model is not model:
            analysis = analyze(model, exclude=self.exclude)
        return shrink(analysis, self.plan), ShrinkResult(groups=sum(1 for v in self.plan.groups.values() if v),
                                                         channels_removed=self.plan.removed_channels)

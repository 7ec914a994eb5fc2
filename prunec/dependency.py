"""Dependency analysis: which channels are coupled, and which groups can be pruned.

Walks the graph once in topological order; each node's rule (prunec/ops) relates the channel
spaces of its inputs and outputs. The roots of the resulting space classes are the groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .channels import Space, SpaceTable
from .errors import PrunecError
from .exclude import Excludes
from .graph import Model
from .macs import node_macs
from .ops import rule_for
from .subgraphs import all_nodes, all_tensors

# Roles of constant axes: what a weight slice means for importance and for the exactness property.
WEIGHT_ROLES = ("out", "in", "norm")
# Spatial/token axes no rule maps: such leaves are no channel groups (a Flatten's H*W factor touches
# the Gemm weight, but it is not something to prune).
NOT_CHANNELS = "not a channel axis"


@dataclass
class Member:
    tensor: str
    axis: int
    positions: np.ndarray  # [group size, reps]: axis positions of each channel
    role: str  # out / in / bias / norm / shift / stat / const / act
    node: str  # the node that uses it (first one for shared constants)


@dataclass
class Group:
    id: str
    size: int
    members: list[Member]
    blocked: list[str]
    inexact: list[str]
    macs: int = 0  # MACs of the nodes this group's channels flow through
    space: Space | None = field(default=None, repr=False)

    @property
    def prunable(self) -> bool:
        return not self.blocked and self.size > 1

    def weights(self) -> list[Member]:
        return [m for m in self.members if m.role in WEIGHT_ROLES]

    def unit(self) -> int:
        """Physical positions per channel on the weight axes (a head of 64 dims moves 64 at once)."""
        reps = [m.positions.shape[1] for m in self.members if m.role in ("out", "in")]
        return min(reps) if reps else 1


class Analysis:
    """The context op rules talk to, and afterwards the result: groups and layouts."""

    def __init__(self, model: Model, exclude: list[str] | None = None):
        self.model = model
        self.graph = model.graph
        self.spaces = SpaceTable()
        self.layouts: dict[tuple[str, int], Space] = {}
        self.roles: dict[tuple[str, int], tuple[str, str]] = {}
        self.node_state: dict[str, dict] = {}
        self.unsupported: dict[str, int] = {}
        # tensor -> the constant it is computed from axis for axis (DequantizeLinear of a weight)
        self.weight_views: dict[str, str] = {}
        self.exclude = Excludes(exclude)
        self._node: gs.Node | None = None
        self._run()

    # ------------------------------------------------------------------ API for rules
    def shape(self, t: gs.Tensor) -> tuple[int, ...]:
        if isinstance(t, gs.Constant):
            return tuple(t.shape)
        s = self.model.shapes.get(t.name)
        if s is None:
            raise KeyError(f"no shape for tensor {t.name!r}")
        return s

    def rank(self, t: gs.Tensor) -> int:
        return len(self.shape(t))

    def const(self, t: gs.Tensor | None) -> np.ndarray | None:
        return t.values if isinstance(t, gs.Constant) else None

    def where(self, node: gs.Node | None = None) -> str:
        node = node or self._node
        return f"{node.op} {node.name!r}"

    def axis(self, t: gs.Tensor, i: int, role: str | None = None) -> Space:
        """The space of axis i of tensor t (created on first use)."""
        i = i % self.rank(t)
        key = (t.name, i)
        if key not in self.layouts:
            size = self.shape(t)[i]
            if isinstance(t, gs.Constant):
                self.layouts[key] = self.spaces.new(size)
            else:
                self.layouts[key] = self.spaces.new(size, blocked=f"axis {i} of {t.name!r} is not tracked by any rule")
        if role and key not in self.roles:
            node = self._node.name if self._node else ""
            if isinstance(t, gs.Constant):
                self.roles[key] = (role, node)
            elif t.name in self.weight_views:  # a dequantized weight: the stored integers get the role
                self.roles.setdefault((self.weight_views[t.name], i), (role, node))
        return self.layouts[key]

    def set_axis(self, t: gs.Tensor, i: int, space: Space) -> None:
        i = i % self.rank(t)
        key = (t.name, i)
        if key in self.layouts:
            self.unify(self.layouts[key], space)
        else:
            self.layouts[key] = space

    def new(self, size: int) -> Space:
        return self.spaces.new(size)

    def unify(self, a: Space, b: Space) -> bool:
        return self.spaces.unify(a, b, self.where())

    def same(self, a: gs.Tensor, i: int, b: gs.Tensor, j: int) -> bool:
        return self.unify(self.axis(a, i), self.axis(b, j))

    def block(self, s: Space, reason: str) -> None:
        self.spaces.block(s, reason)

    def block_tensor(self, t: gs.Tensor, reason: str) -> None:
        for i in range(self.rank(t)):
            self.block(self.axis(t, i), reason)

    def state(self, node: gs.Node | None = None) -> dict:
        node = node or self._node
        return self.node_state.setdefault(node.name, {})

    # ------------------------------------------------------------------ the walk
    def _run(self) -> None:
        g = self.graph
        for t in g.inputs:
            for i, n in enumerate(self.shape(t)):
                self.layouts[(t.name, i)] = self.spaces.new(n, blocked="graph input")
        self.walk(g.nodes)
        for t in g.outputs:
            self.block_tensor(t, f"reaches graph output {t.name!r}")
        self.groups = self._collect_groups()
        if self.exclude:
            for group in self.groups:
                hit = self.exclude.group(group.id)
                if hit:
                    group.blocked.append(f"excluded by user (--exclude {hit!r})")
            self.exclude.check_all_matched()

    def walk(self, nodes: list[gs.Node]) -> None:
        """Analyse nodes in order: the main graph, or (called by the If/Loop/Scan rule) a body."""
        outer, accepted = self._node, getattr(self, "_accepted", set())
        for node in nodes:
            self._node = node
            self._analyze(node)
            for out in node.outputs:
                if out.name and out.name in self.model.shapes:
                    for i in range(self.rank(out)):
                        if (out.name, i) not in self.layouts:
                            self.layouts[(out.name, i)] = self.spaces.new(
                                self.shape(out)[i], blocked=f"axis {i} of {node.op} output: {NOT_CHANNELS}")
            hit = self.exclude.node(node.name, node.op) if self.exclude else None
            if hit:
                for out in node.outputs:
                    if out.name in self.model.shapes:
                        self.block_tensor(out, f"excluded by user (--exclude {hit!r}: node {node.name})")
        self._node, self._accepted = outer, accepted

    def _analyze(self, node: gs.Node) -> None:
        rule = rule_for(node)
        tensors = [t for t in list(node.inputs) + list(node.outputs) if t.name and t.name in self.model.shapes
                   or isinstance(t, gs.Constant)]
        if rule is None:
            self.unsupported[node.op] = self.unsupported.get(node.op, 0) + 1
            for t in tensors:
                self.block_tensor(t, f"{node.op} has no channel rule (node {node.name!r})")
            return
        self._accepted: set[Space] = set()
        rule.analyze(node, self)
        self._block_dropped_axes(node)

    def accept(self, s: Space) -> None:
        """A rule says: these input channels are dropped by this op on purpose (e.g. Slice)."""
        self._accepted.update(self.spaces.leaves(s))

    def _block_dropped_axes(self, node: gs.Node) -> None:
        """An input channel that reaches neither an output nor another operand is consumed in a way
        no rule describes (e.g. a spatial axis of a Conv): pruning it would change the op's meaning."""
        leaves_of = {}
        for t in list(node.inputs) + list(node.outputs):
            if t.name and (t.name in self.model.shapes or isinstance(t, gs.Constant)):
                leaves_of[t.name] = {lf for i in range(self.rank(t)) if (t.name, i) in self.layouts
                                     for lf in self.spaces.leaves(self.layouts[(t.name, i)])}
        for k, t in enumerate(node.inputs):
            if not t.name or isinstance(t, gs.Constant) or t.name not in leaves_of:
                continue
            elsewhere = set(self._accepted)
            for j, u in enumerate(list(node.inputs) + list(node.outputs)):
                if j != k and u.name in leaves_of and u.name != t.name:
                    elsewhere |= leaves_of[u.name]
            for i in range(self.rank(t)):
                if (t.name, i) not in self.layouts:
                    continue
                for leaf in self.spaces.leaves(self.layouts[(t.name, i)]):
                    if leaf.size > 1 and leaf not in elsewhere and not leaf.blocked:
                        self.block(leaf, f"axis {i} of {t.name!r} is consumed by {self.where(node)} "
                                         "(its positions do not map to channels)")

    # ------------------------------------------------------------------ results
    def _collect_groups(self) -> list[Group]:
        find, leaves = self.spaces.find, self.spaces.leaves
        by_leaf: dict[Space, list[tuple[str, int, Space, str, str]]] = {}
        order: list[Space] = []
        tensors = all_tensors(self.graph)
        for (name, axis), space in self.layouts.items():
            default = ("const", "") if isinstance(tensors.get(name), gs.Constant) else ("act", "")
            role, node = self.roles.get((name, axis), default)
            for leaf in dict.fromkeys(find(lf) for lf in leaves(space)):
                if leaf not in by_leaf:
                    by_leaf[leaf] = []
                    order.append(leaf)
                by_leaf[leaf].append((name, axis, space, role, node))
        readers, macs_of = self._readers()
        groups: list[Group] = []
        for leaf in order:
            entries = by_leaf[leaf]
            if (not any(role in WEIGHT_ROLES for *_, role, _n in entries) or leaf.size <= 1
                    or (leaf.blocked and NOT_CHANNELS in leaf.blocked[0])):
                continue  # spatial, token and size-1 axes are no pruning groups: no positions built
            members = [Member(name, axis, self.spaces.positions(space, only={leaf})[leaf], role, node)
                       for name, axis, space, role, node in entries]
            weights = [m for m in members if m.role in WEIGHT_ROLES]
            groups.append(Group(self._group_id(leaf, weights), leaf.size, members, list(leaf.blocked),
                                list(leaf.inexact), 0, leaf))
        for g in groups:
            nodes = {n for m in g.members for n in readers.get(m.tensor, ())}
            g.macs = sum(macs_of[n] for n in nodes)
        return groups

    def _group_id(self, leaf: Space, weights: list[Member]) -> str:
        """A name that survives re-export: the smallest producer weight axis, plus which piece of it."""
        outs = [m for m in weights if m.role == "out"] or weights
        anchor = min(outs, key=lambda m: (m.tensor, m.axis))
        pieces = []
        for lf in self.spaces.leaves(self.layouts[(anchor.tensor, anchor.axis)]):
            if lf.size > 1 and lf not in pieces:
                pieces.append(lf)
        gid = f"{anchor.tensor}[{anchor.axis}]"
        return gid if len(pieces) == 1 else f"{gid}.{pieces.index(leaf)}"

    def _readers(self) -> tuple[dict[str, list[str]], dict[str, int]]:
        """Compute nodes (those with MACs) reading each tensor, and their MACs."""
        readers: dict[str, list[str]] = {}
        macs_of: dict[str, int] = {}
        for node in all_nodes(self.graph):
            m = node_macs(node, self.model.shapes)
            if m:
                macs_of[node.name] = m
                for t in node.inputs:
                    readers.setdefault(t.name, []).append(node.name)
        return readers, macs_of

    # ------------------------------------------------------------------ convenience
    def group(self, gid: str) -> Group:
        for g in self.groups:
            if g.id == gid:
                return g
        raise KeyError(gid)

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


def analyze(model: Model, exclude: list[str] | None = None) -> Analysis:
    """Groups of `model` (never modified). Loading names every node; a graph edited by hand with
    unnamed nodes is analysed as a named copy (analysis.model), since groups refer to node names."""
    if any(not n.name for n in model.graph.nodes):
        model = model.copy()
    return Analysis(model, exclude)

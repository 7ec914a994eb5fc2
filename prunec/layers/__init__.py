"""Weighted layers: the ops that multiply their input by a weight (Conv, ConvTranspose, Gemm, MatMul).

One `LayerKind` per op says everything the rest of prunec asks about such a layer: its MACs, the
channel axis of its activations, and, for kinds that least-squares reconstruction and the
consumer-based criteria support (`refit`), when a node can be refitted, how its constant weight
reads as matrices [groups, inputs per group, outputs per group], how to write them back, and how
one sample becomes rows of (input patch, output) pairs. MACs (prunec.macs), importance, the report,
the MACs budget and reconstruction all go through this registry, so a new weighted op (ConvInteger,
LSTM) is one new kind in one file plus one registration line below.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

Shape = tuple[int, ...]


class LayerKind:
    op: str = ""
    refit: bool = False  # reconstruction and the data criteria that read consumers handle it
    weight_input: int = 1  # the input holding the weight (QLinearConv: 3)

    def macs(self, node: gs.Node, ins: list[Shape | None], outs: list[Shape | None]) -> int:
        """Multiply-accumulates of one run, from the static shapes of its inputs and outputs."""
        raise NotImplementedError

    def channel_axis(self, rank: int) -> int:
        """The channel axis of its data input and output activations."""
        return 1

    # ---------------------------------------------------------------- refit kinds only
    def refittable(self, node: gs.Node, x: gs.Tensor, x_rank: int) -> bool:
        """Can the node be refitted as a linear map of its data input `x` (weight: input 1)?"""
        return False

    def groups(self, node: gs.Node) -> int:
        return 1

    def patch_width(self, w_shape: Shape) -> int:
        """Positions of one input channel in a row of `rows` (a conv's kernel size)."""
        return 1

    def matrices(self, node: gs.Node, groups: int) -> tuple[np.ndarray, np.ndarray]:
        """The weight as [groups, d, outputs per group] and the bias as [groups, outputs per group]."""
        raise NotImplementedError

    def arrays(self, node: gs.Node, W: np.ndarray, b: np.ndarray, w_shape: Shape) -> tuple[np.ndarray, np.ndarray | None]:
        """Refitted matrices (same layout as `matrices`) as the node's weight and bias tensors (bias
        None: the op has no bias input, the intercept is dropped), without touching the node."""
        raise NotImplementedError

    def write(self, node: gs.Node, W: np.ndarray, b: np.ndarray, w_shape: Shape) -> None:
        """Store refitted matrices (same layout as `matrices`) into the node's constants."""
        weight, bias = self.arrays(node, W, b, w_shape)
        node.inputs[1].values = weight
        if bias is not None:
            set_bias(node, bias, weight.dtype)

    def rows(self, node: gs.Node, x: np.ndarray, y: np.ndarray, w_shape: Shape, rows: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One sample (no batch axis) -> input patches [P, C, K] and targets [P, outputs]."""
        raise NotImplementedError


KINDS: dict[str, LayerKind] = {}


def register(cls: type[LayerKind]) -> type[LayerKind]:
    KINDS[cls.op] = cls()
    return cls


def kind_of(node: gs.Node) -> LayerKind | None:
    return KINDS.get(node.op)


def refit_kind(node: gs.Node) -> LayerKind | None:
    """The kind of a node that reconstruction and the consumer-based criteria can handle."""
    kind = KINDS.get(node.op)
    return kind if kind is not None and kind.refit else None


def consumers(analysis, group) -> list[tuple[gs.Node, gs.Tensor, object, object]]:
    """(node, data input, weight member, activation member) for each refittable-kind layer that
    reads the group through a constant weight's input axis."""
    nodes = {n.name: n for n in analysis.graph.nodes}
    acts = {}
    for m in group.members:
        if m.role == "act":
            acts.setdefault(m.tensor, m)
    out = []
    for m in group.members:
        if m.role != "in":
            continue
        for node in analysis.graph.nodes if m.node not in nodes else [nodes[m.node]]:
            ws = [i for i, t in enumerate(node.inputs) if t.name == m.tensor]
            if not ws or refit_kind(node) is None:
                continue
            data = [t for i, t in enumerate(node.inputs[:2]) if i not in ws and not isinstance(t, gs.Constant)]
            if data and data[0].name in acts:
                out.append((node, data[0], m, acts[data[0].name]))
            break
    return out


def layer_levels(graph: gs.Graph, names) -> dict[str, int]:
    """Level of each node named in `names`: one more than that of the deepest named node above it
    (0 for none). Layers of one level do not feed each other, so they can be refitted together."""
    names = set(names)
    levels: dict[str, int] = {}
    level_of: dict[str, int] = {}  # tensor -> level of the layers it feeds
    for n in graph.nodes:  # graph nodes are in topological order
        lvl = max([level_of.get(t.name, 0) for t in n.inputs] or [0])
        if n.name in names:
            levels[n.name] = lvl
            lvl += 1
        for o in n.outputs:
            level_of[o.name] = lvl
    return levels


def set_bias(node: gs.Node, bias: np.ndarray, dtype) -> None:
    """Write a bias into input 2: in place when it has that size, else as a new constant."""
    if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant) and node.inputs[2].values.size == bias.size:
        node.inputs[2].values = np.ascontiguousarray(bias.reshape(node.inputs[2].values.shape), dtype=dtype)
    else:
        c = gs.Constant(f"{node.name}.refit_bias", np.ascontiguousarray(bias, dtype=dtype))
        if len(node.inputs) > 2:
            node.inputs[2] = c
        else:
            node.inputs.append(c)


def const_bias(node: gs.Node) -> np.ndarray | None:
    return node.inputs[2].values if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant) else None


def _load_all() -> None:
    # Importing the modules registers their kinds.
    from . import conv, linear, quantized, recurrent  # noqa: F401


_load_all()

"""If/Loop/Scan bodies: at load, the same normalization the main graph gets (weights as initializers,
named nodes, static shapes), so the dependency analysis can follow channels through them; and the
walks over a graph with its bodies that analysis, shrink and counting use."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from .model_checks import STANDARD_DOMAINS, static_shape


def bodies(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """(node, body) for every subgraph under `graph`, nested ones included, outermost first."""
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else (
                list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else [])
            for body in subs:
                yield node, body
                yield from bodies(body)


def body_constants_to_initializers(proto: onnx.ModelProto, value_of) -> int:
    """Constant nodes inside bodies become the body's initializers (a Conv weight written as a
    Constant in a branch is then a weight like any other). `value_of(attr)` reads one."""
    count = 0
    for _, body in list(bodies(proto.graph)):
        keep = []
        for node in body.node:
            value = (value_of(node.attribute[0]) if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS
                     and len(node.attribute) == 1 else None)
            if value is None:
                keep.append(node)
                continue
            body.initializer.append(numpy_helper.from_array(np.asarray(value), node.output[0]))
            count += 1
        if len(keep) != len(body.node):
            del body.node[:]
            body.node.extend(keep)
    return count


def name_body_nodes(proto: onnx.ModelProto) -> None:
    """Body nodes get names unique in the model (`<parent>/<op>_<i>`): rules keep per-node state."""
    for parent, body in bodies(proto.graph):
        for i, node in enumerate(body.node):
            if not node.name:
                node.name = f"{parent.name}/{node.op_type}_{i}"


def body_shapes(inferred: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes shape inference found inside bodies (inputs, intermediates, outputs)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for _, body in bodies(inferred.graph):
        for t in body.initializer:
            shapes[t.name] = tuple(int(d) for d in t.dims)
        for vi in list(body.input) + list(body.value_info) + list(body.output):
            s = static_shape(vi)
            if s is not None:
                shapes.setdefault(vi.name, s)
    return shapes


# ---------------------------------------------------------------- onnx-graphsurgeon graphs
def subgraphs(node: gs.Node) -> list[gs.Graph]:
    found = []
    for value in node.attrs.values():
        found += [g for g in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(g, gs.Graph)]
    return found


def all_nodes(graph: gs.Graph) -> list[gs.Node]:
    """Nodes of the graph and of every body under it."""
    out = []
    for node in graph.nodes:
        out.append(node)
        for body in subgraphs(node):
            out += all_nodes(body)
    return out


def all_tensors(graph: gs.Graph) -> dict[str, gs.Tensor]:
    """Tensors of the graph and of every body under it, by name."""
    tensors = dict(graph.tensors())
    for node in graph.nodes:
        for body in subgraphs(node):
            for name, t in all_tensors(body).items():
                tensors.setdefault(name, t)
    return tensors

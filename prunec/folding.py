"""Constant folding at load: nodes computing from constants only, and, where the input sizes allow,
the shape computations (Shape -> Gather -> Concat ...) exporters write so a model runs at any size.
prunec.graph calls it; `infer` is its shape inference, passed in (this module never imports graph)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .model_checks import STANDARD_DOMAINS, fold_size_ok
from .model_header import fixed as _fixed


FOLDABLE_SKIP = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                 "Bernoulli", "If", "Loop", "Scan",
                 "DequantizeLinear", "QuantizeLinear")  # quantized weights stay stored as integers


def open_input_dims(io_proto: dict, proto: onnx.ModelProto) -> list[tuple[str, int]]:
    """(input, axis) of every dim the model as exported leaves open (a name, -1 or 0)."""
    inits = {t.name for t in proto.graph.initializer}
    out = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        declared = io_proto.get(vi.name, vi)
        if not declared.type.HasField("tensor_type"):
            out.append((vi.name, 0))
            continue
        out += [(vi.name, i) for i, d in enumerate(declared.type.tensor_type.shape.dim) if not _fixed(d)]
    return out


# The batch size the shapes are inferred at a second time to see which dims follow the batch: a
# prime, so that no dim proportional to it (or to a divisor of it) can come out the same.
BATCH_PROBE = 7


def fold_batch_free_shape_reads(proto: onnx.ModelProto, shapes: dict, shapes_other: dict) -> int:
    """Only the batch is open: a Gather or Slice of a Shape vector that reads the same elements at
    batch 1 and at BATCH_PROBE (H, W, C of an activation; not its batch or windows x batch) is a
    constant. Fold those reads, then what computes from them only. Returns how many were folded."""
    shape_of = {n.output[0]: n for n in proto.graph.node
                if n.op_type == "Shape" and n.domain in STANDARD_DOMAINS and n.input and n.input[0] in shapes}
    consts = {t.name: t for t in proto.graph.initializer}
    keep, count = [], 0
    for node in proto.graph.node:
        src = shape_of.get(node.input[0]) if node.input and node.op_type in ("Gather", "Slice") else None
        if src is None or not all(i in consts for i in node.input[1:] if i) or src.input[0] not in shapes_other:
            keep.append(node)
            continue
        attrs = {a.name: a.i for a in src.attribute}
        values = []
        for dims in (shapes[src.input[0]], shapes_other[src.input[0]]):
            vec = numpy_helper.from_array(np.array(list(dims)[slice(attrs.get("start", 0), attrs.get("end"))],
                                                   np.int64), node.input[0])
            try:
                values.append(evaluate(node, {**consts, node.input[0]: vec}, _reference_evaluator(),
                                        list(proto.opset_import))[0])
            except Exception:
                values = []
                break
        if len(values) != 2 or not np.array_equal(values[0], values[1]):
            keep.append(node)
            continue
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(values[0]), node.output[0]))
        count += 1
    if count:
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
        fold_constant_nodes(proto, shapes, _SHAPE_FOLD_MAX_ELEMENTS)
    return count


def with_input_shapes(proto: onnx.ModelProto, input_shapes: dict) -> onnx.ModelProto:
    """A copy whose graph inputs declare these sizes (value infos inferred at other sizes dropped)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.value_info[:]
    for vi in probe.graph.input:
        if vi.name in input_shapes:
            for d, n in zip(vi.type.tensor_type.shape.dim, input_shapes[vi.name]):
                d.Clear()
                d.dim_value = n
    return probe


def _reference_evaluator():
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator


# Constants folded from run-time shape computations stay small: a computed mask or position table
# is folded, an Expand of a bias over a whole activation is left to run.
_SHAPE_FOLD_MAX_ELEMENTS = 1 << 16


def fold_static_shapes(proto: onnx.ModelProto, shapes: dict) -> int:
    """With every input size fixed, each Shape node's value is known: make it a constant and fold
    what computes from it (Reshape/Pad/Slice/Expand arguments of window attention, patch merging),
    so the rules see constants they can rewrite. Returns the number of Shape nodes folded."""
    def shape_value(node):
        src = node.input[0] if node.input else ""
        if node.op_type != "Shape" or node.domain not in STANDARD_DOMAINS or src not in shapes:
            return None
        attrs = {a.name: a.i for a in node.attribute}
        return np.array(list(shapes[src])[slice(attrs.get("start", 0), attrs.get("end"))], np.int64)

    count = nodes_to_initializers(proto, shape_value)
    if count:
        fold_constant_nodes(proto, shapes, _SHAPE_FOLD_MAX_ELEMENTS)
    return count


def nodes_to_initializers(proto: onnx.ModelProto, value_of) -> int:
    """Replace each node whose output `value_of(node)` knows (an array; None: keep the node) by an
    initializer of that value under the node's output name. Returns how many were replaced."""
    keep, count = [], 0
    for node in proto.graph.node:
        value = value_of(node)
        if value is None:
            keep.append(node)
            continue
        proto.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        count += 1
    if count:
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
    return count


def fold_constant_nodes(proto: onnx.ModelProto, shapes: dict | None = None, max_elements: int | None = None) -> int:
    """Nodes whose inputs are all constants (Identity of a shared weight, ConstantOfShape, a weight
    Transpose or Cast) are evaluated once, so rules see the weights as constants. With
    `max_elements`, only nodes whose outputs `shapes` knows to be that small."""
    from onnx.reference import ReferenceEvaluator

    consts = {t.name: t for t in proto.graph.initializer}
    graph_outputs = {o.name for o in proto.graph.output}
    keep, folded = [], 0
    for node in proto.graph.node:
        inputs = [i for i in node.input if i]
        if (node.domain not in STANDARD_DOMAINS or node.op_type in FOLDABLE_SKIP or not inputs
                or not all(i in consts for i in inputs) or any(o in graph_outputs for o in node.output)):
            keep.append(node)
            continue
        if max_elements is not None and not all(
                o in shapes and int(np.prod(shapes[o], dtype=np.int64)) <= max_elements for o in node.output if o):
            keep.append(node)
            continue
        if not fold_size_ok(node, consts, list(proto.opset_import)):
            keep.append(node)  # an output too big (or of unknown size) to compute: shape inference decides
            continue
        try:
            values = evaluate(node, consts, ReferenceEvaluator, list(proto.opset_import))
        except Exception:  # an op the reference evaluator can't run: leave it in the graph
            keep.append(node)
            continue
        for name, value in zip(node.output, values):
            if name:
                tensor = numpy_helper.from_array(np.asarray(value), name)
                proto.graph.initializer.append(tensor)
                consts[name] = tensor
        folded += 1
    if folded:
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
        used = {i for n in keep for i in n.input} | graph_outputs
        unused = [t for t in proto.graph.initializer if t.name not in used]
        for t in unused:
            proto.graph.initializer.remove(t)
    return folded


def evaluate(node: onnx.NodeProto, consts: dict, evaluator_cls, opsets) -> list:
    if node.op_type == "Identity":
        return [numpy_helper.to_array(consts[node.input[0]])]
    feeds = {i: numpy_helper.to_array(consts[i]) for i in node.input if i}
    g = onnx.helper.make_graph([node], "fold", [
        onnx.helper.make_tensor_value_info(i, consts[i].data_type, None) for i in feeds],
        [onnx.ValueInfoProto(name=o) for o in node.output if o])
    return evaluator_cls(onnx.helper.make_model(g, opset_imports=opsets)).run(None, feeds)

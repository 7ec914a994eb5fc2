"""Re-spell a model the way other exporters do, to exercise the importer.

Each transform returns a new ModelProto (or writes files) and leaves its input untouched.
"""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import set_external_data


def weights_as_constant_nodes(m: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer becomes a Constant node at the top of the graph (Paddle-style export)."""
    out = copy.deepcopy(m)
    g = out.graph
    consts = [helper.make_node("Constant", [], [t.name], name=f"const/{t.name}", value=t)
              for t in g.initializer]
    names = {t.name for t in g.initializer}
    # Old IRs also list initializers as graph inputs; a Constant can't be both.
    keep_inputs = [i for i in g.input if i.name not in names]
    del g.input[:]
    g.input.extend(keep_inputs)
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    return out


def with_symbolic_batch(m: onnx.ModelProto, name: str = "N") -> onnx.ModelProto:
    """First dim of every graph input/output (and declared value_info) becomes ``name``.

    Shape constants inside the graph (Reshape targets with a literal 1) are left as they
    are, as a real exporter with dynamic_axes would leave them in many models; the result
    runs at batch 1, and at other batches only where the graph allows it.
    """
    out = copy.deepcopy(m)
    g = out.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = name
    return out


def save_with_external_data(m: onnx.ModelProto, dirpath: str | Path, filename: str = "weights.bin",
                            model_filename: str | None = None, shape_inputs_inline: bool = True) -> Path:
    """Write ``dirpath/<graph name>.onnx`` with its tensors (initializers and Constant values)
    in the single file ``dirpath/filename``; returns the .onnx path.

    Tensors read as shape-like inputs (Reshape shape, Split sizes, Resize scales, ...) stay
    inline unless ``shape_inputs_inline=False``: shape inference does not read external
    data, so ONNX Runtime 1.31 refuses to load such a model ("Cannot parse data from
    external tensors") and onnx's path-based full check fails the same way. torch exports
    avoid it by keeping tensors under 1 KiB inline.
    """
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    path = d / (model_filename or f"{m.graph.name or 'model'}.onnx")
    out = copy.deepcopy(m)  # saving rewrites the tensors it externalizes
    keep = set()
    if shape_inputs_inline:
        keep = {name for n in out.graph.node for i, name in enumerate(n.input)
                if i in _SHAPE_INPUTS.get(n.op_type, ())}
    tensors = list(out.graph.initializer) + [a.t for n in out.graph.node if n.op_type == "Constant"
                                             for a in n.attribute if a.name == "value"]
    (d / filename).unlink(missing_ok=True)  # tensors are appended to it
    for t in tensors:
        if t.name in keep:
            continue
        if not t.HasField("raw_data"):  # external data needs the raw bytes form
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
        set_external_data(t, filename)
    onnx.save_model(out, path)  # writes the marked tensors to dirpath/filename
    return path


# Inputs whose values shape inference needs (op -> input indices).
_SHAPE_INPUTS = {
    "Reshape": {1}, "Split": {1}, "Resize": {1, 2, 3}, "Upsample": {1}, "Slice": {1, 2, 3, 4},
    "Expand": {1}, "Tile": {1}, "Pad": {1, 2, 3}, "Unsqueeze": {1}, "Squeeze": {1},
    "ConstantOfShape": {0}, "TopK": {1}, "Range": {0, 1, 2}, "OneHot": {1},
    "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "ReduceProd": {1},
    "ReduceL2": {1},
}

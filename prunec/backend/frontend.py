"""ONNX -> Relax import, with the input signature the artifact is loaded with."""

from __future__ import annotations

from pathlib import Path

from prunec.errors import PrunecError

from .lower_recurrent import lower_recurrent


def onnx_signature(model, input_shapes: dict[str, list[int]]) -> dict:
    """Graph inputs (initializers excluded) with static shapes and numpy dtypes, and output names."""
    import onnx
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        shape = list(input_shapes.get(vi.name, dims))
        if any(d is None or d <= 0 for d in shape):
            raise PrunecError(f"input {vi.name!r} has no static shape ({dims}); pass its shape")
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        inputs.append({"name": vi.name, "shape": [int(d) for d in shape], "dtype": dtype})
    outputs = [o.name for o in model.graph.output]
    del onnx
    return {"inputs": inputs, "outputs": outputs}


def import_onnx(path: Path, input_shapes: dict[str, list[int]]):
    """Returns (relax IRModule with weights embedded as constants, signature)."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(path))
    sig = onnx_signature(model, input_shapes)
    shape_dict = {i["name"]: i["shape"] for i in sig["inputs"]}
    model = _static_fold(model, shape_dict)
    model = fold_conv_bn(model, shape_dict)
    model = lower_recurrent(model, shape_dict)
    dtype_dict = {i["name"]: i["dtype"] for i in sig["inputs"]}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Renaming name input.1 to input_1": expected
        mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict,
                        keep_params_in_input=False)
    return mod, sig


def _static_fold(model, shapes: dict[str, list[int]]):
    """Pin the input shapes and fold the shape arithmetic (Shape -> Gather -> Range ... as in
    exported YOLO heads): TVM's importer cannot lower ops on symbolic shapes, and with static
    shapes those subgraphs are constants. A model without such ops is returned unchanged."""
    import onnx

    dynamic = any(not d.HasField("dim_value") for vi in model.graph.input
                  if vi.name in shapes for d in vi.type.tensor_type.shape.dim)
    if not dynamic and not any(n.op_type in ("Shape", "Size") for n in model.graph.node):
        return model
    try:
        import onnx_graphsurgeon as gs
    except ImportError:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in shapes:
            vi.type.tensor_type.shape.Clear()
            for v in shapes[vi.name]:
                vi.type.tensor_type.shape.dim.add().dim_value = int(v)
    for vi in m.graph.output:  # symbolic output dims: let inference recompute them
        if any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim):
            vi.type.tensor_type.shape.Clear()
    del m.graph.value_info[:]
    before = len(m.graph.node) + 1
    for _ in range(4):  # a fold exposes more static shapes to the next inference
        if len(m.graph.node) >= before:
            break
        before = len(m.graph.node)
        try:
            m = onnx.shape_inference.infer_shapes(m)
            g = gs.import_onnx(m)
            g.fold_constants(fold_shapes=True, error_ok=True).cleanup()
            m = gs.export_onnx(g)
        except Exception:  # folding is an optimization: the importer gets the model as is
            return model
    return m


def fold_conv_bn(model, input_shapes: dict[str, list[int]] | None = None):
    """Conv -> BatchNormalization (inference, constant statistics) into one Conv with scaled
    weights and a bias, as ONNX Runtime does at load time, by prunec's FoldBatchNorm pass.
    Without it TVM keeps the BN as a subtract/divide/multiply/add epilogue, which costs more than
    the conv itself in depthwise and short-reduction 1x1 layers. Returns the model unchanged
    when nothing folds, or when prunec cannot normalize it (TVM then imports it as it is)."""
    if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return model
    from prunec.graph import from_proto
    from prunec.passes import FoldBatchNorm

    try:
        normalized = from_proto(model, input_shapes=input_shapes)
    except PrunecError:  # an opset or domain prunec does not take: not ours to fold
        return model
    folded, result = FoldBatchNorm()(normalized)
    if not result.folded:
        return model
    return _in_node_order(folded.to_proto(), model)


def _in_node_order(proto, original):
    """proto's nodes in the order of `original`'s (a folded Conv in its own place): the Relax
    importer names values in node order, and the same names keep the same kernels' text."""
    position = {}
    for i, node in enumerate(original.graph.node):
        for out in node.output:
            position[out] = i
    producer = {out: node for node in original.graph.node for out in node.output}
    for node in original.graph.node:  # a BN's output is now its Conv's: the Conv's place
        if node.op_type == "BatchNormalization" and node.input and node.input[0] in producer:
            position[node.output[0]] = position[node.input[0]]
    nodes = sorted(proto.graph.node, key=lambda n: min(
        (position.get(o, len(position)) for o in n.output), default=len(position)))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto

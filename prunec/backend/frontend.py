"""ONNX -> Relax import, with the input signature the artifact is loaded with."""

from __future__ import annotations

from pathlib import Path

from prunec.errors import PrunecError


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
    model = _static_fold(model, {i["name"]: i["shape"] for i in sig["inputs"]})
    model = fold_conv_bn(model)
    shape_dict = {i["name"]: i["shape"] for i in sig["inputs"]}
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


def fold_conv_bn(model):
    """Conv -> BatchNormalization (inference, constant statistics) into one Conv with scaled
    weights and a bias, as ONNX Runtime does at load time. Without it TVM keeps the BN as a
    subtract/divide/multiply/add epilogue, which costs more than the conv itself in depthwise
    and short-reduction 1x1 layers. Returns the model unchanged when nothing folds."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    folds = []
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1 or len(bn.input) != 5:
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or uses.get(bn.input[0], 0) != 1 \
                or bn.input[0] in outputs or len(conv.input) < 2:
            continue
        names = list(bn.input[1:]) + list(conv.input[1:])
        if not all(nm in inits for nm in names if nm):
            continue
        if any(a.name == "training_mode" and a.i for a in bn.attribute):
            continue
        folds.append((conv, bn))
    if not folds:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    by_out = {n.output[0]: n for n in g.node if n.output}
    drop = set()
    for k, (conv0, bn0) in enumerate(folds):
        conv, bn = by_out[conv0.output[0]], by_out[bn0.output[0]]
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[x]).astype(np.float64)
                                  for x in bn.input[1:])
        w = numpy_helper.to_array(inits[conv.input[1]])
        if w.dtype != np.float32:
            return model
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0]))
        scale = gamma / np.sqrt(var + eps)
        w2 = (w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        b2 = ((b - mean) * scale + beta).astype(np.float32)
        wn, bnm = f"{conv.input[1]}__bnfold{k}", f"{conv.output[0]}__bnfold_bias{k}"
        g.initializer.extend([numpy_helper.from_array(w2, wn), numpy_helper.from_array(b2, bnm)])
        del conv.input[1:]
        conv.input.extend([wn, bnm])
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
    keep = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return m

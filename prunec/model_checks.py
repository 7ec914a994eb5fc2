"""Checks on a model read from outside, before prunec allocates or trusts anything in it: declared
sizes against a limit, weights against their dims, the opset and IR version against what prunec and
ONNX Runtime handle, and onnx.checker. graph.load/from_proto runs them (issue 18: a 444-byte model can
declare a 16 GB input; onnx writes IR 14 by default, ONNX Runtime reads 13)."""
from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import PrunecError, one_line

MIN_OPSET, MAX_OPSET = 11, 21
STANDARD_DOMAINS = ("", "ai.onnx")
# No tensor may declare more elements than this (2^28: 1 GiB of float32). Checked on the declared
# and inferred shapes before anything is allocated: a 444-byte model can declare an input
# [1, 4, 1e9], and verifying it would need 16 GB.
MAX_TENSOR_ELEMENTS = 2**28
# Data types older ONNX Runtimes read; a model using only these needs no IR version above 10.
CLASSIC_DTYPES = frozenset(range(1, 17))  # FLOAT .. BFLOAT16


def lower_new_opset(proto: onnx.ModelProto, source: str, notes: list[str]) -> onnx.ModelProto:
    """Opsets newer than prunec's rules know (MAX_OPSET) are converted down with onnx's version
    converter, or refused with the reason when it cannot."""
    opset = next((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), None)
    if opset is None or opset <= MAX_OPSET:
        return proto
    if opset > onnx.defs.onnx_opset_version():
        raise PrunecError(f"{source}: opset {opset} is newer than this onnx package knows "
                          f"({onnx.defs.onnx_opset_version()}); prunec supports opsets {MIN_OPSET}-{MAX_OPSET}")
    try:
        converted = onnx.version_converter.convert_version(proto, MAX_OPSET)
    except Exception as exc:
        raise PrunecError(f"{source}: opset {opset} is newer than {MAX_OPSET}, the newest prunec supports, "
                          f"and onnx's version converter cannot lower it ({one_line(exc, 300)}); export "
                          f"with opset {MAX_OPSET} or lower") from None
    notes.append(f"opset {opset} lowered to {MAX_OPSET} with onnx.version_converter")
    return converted


def static_shape(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = vi.type.tensor_type.shape.dim
    if all(d.HasField("dim_value") for d in dims):
        return tuple(int(d.dim_value) for d in dims)
    return None


def external_int(info: dict, key: str, tensor: str) -> int | None:
    """A non-negative integer field of external-data metadata, or None when absent."""
    if key not in info or info[key] == "":
        return None
    try:
        value = int(info[key])
    except ValueError:
        raise PrunecError(f"external data of tensor {tensor!r}: {key} {info[key]!r} is not an integer") from None
    if value < 0:
        raise PrunecError(f"external data of tensor {tensor!r}: {key} {value} is negative")
    return value


def tensor_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's raw data must hold, for fixed-size numeric types (None otherwise)."""
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:
        return None
    if tensor.data_type not in CLASSIC_DTYPES or tensor.data_type == onnx.TensorProto.STRING:
        return None
    return int(np.prod(tensor.dims, dtype=object)) * itemsize


def check_size(shape, what: str, source: str) -> None:
    n = int(np.prod([int(d) for d in shape], dtype=object)) if len(shape) else 1
    if n > MAX_TENSOR_ELEMENTS:
        raise PrunecError(f"{source}: {what} has shape {list(shape)}, {n:.3g} elements: more than prunec's "
                          f"limit of {MAX_TENSOR_ELEMENTS:,} per tensor; give realistic sizes "
                          "(--input-shape NAME=d0,d1,...)")


def check_initializers(proto: onnx.ModelProto, source: str) -> None:
    """Every weight's data must match its declared dims, and no weight may be absurdly large."""
    for t in proto.graph.initializer:
        if any(d < 0 for d in t.dims):
            raise PrunecError(f"{source}: weight {t.name!r} has negative dims {list(t.dims)}")
        check_size(t.dims, f"weight {t.name!r}", source)
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue  # the caller did not load it (onnx.load_model with load_external_data=False)
        try:
            numpy_helper.to_array(t)  # a view of the raw bytes: no copy for the common types
        except Exception as exc:
            raise PrunecError(f"{source}: weight {t.name!r} (dims {list(t.dims)}) has data that does not "
                              f"match its dims or type ({one_line(exc, 200)})") from None


def check_valid(proto: onnx.ModelProto, source: str) -> None:
    """The input must pass onnx.checker, or every later failure would be blamed on pruning."""
    try:
        onnx.checker.check_model(_structure_only(proto))
    except Exception as exc:
        raise PrunecError(f"{source}: the input model is invalid (onnx.checker: {one_line(exc)}); "
                          "fix the exporter's output first") from None


def _structure_only(proto: onnx.ModelProto, keep_bytes: int = 4096) -> onnx.ModelProto:
    """The model without its weights' bytes, for onnx.checker: passing a 100 MB proto to it costs
    seconds of serialization, and check_initializers has checked the weights already. A large weight
    becomes a graph input of the same name, type and dims, which the checker accepts (IR >= 4).
    Exporters often leave a graph output's shape out; the checker requires the field, prunec infers
    it: an empty one stands in."""
    light = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, field, getattr(proto, field))
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    g, src = light.graph, proto.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    inputs = {v.name for v in src.input}
    for t in src.initializer:
        if t.ByteSize() <= keep_bytes or proto.ir_version < 4:
            g.initializer.append(t)
        elif t.name not in inputs:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for vi in list(g.input) + list(g.output):
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape"):
            vi.type.tensor_type.shape.SetInParent()
    return light


@functools.lru_cache(maxsize=1)
def runtime_max_ir_version() -> int:
    """The newest IR version this ONNX Runtime loads (it only says so in an error message)."""
    import re

    import onnxruntime as ort

    g = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 13)])
    m.ir_version = onnx.IR_VERSION
    try:
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return onnx.IR_VERSION
    except Exception as exc:
        found = re.search(r"max supported IR version: (\d+)", str(exc))
        return int(found.group(1)) if found else 10


def dtypes_used(proto: onnx.ModelProto) -> set[int]:
    types = {t.data_type for t in proto.graph.initializer}
    for vi in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        if vi.type.HasField("tensor_type"):
            types.add(vi.type.tensor_type.elem_type)
    for node in proto.graph.node:
        for a in node.attribute:
            if a.name == "to" and a.type == onnx.AttributeProto.INT:
                types.add(a.i)
            elif a.type == onnx.AttributeProto.TENSOR:
                types.add(a.t.data_type)
    types.discard(0)
    return types


def lower_ir_version(proto: onnx.ModelProto, source: str, notes: list[str]) -> None:
    """onnx writes IR 14 by default, newer than ONNX Runtime reads. A model whose opsets and data
    types need nothing newer than the runtime's IR version gets that version instead."""
    if proto.ir_version > onnx.IR_VERSION:
        raise PrunecError(f"{source}: IR version {proto.ir_version} is newer than this onnx package knows "
                          f"({onnx.IR_VERSION}); export the model with an older IR version")
    if proto.ir_version <= 10:
        return
    top = runtime_max_ir_version()
    if proto.ir_version <= top:
        return
    needs = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    if dtypes_used(proto) <= CLASSIC_DTYPES and needs <= top and not proto.functions:
        notes.append(f"IR version {proto.ir_version} lowered to {top} (what ONNX Runtime reads; "
                     "the model uses nothing newer)")
        proto.ir_version = top
    else:
        raise PrunecError(f"{source}: IR version {proto.ir_version} is newer than ONNX Runtime reads "
                          f"({top}) and the model uses data types or functions that need it; "
                          "export it with an older IR version")


# Ops whose output is never larger than their inputs together: no size check needed before folding.
SIZE_KEEPING = ("Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Neg",
                "Abs", "Sqrt", "Reciprocal", "Relu", "Sigmoid", "Shape", "Slice", "Concat")


def fold_size_ok(node: onnx.NodeProto, consts: dict, opsets) -> bool:
    """A node folded at load is evaluated in memory: first infer its output sizes from its constant
    inputs (ConstantOfShape([100000, 100000]) would allocate 40 GB)."""
    if node.op_type in SIZE_KEEPING:
        return True
    g = onnx.helper.make_graph([node], "size", [], [onnx.ValueInfoProto(name=o) for o in node.output if o],
                               initializer=[consts[i] for i in dict.fromkeys(node.input) if i])
    try:
        inferred = onnx.shape_inference.infer_shapes(
            onnx.helper.make_model(g, opset_imports=opsets), strict_mode=True, data_prop=True)
    except Exception:
        return False
    for vi in inferred.graph.output:
        s = static_shape(vi)
        if s is None or int(np.prod(s, dtype=object)) > MAX_TENSOR_ELEMENTS:
            return False
    return True

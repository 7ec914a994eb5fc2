"""Load, normalize and save ONNX models.

Whatever the exporter did (weights in initializers or Constant nodes, external data, symbolic dims),
the rest of prunec sees one thing: an onnx-graphsurgeon graph whose weights are Constants and whose
every tensor has a static shape.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper, numpy_helper

from .errors import PrunecError, one_line

MIN_OPSET, MAX_OPSET = 11, 21
STANDARD_DOMAINS = ("", "ai.onnx")
# Model.annotations are saved as the model's metadata_props under this key prefix (values as JSON)
# and read back on load, so what one pass notes about the model survives a save/load round trip.
ANNOTATION_PREFIX = "prunec."
# No tensor may declare more elements than this (2^28: 1 GiB of float32). Checked on the declared
# and inferred shapes before anything is allocated: a 444-byte model can declare an input
# [1, 4, 1e9], and verifying it would need 16 GB.
MAX_TENSOR_ELEMENTS = 2**28
# Data types older ONNX Runtimes read; a model using only these needs no IR version above 10.
CLASSIC_DTYPES = frozenset(range(1, 17))  # FLOAT .. BFLOAT16


@dataclass
class Model:
    """A normalized model: the graph plus the facts every later stage needs."""

    graph: gs.Graph
    shapes: dict[str, tuple[int, ...]]
    input_shapes: dict[str, list[int]]
    opset: int
    source: str = "<memory>"
    # The interface as exported (symbolic dims kept), restored on save so the pruned
    # model is a drop-in replacement.
    io_proto: dict[str, onnx.ValueInfoProto] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ir_version: int = 8
    opset_imports: list[tuple[str, int]] = field(default_factory=list)
    # Facts passes record about the model (e.g. a sparsity layout): JSON values by key, carried by
    # every rebuild and saved as metadata_props "prunec.<key>".
    annotations: dict[str, object] = field(default_factory=dict)
    external_files: list[str] = field(default_factory=list)  # external data read at load (never outputs)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def copy(self) -> "Model":
        return self.with_graph(self.graph)

    def with_graph(self, graph: gs.Graph) -> "Model":
        """A new, re-normalized model from an edited graph (shapes inferred again), keeping this
        model's interface, notes and annotations. How every rewriting pass ends."""
        proto = self.to_proto(restore_io=False, graph=graph)
        return from_proto(proto, input_shapes=self.input_shapes, source=self.source, io_proto=self.io_proto,
                          notes=list(self.notes), annotations=dict(self.annotations))

    def with_annotations(self, **values) -> "Model":
        """The same model (graph shared, not copied) with annotations added or replaced."""
        return replace(self, annotations={**self.annotations, **values})

    def to_proto(self, restore_io: bool = True, graph: gs.Graph | None = None) -> onnx.ModelProto:
        graph = (graph or self.graph).copy()
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        proto = gs.export_onnx(graph, do_type_check=False)
        proto.ir_version = self.ir_version
        del proto.opset_import[:]
        for domain, version in self.opset_imports:
            proto.opset_import.append(onnx.helper.make_opsetid(domain, version))
        del proto.graph.value_info[:]
        if restore_io:
            _restore_io(proto, self.io_proto)
        _write_annotations(proto, self.annotations)
        return proto


def parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """Parse `NAME=1,3,224,224` strings."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition("=")
        if not sep or not name:
            raise PrunecError(f"--input-shape {spec!r}: expected NAME=d0,d1,... (e.g. input=1,3,224,224)")
        try:
            shapes[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise PrunecError(f"--input-shape {spec!r}: dims must be integers") from None
        if any(d <= 0 for d in shapes[name]):
            raise PrunecError(f"--input-shape {spec!r}: dims must be positive")
    return shapes


def load(path: str | os.PathLike, input_shapes: dict[str, list[int]] | None = None) -> Model:
    """Read an ONNX file from disk (external data included) and normalize it."""
    path = Path(path)
    if path.is_dir():
        raise PrunecError(f"{path}: is a folder, not an ONNX model file")
    if not path.is_file():
        raise PrunecError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PrunecError(f"{path}: cannot read it ({exc.strerror or one_line(exc)})") from None
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several types on garbage
        raise PrunecError(f"{path}: not a valid ONNX model (cannot parse it as ONNX protobuf: "
                          f"{one_line(exc, 200)})") from None
    del data
    if len(proto.graph.node) == 0:
        raise PrunecError(f"{path}: not a valid ONNX model (the graph has no nodes)")
    files = _load_external_data(proto, path.parent)
    model = from_proto(proto, input_shapes=input_shapes, source=str(path))
    model.external_files = files
    return model


def from_proto(proto: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None,
               source: str = "<memory>", io_proto: dict | None = None,
               notes: list[str] | None = None, annotations: dict | None = None) -> Model:
    """Normalize an in-memory ModelProto (the caller's proto is not modified)."""
    proto = _copy_proto(proto)
    notes = list(notes or [])
    if annotations is None:
        annotations = _read_annotations(proto, source)
    proto = _upgrade_old_opset(proto, source, notes)
    proto = _lower_new_opset(proto, source, notes)
    opset = _check_opset(proto, source)
    _check_domains(proto, source)
    _check_initializers(proto, source)
    _lower_ir_version(proto, source, notes)
    if io_proto is None:  # a model from outside, not one prunec rebuilt from a checked one
        _check_valid(proto, source)
    n_inputs = _initializers_out_of_inputs(proto)
    if n_inputs:
        notes.append(f"{n_inputs} initializers listed as graph inputs (IR < 4 style) treated as constants")
    n_const = _constant_nodes_to_initializers(proto)
    if n_const:
        notes.append(f"{n_const} Constant nodes turned into initializers")
    n_folded = _fold_constant_nodes(proto)
    if n_folded:
        notes.append(f"{n_folded} nodes computing from constants only were folded into initializers")
    if io_proto is None:
        io_proto = {v.name: _copy_vi(v) for v in list(proto.graph.input) + list(proto.graph.output)}
    resolved = _resolve_input_shapes(proto, input_shapes or {}, source, notes)
    for name, shape in resolved.items():
        _check_size(shape, f"input {name!r}", source)
    shapes = _infer_shapes(proto, resolved, source)
    _name_nodes(proto)
    graph = gs.import_onnx(proto)
    for name, tensor in graph.tensors().items():
        if name in shapes and isinstance(tensor, gs.Variable):
            tensor.shape = list(shapes[name])
    return Model(graph=graph, shapes=shapes, input_shapes=resolved, opset=opset, source=source,
                 io_proto=io_proto, notes=notes, ir_version=proto.ir_version,
                 opset_imports=[(o.domain, o.version) for o in proto.opset_import], annotations=annotations)


def save(model: Model, path: str | os.PathLike) -> Path:
    """Write atomically: a reader never sees a half-written file."""
    path = Path(path)
    proto = model.to_proto()
    save_proto(proto, path)
    return path


def save_proto(proto: onnx.ModelProto, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name beside the target, created with the umask's permissions (mkstemp's 0600
    # would hide the model from a server running as another user), renamed when complete.
    tmp = path.parent / f".{path.name}.prunec-tmp-{os.getpid()}"
    try:
        open(tmp, "xb").close()
        if proto.ByteSize() > 1_900_000_000:  # protobuf's 2 GB limit: weights go beside the model
            onnx.save(proto, str(tmp), save_as_external_data=True, location=path.name + ".data")
        else:
            onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- helpers

def _copy_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _name_nodes(proto: onnx.ModelProto) -> None:
    """Every node gets a name (op type and index) so groups, plans and refits can refer to it."""
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


def _read_annotations(proto: onnx.ModelProto, source: str) -> dict[str, object]:
    out = {}
    for prop in proto.metadata_props:
        if prop.key.startswith(ANNOTATION_PREFIX):
            try:
                out[prop.key[len(ANNOTATION_PREFIX):]] = json.loads(prop.value)
            except json.JSONDecodeError:
                raise PrunecError(f"{source}: metadata {prop.key!r} is not JSON; prunec writes its "
                                  f"'{ANNOTATION_PREFIX}*' entries as JSON (remove or fix it)") from None
    return out


def _write_annotations(proto: onnx.ModelProto, annotations: dict[str, object]) -> None:
    kept = [p for p in proto.metadata_props if not p.key.startswith(ANNOTATION_PREFIX)]
    if len(kept) == len(proto.metadata_props) and not annotations:
        return
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in sorted(annotations.items()):
        proto.metadata_props.add(key=ANNOTATION_PREFIX + key, value=json.dumps(value, sort_keys=True))


def _copy_vi(v: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto()
    out.CopyFrom(v)
    return out


def _restore_io(proto: onnx.ModelProto, io_proto: dict[str, onnx.ValueInfoProto]) -> None:
    """Give inputs/outputs back their exported symbolic dims, keeping the (possibly new) sizes of fixed dims."""
    for vi in list(proto.graph.input) + list(proto.graph.output):
        orig = io_proto.get(vi.name)
        if orig is None or not orig.type.HasField("tensor_type"):
            continue
        new_dims = vi.type.tensor_type.shape.dim
        old_dims = orig.type.tensor_type.shape.dim
        if len(new_dims) != len(old_dims):
            continue
        for nd, od in zip(new_dims, old_dims):
            if od.HasField("dim_param"):
                nd.dim_param = od.dim_param
            elif not od.HasField("dim_value") and not od.HasField("dim_param"):
                nd.Clear()


def _upgrade_old_opset(proto: onnx.ModelProto, source: str, notes: list[str]) -> onnx.ModelProto:
    """Opsets older than 11 are converted with onnx's version converter (and the IR version raised)."""
    opset = next((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), None)
    if opset is None or opset >= MIN_OPSET:
        return proto
    try:
        converted = onnx.version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:
        raise PrunecError(f"{source}: opset {opset} is older than {MIN_OPSET} and onnx's version converter "
                          f"cannot upgrade it ({one_line(exc)})") from None
    converted.ir_version = max(converted.ir_version, 6)
    notes.append(f"opset {opset} upgraded to {MIN_OPSET} with onnx.version_converter")
    return converted


def _lower_new_opset(proto: onnx.ModelProto, source: str, notes: list[str]) -> onnx.ModelProto:
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
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise PrunecError(f"{source}: opset {opset} is newer than {MAX_OPSET}, the newest prunec supports, "
                          f"and onnx's version converter cannot lower it ({one_line(exc, 300)}); export "
                          f"with opset {MAX_OPSET} or lower") from None
    notes.append(f"opset {opset} lowered to {MAX_OPSET} with onnx.version_converter")
    return converted


def _check_opset(proto: onnx.ModelProto, source: str) -> int:
    opset = next((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), None)
    if opset is None:
        raise PrunecError(f"{source}: the model declares no ai.onnx opset")
    if opset < MIN_OPSET:
        raise PrunecError(f"{source}: opset {opset} is older than {MIN_OPSET}; convert it first "
                          f"(onnx.version_converter.convert_version(model, {MIN_OPSET}))")
    return opset


def _check_domains(proto: onnx.ModelProto, source: str) -> None:
    """Custom ops can't be verified with ONNX Runtime; refuse them up front with the op named."""
    local_functions = {(f.domain, f.name) for f in proto.functions}
    known = STANDARD_DOMAINS + ("ai.onnx.ml", "com.microsoft")
    for node in proto.graph.node:
        if node.domain not in known and (node.domain, node.op_type) not in local_functions:
            raise PrunecError(f"{source}: node {node.name or node.output[0]!r} uses custom op "
                              f"{node.domain}::{node.op_type}, which prunec cannot run or verify")
        if node.domain in STANDARD_DOMAINS and (node.domain, node.op_type) not in local_functions:
            try:
                onnx.defs.get_schema(node.op_type, 10**6, node.domain)
            except onnx.defs.SchemaError:
                raise PrunecError(f"{source}: node {node.name or node.output[0]!r} uses unknown op "
                                  f"{node.op_type!r} (not in the ONNX standard)") from None


def _external_tensors(proto: onnx.ModelProto):
    yield from external_data_helper._get_all_tensors(proto)


def _load_external_data(proto: onnx.ModelProto, base_dir: Path) -> list[str]:
    """Read external data only from inside the model's folder; returns the files read."""
    base = base_dir.resolve()
    files: list[str] = []
    for tensor in _external_tensors(proto):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if not location or os.path.isabs(location) or location.startswith(("/", "\\")):
            raise PrunecError(f"external data of tensor {tensor.name!r}: location {location!r} "
                              "is absolute; only files inside the model's folder are read")
        target = (base / location).resolve()
        if base != target and base not in target.parents:
            raise PrunecError(f"external data of tensor {tensor.name!r}: location {location!r} "
                              "escapes the model's folder; refused")
        if not target.is_file():
            raise PrunecError(f"external data of tensor {tensor.name!r}: file {location!r} is missing")
        offset = _external_int(info, "offset", tensor.name) or 0
        length = _external_int(info, "length", tensor.name)
        size = target.stat().st_size
        if offset > size or (length is not None and offset + length > size):
            raise PrunecError(f"external data of tensor {tensor.name!r}: {location!r} is truncated "
                              f"({size} bytes; offset {offset}, length {length})")
        want = _tensor_bytes(tensor)
        got = length if length is not None else size - offset
        if want is not None and got != want:
            raise PrunecError(f"external data of tensor {tensor.name!r}: {location!r} holds {got} bytes from "
                              f"offset {offset}; its dims {list(tensor.dims)} need {want}")
        try:
            with open(target, "rb") as f:
                f.seek(offset)
                data = f.read(length) if length is not None else f.read()
        except OSError as exc:
            raise PrunecError(f"external data of tensor {tensor.name!r}: cannot read {location!r} "
                              f"({exc.strerror or one_line(exc)})") from None
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        if str(target) not in files:
            files.append(str(target))
    return files


def _external_int(info: dict, key: str, tensor: str) -> int | None:
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


def _tensor_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's raw data must hold, for fixed-size numeric types (None otherwise)."""
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:
        return None
    if tensor.data_type not in CLASSIC_DTYPES or tensor.data_type == onnx.TensorProto.STRING:
        return None
    return int(np.prod(tensor.dims, dtype=object)) * itemsize


def _check_size(shape, what: str, source: str) -> None:
    n = int(np.prod([int(d) for d in shape], dtype=object)) if len(shape) else 1
    if n > MAX_TENSOR_ELEMENTS:
        raise PrunecError(f"{source}: {what} has shape {list(shape)}, {n:.3g} elements: more than prunec's "
                          f"limit of {MAX_TENSOR_ELEMENTS:,} per tensor; give realistic sizes "
                          "(--input-shape NAME=d0,d1,...)")


def _check_initializers(proto: onnx.ModelProto, source: str) -> None:
    """Every weight's data must match its declared dims, and no weight may be absurdly large."""
    for t in proto.graph.initializer:
        if any(d < 0 for d in t.dims):
            raise PrunecError(f"{source}: weight {t.name!r} has negative dims {list(t.dims)}")
        _check_size(t.dims, f"weight {t.name!r}", source)
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue  # the caller did not load it (onnx.load_model with load_external_data=False)
        try:
            numpy_helper.to_array(t)  # a view of the raw bytes: no copy for the common types
        except Exception as exc:
            raise PrunecError(f"{source}: weight {t.name!r} (dims {list(t.dims)}) has data that does not "
                              f"match its dims or type ({one_line(exc, 200)})") from None


def _check_valid(proto: onnx.ModelProto, source: str) -> None:
    """The input must pass onnx.checker, or every later failure would be blamed on pruning."""
    if proto.ByteSize() > 1_900_000_000:
        return  # the checker cannot take protos over protobuf's 2 GB; verify checks the output
    # Exporters often leave a graph output's shape out; onnx.checker requires the field, prunec
    # infers it: an empty one (removed again below) stands in for the check.
    shapeless = [vi for vi in list(proto.graph.input) + list(proto.graph.output)
                 if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    for vi in shapeless:
        vi.type.tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise PrunecError(f"{source}: the input model is invalid (onnx.checker: {one_line(exc)}); "
                          "fix the exporter's output first") from None
    finally:
        for vi in shapeless:
            vi.type.tensor_type.ClearField("shape")


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


def _dtypes_used(proto: onnx.ModelProto) -> set[int]:
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


def _lower_ir_version(proto: onnx.ModelProto, source: str, notes: list[str]) -> None:
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
    if _dtypes_used(proto) <= CLASSIC_DTYPES and needs <= top and not proto.functions:
        notes.append(f"IR version {proto.ir_version} lowered to {top} (what ONNX Runtime reads; "
                     "the model uses nothing newer)")
        proto.ir_version = top
    else:
        raise PrunecError(f"{source}: IR version {proto.ir_version} is newer than ONNX Runtime reads "
                          f"({top}) and the model uses data types or functions that need it; "
                          "export it with an older IR version")


def _initializers_out_of_inputs(proto: onnx.ModelProto) -> int:
    """Old exports list every weight as a graph input too; for inference they are constants."""
    names = {t.name for t in proto.graph.initializer}
    keep = [v for v in proto.graph.input if v.name not in names]
    removed = len(proto.graph.input) - len(keep)
    if removed:
        del proto.graph.input[:]
        proto.graph.input.extend(keep)
        proto.ir_version = max(proto.ir_version, 4)  # IR 4 is where initializers stopped being inputs
    return removed


FOLDABLE_SKIP = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                 "Bernoulli", "If", "Loop", "Scan",
                 "DequantizeLinear", "QuantizeLinear")  # quantized weights stay stored as integers


def _fold_constant_nodes(proto: onnx.ModelProto) -> int:
    """Nodes whose inputs are all constants (Identity of a shared weight, ConstantOfShape, a weight
    Transpose or Cast) are evaluated once, so rules see the weights as constants."""
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
        if not _fold_size_ok(node, consts, list(proto.opset_import)):
            keep.append(node)  # an output too big (or of unknown size) to compute: shape inference decides
            continue
        try:
            values = _evaluate(node, consts, ReferenceEvaluator, list(proto.opset_import))
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


# Ops whose output is never larger than their inputs together: no size check needed before folding.
SIZE_KEEPING = ("Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Neg",
                "Abs", "Sqrt", "Reciprocal", "Relu", "Sigmoid", "Shape", "Slice", "Concat")


def _fold_size_ok(node: onnx.NodeProto, consts: dict, opsets) -> bool:
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
        s = _static(vi)
        if s is None or int(np.prod(s, dtype=object)) > MAX_TENSOR_ELEMENTS:
            return False
    return True


def _evaluate(node: onnx.NodeProto, consts: dict, evaluator_cls, opsets) -> list:
    if node.op_type == "Identity":
        return [numpy_helper.to_array(consts[node.input[0]])]
    feeds = {i: numpy_helper.to_array(consts[i]) for i in node.input if i}
    g = onnx.helper.make_graph([node], "fold", [
        onnx.helper.make_tensor_value_info(i, consts[i].data_type, None) for i in feeds],
        [onnx.ValueInfoProto(name=o) for o in node.output if o])
    return evaluator_cls(onnx.helper.make_model(g, opset_imports=opsets)).run(None, feeds)


def _constant_nodes_to_initializers(proto: onnx.ModelProto) -> int:
    """Paddle and some PyTorch exports keep weights in Constant nodes; make them initializers."""
    keep, count = [], 0
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS and len(node.attribute) == 1:
            attr = node.attribute[0]
            array = _constant_value(attr)
            if array is not None:
                proto.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
                count += 1
                continue
        keep.append(node)
    if count:
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
    return count


def _constant_value(attr: onnx.AttributeProto) -> np.ndarray | None:
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name == "value_float":
        return np.array(attr.f, dtype=np.float32)
    if attr.name == "value_floats":
        return np.array(list(attr.floats), dtype=np.float32)
    if attr.name == "value_int":
        return np.array(attr.i, dtype=np.int64)
    if attr.name == "value_ints":
        return np.array(list(attr.ints), dtype=np.int64)
    return None  # sparse or string constants stay as nodes


def _resolve_input_shapes(proto: onnx.ModelProto, hints: dict[str, list[int]], source: str,
                          notes: list[str]) -> dict[str, list[int]]:
    """Every graph input gets a static shape: from the model, the user's hint, or batch=1."""
    initializer_names = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializer_names]
    names = {v.name for v in inputs}
    unknown = sorted(set(hints) - names)
    if unknown:
        raise PrunecError(f"--input-shape names {unknown}, but the model's inputs are {sorted(names)}")
    resolved: dict[str, list[int]] = {}
    for vi in inputs:
        dims = vi.type.tensor_type.shape.dim
        if vi.name in hints:
            hint = hints[vi.name]
            if len(hint) != len(dims):
                raise PrunecError(f"--input-shape {vi.name}: rank {len(hint)} given, the model's input has rank {len(dims)}")
            for i, (d, h) in enumerate(zip(dims, hint)):
                if d.HasField("dim_value") and d.dim_value != h:
                    raise PrunecError(f"--input-shape {vi.name}: dim {i} is fixed to {d.dim_value} in the model, {h} given")
            shape = list(hint)
        else:
            shape = []
            for i, d in enumerate(dims):
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape.append(d.dim_value)
                elif i == 0:
                    shape.append(1)  # a symbolic leading dim is the batch: analyse at batch 1
                    notes.append(f"input {vi.name!r}: symbolic batch dim {d.dim_param or '?'} taken as 1")
                else:
                    raise PrunecError(
                        f"input {vi.name!r} has a dynamic dim {i} ({d.dim_param or 'unnamed'}); "
                        f"give its shape: --input-shape {vi.name}=" + ",".join(
                            str(x.dim_value) if x.HasField("dim_value") and x.dim_value > 0
                            else ("1" if k == 0 else f"<{x.dim_param or 'dim' + str(k)}>")
                            for k, x in enumerate(dims)))
        resolved[vi.name] = shape
        vi.type.tensor_type.shape.Clear()
        for s in shape:
            vi.type.tensor_type.shape.dim.add().dim_value = s
    # Output shapes are re-inferred from the static inputs.
    for vo in proto.graph.output:
        if vo.type.HasField("tensor_type"):
            vo.type.tensor_type.ClearField("shape")
    return resolved


def _static(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = vi.type.tensor_type.shape.dim
    if all(d.HasField("dim_value") for d in dims):
        return tuple(int(d.dim_value) for d in dims)
    return None


def _infer_shapes(proto: onnx.ModelProto, input_shapes: dict[str, list[int]], source: str) -> dict[str, tuple[int, ...]]:
    """ONNX shape inference first; ONNX Runtime fills whatever it leaves symbolic."""
    # First without data propagation: it computes the values of shape tensors, and materialized the
    # 10^10 values of a Range(0, 1e10) in a 500-byte model. Sizes are checked before it runs, and it
    # is skipped while a Range's length is still unknown (ONNX Runtime fills those shapes, bounded).
    shapes: dict[str, tuple[int, ...]] = {}
    for t in proto.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    for data_prop in (False, True):
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, data_prop=data_prop)
        except Exception as exc:
            raise PrunecError(f"{source}: shape inference failed: {one_line(exc)}") from None
        for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
            s = _static(vi)
            if s is not None:
                _check_size(s, f"tensor {vi.name!r}", source)
                shapes[vi.name] = s
        if any(o not in shapes for n in proto.graph.node if n.op_type == "Range" for o in n.output if o):
            break
    missing = [o for n in proto.graph.node for o in n.output if o and o not in shapes]
    if missing:
        shapes.update(_shapes_from_runtime(proto, input_shapes, missing, source))
    return shapes


def _shapes_from_runtime(proto: onnx.ModelProto, input_shapes, names: list[str], source: str) -> dict[str, tuple[int, ...]]:
    from .runtime import run_model, random_inputs

    probe = _copy_proto(proto)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    try:
        feeds = random_inputs(probe, input_shapes)
        values = run_model(probe, feeds, outputs=names)
    except PrunecError:
        raise
    except Exception as exc:
        raise PrunecError(f"{source}: ONNX Runtime cannot run the model to find its shapes: "
                          f"{one_line(exc)}") from None
    return {n: tuple(int(d) for d in np.shape(v)) for n, v in zip(names, values)}

"""Load, normalize and save ONNX models.

Whatever the exporter did (weights in initializers or Constant nodes, external data, symbolic dims),
the rest of prunec sees one thing: an onnx-graphsurgeon graph whose weights are Constants and whose
every tensor has a static shape.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper, numpy_helper

from .errors import PrunecError, one_line
from .model_checks import MAX_OPSET, MAX_TENSOR_ELEMENTS, MIN_OPSET, STANDARD_DOMAINS  # noqa: F401 (re-exported)
from .model_checks import (check_initializers, check_size, check_valid, external_int,
                           lower_ir_version, lower_new_opset, static_shape, tensor_bytes)
from .folding import (BATCH_PROBE, fold_batch_free_shape_reads, fold_constant_nodes, fold_static_shapes,
                      nodes_to_initializers, open_input_dims, with_input_shapes)
from .subgraphs import body_constants_to_initializers, body_shapes, name_body_nodes
from .model_header import PROBE_SIZE, fixed as _fixed, read_header, trained_size, write_header

# Model.annotations are saved as the model's metadata_props under this key prefix (values as JSON)
# and read back on load, so what one pass notes about the model survives a save/load round trip.
ANNOTATION_PREFIX = "prunec."


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
    # What the exporter wrote about the model (metadata_props such as Ultralytics' names/stride, doc
    # strings, model version): carried through every rebuild and written back on save.
    metadata_props: dict[str, str] = field(default_factory=dict)
    header: dict = field(default_factory=dict)
    # Where each input's analysed shape came from, for inputs with dynamic dims: "given" (a hint),
    # "batch 1", "imgsz metadata" or "default <PROBE_SIZE>".
    input_shapes_source: dict[str, str] = field(default_factory=dict)

    @property
    def dynamic_dims(self) -> dict[str, dict[int, str]]:
        """Input dims the exported model leaves open (symbolic, unnamed, or a -1/0 value), by input
        and axis, with their names ('' when unnamed). The shapes prunec analysed them at are in
        `input_shapes`; the saved model keeps them open."""
        out: dict[str, dict[int, str]] = {}
        for name in self.input_shapes:
            vi = self.io_proto.get(name)
            if vi is None or not vi.type.HasField("tensor_type"):
                continue
            dims = {i: d.dim_param for i, d in enumerate(vi.type.tensor_type.shape.dim) if not _fixed(d)}
            if dims:
                out[name] = dims
        return out

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
        write_header(proto, self.header, self.metadata_props)
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
    header, metadata_props = read_header(proto, ANNOTATION_PREFIX)
    proto = _upgrade_old_opset(proto, source, notes)
    proto = lower_new_opset(proto, source, notes)
    opset = _check_opset(proto, source)
    _check_domains(proto, source)
    check_initializers(proto, source)
    lower_ir_version(proto, source, notes)
    if io_proto is None:  # a model from outside, not one prunec rebuilt from a checked one
        check_valid(proto, source)
    n_inputs = _initializers_out_of_inputs(proto)
    if n_inputs:
        notes.append(f"{n_inputs} initializers listed as graph inputs (IR < 4 style) treated as constants")
    n_const = _constant_nodes_to_initializers(proto) + body_constants_to_initializers(proto, _constant_value)
    if n_const:
        notes.append(f"{n_const} Constant nodes turned into initializers")
    n_folded = fold_constant_nodes(proto)
    if n_folded:
        notes.append(f"{n_folded} nodes computing from constants only were folded into initializers")
    if io_proto is None:
        io_proto = {v.name: _copy_vi(v) for v in list(proto.graph.input) + list(proto.graph.output)}
    shape_sources: dict[str, str] = {}
    resolved = _resolve_input_shapes(proto, input_shapes or {}, source, notes, shape_sources)
    for name, shape in resolved.items():
        check_size(shape, f"input {name!r}", source)
    try:
        shapes = _infer_shapes(proto, resolved, source)
    except PrunecError as exc:
        defaulted = sorted(n for n, s in shape_sources.items() if s.startswith("default"))
        if not defaulted:
            raise
        raise PrunecError(f"{exc} (the dynamic dims of {', '.join(map(repr, defaulted))} were tried at the "
                          f"default size {PROBE_SIZE}; if the model reads other sizes, give one: --input-shape "
                          f"{defaulted[0]}=D0,D1,... or calibration data at that size)") from None
    open_dims = open_input_dims(io_proto, proto)
    if not open_dims and fold_static_shapes(proto, shapes):
        notes.append("shapes computed at run time (Shape -> Gather -> Concat ...) folded into constants: every "
                     "input size is fixed")
        shapes = _infer_shapes(proto, resolved, source)
    elif open_dims and all(axis == 0 for _, axis in open_dims) and any(n.op_type == "Shape" for n in proto.graph.node):
        other = {k: ([BATCH_PROBE] + list(v[1:]) if any(n == k for n, _ in open_dims) else v)
                 for k, v in resolved.items()}
        if fold_batch_free_shape_reads(proto, shapes, _infer_shapes(with_input_shapes(proto, other), other, source)):
            notes.append("shape elements that do not depend on the batch (Shape -> Gather of H, W, C) folded into "
                         "constants: only the batch is dynamic")
            shapes = _infer_shapes(proto, resolved, source)
    _name_nodes(proto)
    name_body_nodes(proto)
    graph = gs.import_onnx(proto)
    for name, tensor in graph.tensors().items():
        if name in shapes and isinstance(tensor, gs.Variable):
            tensor.shape = list(shapes[name])
    return Model(graph=graph, shapes=shapes, input_shapes=resolved, opset=opset, source=source,
                 io_proto=io_proto, notes=notes, ir_version=proto.ir_version,
                 opset_imports=[(o.domain, o.version) for o in proto.opset_import], annotations=annotations,
                 metadata_props=metadata_props, header=header, input_shapes_source=shape_sources)


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
    """Give inputs/outputs back their exported symbolic dims and doc strings, keeping the (possibly
    new) sizes of fixed dims. A -1/0 dim value is written as an unnamed dynamic dim."""
    for vi in list(proto.graph.input) + list(proto.graph.output):
        orig = io_proto.get(vi.name)
        if orig is None:
            continue
        if orig.doc_string:
            vi.doc_string = orig.doc_string
        if not orig.type.HasField("tensor_type"):
            continue
        new_dims = vi.type.tensor_type.shape.dim
        old_dims = orig.type.tensor_type.shape.dim
        if len(new_dims) != len(old_dims):
            continue
        for nd, od in zip(new_dims, old_dims):
            if od.HasField("dim_param"):
                nd.dim_param = od.dim_param
            elif not _fixed(od):
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
        offset = external_int(info, "offset", tensor.name) or 0
        length = external_int(info, "length", tensor.name)
        size = target.stat().st_size
        if offset > size or (length is not None and offset + length > size):
            raise PrunecError(f"external data of tensor {tensor.name!r}: {location!r} is truncated "
                              f"({size} bytes; offset {offset}, length {length})")
        want = tensor_bytes(tensor)
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


def _constant_nodes_to_initializers(proto: onnx.ModelProto) -> int:
    """Paddle and some PyTorch exports keep weights in Constant nodes; make them initializers."""
    return nodes_to_initializers(proto, lambda node: _constant_value(node.attribute[0]) if (
        node.op_type == "Constant" and node.domain in STANDARD_DOMAINS and len(node.attribute) == 1) else None)


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
                          notes: list[str], sources: dict[str, str]) -> dict[str, list[int]]:
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
        trained = trained_size(proto, len(dims)) if len(inputs) == 1 else {}
        if vi.name in hints:
            hint = hints[vi.name]
            if len(hint) != len(dims):
                raise PrunecError(f"--input-shape {vi.name}: rank {len(hint)} given, the model's input has rank {len(dims)}")
            for i, (d, h) in enumerate(zip(dims, hint)):
                if _fixed(d) and d.dim_value != h:
                    raise PrunecError(f"--input-shape {vi.name}: dim {i} is fixed to {d.dim_value} in the model, {h} given")
            shape = list(hint)
            if not all(_fixed(d) for d in dims):
                sources[vi.name] = "given"
        else:
            shape = []
            for i, d in enumerate(dims):
                label = d.dim_param or ("unnamed" if not d.HasField("dim_value") else f"value {d.dim_value}")
                if _fixed(d):
                    shape.append(d.dim_value)
                elif i == 0:
                    shape.append(1)  # a symbolic leading dim is the batch: analyse at batch 1
                    notes.append(f"input {vi.name!r}: dynamic batch dim ({label}) taken as 1")
                    sources.setdefault(vi.name, "batch 1")
                else:
                    # Channel groups do not depend on spatial or sequence sizes: analyse at a probe
                    # size; the saved model keeps the dim open, and verify runs it at another size.
                    size, why = trained.get(i, PROBE_SIZE), "the model's imgsz metadata" if i in trained else "default"
                    shape.append(size)
                    sources[vi.name] = "imgsz metadata" if i in trained else f"default {PROBE_SIZE}"
                    notes.append(f"input {vi.name!r}: dynamic dim {i} ({label}) analysed at {size} ({why}); "
                                 f"MACs refer to that size (--input-shape sets another)")
        resolved[vi.name] = shape
        vi.type.tensor_type.shape.Clear()
        for s in shape:
            vi.type.tensor_type.shape.dim.add().dim_value = s
    # Output shapes are re-inferred from the static inputs.
    for vo in proto.graph.output:
        if vo.type.HasField("tensor_type"):
            vo.type.tensor_type.ClearField("shape")
    return resolved


def _infer_shapes(proto: onnx.ModelProto, input_shapes: dict[str, list[int]], source: str) -> dict[str, tuple[int, ...]]:
    """ONNX shape inference first; ONNX Runtime fills whatever it leaves symbolic."""
    # With a Range, first without data propagation: that computes the values of shape tensors, and
    # materialized the 10^10 values of a Range(0, 1e10) in a 500-byte model. Sizes are checked before
    # it runs, and it is skipped while a Range's length is still unknown (ONNX Runtime fills those
    # shapes, bounded).
    shapes: dict[str, tuple[int, ...]] = {}
    for t in proto.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    has_range = any(n.op_type == "Range" for n in proto.graph.node)
    for data_prop in (False, True) if has_range else (True,):
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, data_prop=data_prop)
        except Exception as exc:
            raise PrunecError(f"{source}: shape inference failed: {one_line(exc)}") from None
        for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
            s = static_shape(vi)
            if s is not None:
                check_size(s, f"tensor {vi.name!r}", source)
                shapes[vi.name] = s
        for name, s in body_shapes(inferred).items():  # If/Loop/Scan bodies
            check_size(s, f"tensor {name!r}", source)
            shapes.setdefault(name, s)
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

"""What an exported model says about itself beyond its graph, kept through pruning: metadata_props
(Ultralytics' names/stride/imgsz/task...), producer, model version, doc strings of the model and its
nodes; and which input dims the exporter left dynamic (a name, no value, or the -1/0 some write)."""
from __future__ import annotations

import json

import onnx

# Size given to a dynamic non-batch input dim that no hint fixes (a multiple of 32, like the strides
# of detectors and recognizers; the usual classifier resolution).
PROBE_SIZE = 224

HEADER_FIELDS = ("producer_name", "producer_version", "doc_string", "domain", "model_version")


def fixed(d) -> bool:
    """A dim with a real size. Exporters write -1 or 0 for "any size"; those are dynamic."""
    return d.HasField("dim_value") and d.dim_value > 0


def read_header(proto: onnx.ModelProto, own_prefix: str) -> tuple[dict, dict[str, str]]:
    """The model-level facts onnx-graphsurgeon does not carry, and the exporter's metadata_props
    (entries under `own_prefix` are prunec's annotations, read separately)."""
    header = {f: getattr(proto, f) for f in HEADER_FIELDS if getattr(proto, f)}
    node_docs = {n.name: n.doc_string for n in proto.graph.node if n.name and n.doc_string}
    if node_docs:
        header["node_doc_strings"] = node_docs
    return header, {p.key: p.value for p in proto.metadata_props if not p.key.startswith(own_prefix)}


def write_header(proto: onnx.ModelProto, header: dict, metadata_props: dict[str, str]) -> None:
    for f in HEADER_FIELDS:
        if f in header:
            setattr(proto, f, header[f])
    docs = header.get("node_doc_strings") or {}
    for node in proto.graph.node:
        if node.name in docs and not node.doc_string:
            node.doc_string = docs[node.name]
    del proto.metadata_props[:]
    for key, value in metadata_props.items():
        proto.metadata_props.add(key=key, value=value)


def trained_size(proto: onnx.ModelProto, rank: int) -> dict[int, int]:
    """Ultralytics exports state the training size (`imgsz: [640, 640]`); used for dynamic H/W."""
    text = next((p.value for p in proto.metadata_props if p.key == "imgsz"), None)
    try:
        size = json.loads(text) if text else None
    except ValueError:
        return {}
    if rank == 4 and isinstance(size, list) and len(size) == 2 and all(isinstance(d, int) and d > 0 for d in size):
        return {2: size[0], 3: size[1]}
    return {}

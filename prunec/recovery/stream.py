"""Streaming a model over calibration data with ONNX Runtime.

A Tapper exposes chosen intermediate tensors as extra graph outputs and runs the model batch by
batch; each batch's tensors go to a callback and are dropped, so memory is bounded by one batch
however big the model or the calibration set is.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from prunec.graph import Model
from prunec.runtime import session

from .data import CalibData

# A batch's exposed activations stay below this (bytes); batch size is chosen from it.
BATCH_BYTES = 256 * 2**20


def batch_capable(model: Model) -> bool:
    """Can the model take several samples at once? Only if every input's exported batch dim is symbolic."""
    for name in model.input_shapes:
        vi = model.io_proto.get(name)
        if vi is None:
            return False
        dims = vi.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            return False
    return True


def keep_only(proto: onnx.ModelProto, outputs: list[str]) -> None:
    """Make `outputs` the graph's only outputs and drop every node they do not depend on.

    Why: ONNX Runtime runs every node of a graph whatever outputs a run asks for; a refit level near
    the input of a recognizer needs its first convolutions, not its LSTM (measured on ddddocr
    common.onnx: 4.8 ms instead of 110 ms per sample)."""
    need, kept = set(outputs), []
    for node in reversed(proto.graph.node):
        if any(o in need for o in node.output):
            kept.append(node)
            need.update(i for i in node.input if i)
            need.update(_subgraph_reads(node))
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(kept))
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs)
    inits = [t for t in proto.graph.initializer if t.name in need]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Every name read inside a node's subgraphs (If/Loop/Scan bodies may read outer tensors)."""
    names: set[str] = set()
    for attr in node.attribute:
        for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
            for n in g.node:
                names.update(n.input)
                names.update(_subgraph_reads(n))
    return names


def tap_batch(model: Model, outputs: list[str]) -> int:
    """Samples per run of `model` returning `outputs`: as many as keep them within BATCH_BYTES at
    their analysed sizes, at most 64; 1 for a model that cannot batch."""
    if not batch_capable(model):
        return 1
    sizes = {n: int(np.prod(s)) * 4 for n, s in model.shapes.items()}
    analysed_batch = next(iter(model.input_shapes.values()))[0] if model.input_shapes else 1
    per_sample = sum(sizes.get(n, 0) for n in outputs) / max(1, analysed_batch)
    return int(max(1, min(64, BATCH_BYTES // max(per_sample, 1))))


class Tapper:
    """One ONNX Runtime session that returns the graph outputs plus the chosen intermediate tensors
    (`only_taps`: just those tensors, computing nothing else)."""

    def __init__(self, model: Model, taps: list[str], threads: int | None = None,
                 weights_as_inputs: list[str] | None = None, only_taps: bool = False):
        # With the exported (symbolic) batch dim restored, one run takes a whole batch of samples; with
        # any open dim restored, samples of other sizes than the analysed one run (a recognizer's widths).
        proto = model.to_proto(restore_io=batch_capable(model) or bool(model.dynamic_dims))
        existing = [o.name for o in proto.graph.output]
        if only_taps and taps:
            keep_only(proto, list(dict.fromkeys(taps)))
            existing = []  # the graph's own outputs are no longer computed
        self.outputs = [o.name for o in proto.graph.output]
        for name in taps:
            if name not in self.outputs:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
                self.outputs.append(name)
        # Weights listed as inputs can be replaced per run (sensitivity probes) with one session.
        for name in weights_as_inputs or []:
            init = next(t for t in proto.graph.initializer if t.name == name)
            proto.graph.input.append(onnx.helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
        self.n_graph_outputs = len(existing)
        self.batched = batch_capable(model)
        self.session = session(proto, threads)
        self.batch = tap_batch(model, self.outputs)

    def run(self, feeds: dict[str, np.ndarray], extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        feeds = dict(feeds, **(extra or {}))
        values = self.session.run(self.outputs, feeds)
        return dict(zip(self.outputs, values))

    def feeds(self, data: CalibData, limit: int | None = None):
        """The feeds of each run over `data`: batches, or one sample at a time for a model that cannot batch."""
        for batch in data.batches(self.batch, limit):
            if self.batched:
                yield batch
            else:
                for i in range(len(next(iter(batch.values())))):
                    yield {k: v[i:i + 1] for k, v in batch.items()}

    def stream(self, data: CalibData, fn: Callable[[dict], None], limit: int | None = None,
               extra: dict[str, np.ndarray] | None = None) -> None:
        for feeds in self.feeds(data, limit):
            fn(self.run(feeds, extra))


def output_axis(shape) -> int | None:
    """The axis of an output whose entries are scored separately: the shortest axis after the first with
    more than one entry (YOLOv8's [1, 4+classes, anchors] -> 4+classes, YOLOX's [1, anchors, 5+classes]
    -> 5+classes, logits [1, classes] -> classes, CTC [T, 1, classes] -> classes); None for no such axis."""
    axes = [a for a in range(1, len(shape)) if isinstance(shape[a], int) and shape[a] > 1]
    return min(axes, key=lambda a: shape[a]) if axes else None


def output_axes(model: Model, names: list[str]) -> list[int | None]:
    """output_axis of each named tensor, from the model's analysed shapes (not a batch's: a batch of
    several samples must not turn the batch axis of a [T, N, classes] output into the channel axis).
    An axis the exported model leaves open (a recognizer's time steps) is passed over when a fixed one
    qualifies: its length changes with the input's size, so calibration samples of several sizes
    could not be scored per entry of it."""
    out = []
    for n in names:
        shape = tuple(model.shapes.get(n, ()))
        vi = model.io_proto.get(n)
        dims = vi.type.tensor_type.shape.dim if vi is not None and vi.type.HasField("tensor_type") else []
        open_axes = {a for a, d in enumerate(dims) if not d.HasField("dim_value") or d.dim_value <= 0}
        fixed = tuple(1 if a in open_axes else d for a, d in enumerate(shape)) if len(dims) == len(shape) else shape
        out.append(output_axis(fixed) if output_axis(fixed) is not None else output_axis(shape))
    return out


def channel_sq(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Sum of squares per entry of `axis` (one value when axis is None)."""
    a = np.asarray(a, np.float64)
    if axis is None or axis >= a.ndim:
        return np.array([np.sum(np.square(a))])
    return np.square(np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)).sum(1)


class ChannelEnergy:
    """Streaming variation of an output per entry of its axis: sum of (y - mean)^2 over all samples."""

    def __init__(self, axis: int | None):
        self.axis, self.s1, self.s2, self.n = axis, 0.0, 0.0, 0

    def add(self, a: np.ndarray) -> None:
        a = np.asarray(a, np.float64)
        if self.axis is None or self.axis >= a.ndim:
            flat = a.reshape(-1, 1)
        else:
            flat = np.moveaxis(a, self.axis, -1).reshape(-1, a.shape[self.axis])
        self.s1 = self.s1 + flat.sum(0)
        self.s2 = self.s2 + np.square(flat).sum(0)
        self.n += flat.shape[0]

    @property
    def centered(self) -> np.ndarray:
        return np.maximum(np.atleast_1d(self.s2 - np.square(self.s1) / max(self.n, 1)), 0.0)


def channel_energy(arrays, axis: int | None) -> np.ndarray:
    acc = ChannelEnergy(axis)
    for a in arrays:
        acc.add(a)
    return acc.centered


FLOOR_SHARE = 0.1  # an entry is scored against at least this share of its segment's largest variation


def output_segments(model: Model, names: list[str], axes: list[int | None]) -> list[list[int] | None]:
    """Lengths of the runs of each output's axis that come from one tensor: the inputs of a Concat
    along that axis (through Transpose and shape-keeping one-input ops), e.g. YOLOv8's boxes | class
    scores; through Reshapes that keep the axes up to it and Concats along other axes (YOLOX's levels).
    Entries of one run share units; None: one run."""
    producer = {o.name: n for n in model.graph.nodes for o in n.outputs}
    out = []
    for name, axis in zip(names, axes):
        seg, t, ax = None, name, axis
        while ax is not None and t in producer:
            node = producer[t]
            if node.op == "Transpose":
                perm = node.attrs.get("perm")
                ax, t = (perm[ax] if perm is not None else None), node.inputs[0].name
            elif node.op == "Concat":
                rank = len(model.shapes.get(t, ()))
                if node.attrs.get("axis", 0) % max(rank, 1) == ax:
                    sizes = [model.shapes.get(i.name, ())[ax] if len(model.shapes.get(i.name, ())) > ax else None
                             for i in node.inputs]
                    if all(isinstance(z, int) for z in sizes):
                        seg = [z for z in sizes if z]
                    break
                t = node.inputs[0].name  # joined along another axis: the pieces share this axis' layout
            elif node.op in ("Reshape", "Flatten") and \
                    tuple(model.shapes.get(node.inputs[0].name, ()))[:ax + 1] == tuple(model.shapes.get(t, ()))[:ax + 1]:
                t = node.inputs[0].name  # trailing axes merged or split: this axis unchanged
            elif len(data := [i for i in node.inputs if not isinstance(i, gs.Constant)]) == 1 and \
                    tuple(model.shapes.get(data[0].name, ())) == tuple(model.shapes.get(t, ())):
                t = data[0].name  # Sigmoid, Mul by a constant
            else:
                break
        out.append(seg)
    return out


def channel_floor(variation: np.ndarray) -> float:
    """The least variation an entry is scored against: FLOOR_SHARE of the largest in its run, so an
    entry that hardly varies (a class that almost never fires) counts for what it is worth to the run
    instead of as its own noise, while runs on very different scales (YOLO's boxes in pixels, scores
    in [0, 1]) each count in their own units."""
    v = np.asarray(variation, np.float64).ravel()
    return float(max(FLOOR_SHARE * v.max(initial=0.0), 1e-30))


def floored(den: np.ndarray, segments: list[int] | None) -> np.ndarray:
    den = np.asarray(den, np.float64)
    if not segments or sum(segments) != den.size:
        return np.maximum(den, channel_floor(den))
    cuts = np.cumsum(segments)[:-1]
    return np.concatenate([np.maximum(d, channel_floor(d)) for d in np.split(den, cuts)])


def relative_error(num: list[np.ndarray], den: list[np.ndarray], segments: list | None = None) -> float:
    """Mean over outputs and their axis entries of ||y - y_ref||^2 / ||y_ref - mean(y_ref)||^2 (the
    denominator floored within each segment, see channel_floor): a share of each entry's variation.
    (Why per entry: YOLOv8n's one output holds boxes in pixels and class scores in [0, 1]; the plain
    ratio saw only the boxes: a plan that lost 20-100% of every class score's variation scored 4e-4.)"""
    segments = segments or [None] * len(num)
    parts = [np.mean(n / floored(d, sg)) for n, d, sg in zip(num, den, segments)]
    return float(np.mean(parts)) if parts else 0.0


UNKNOWN_BYTES = 2 ** 62  # OriginalValues.nbytes of tensors whose shape is not known


class OriginalValues:
    """The original model's tensors on the calibration data, batch by batch, kept in memory: a search
    that refits many candidate plans (prunec.recovery.sensitivity) reuses the same targets instead of rerunning them."""

    def __init__(self, original: Model, data: CalibData, tensors: list[str]):
        tap = Tapper(original, sorted(set(tensors)), only_taps=True)
        self.data, self.size = data, tap.batch if tap.batched else 1
        self.values = [tap.run(b) for b in data.batches(self.size)]

    @staticmethod
    def nbytes(original: Model, data: CalibData, tensors: list[str]) -> int:
        shapes = [original.shapes.get(t) for t in set(tensors)]
        if any(s is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in s[1:]) for s in shapes):
            return UNKNOWN_BYTES  # a tensor of unknown size: callers that budget memory must not cache it
        per_sample = sum(int(np.prod(s[1:])) for s in shapes)
        # tensors grow with the input: samples of other shapes than the analysed one count in proportion
        analysed = sum(int(np.prod(s[1:])) for s in original.input_shapes.values()) or 1
        samples = sum(n * sum(int(np.prod(s)) for s in shape.values()) for shape, n in zip(data.shapes, data.sizes))
        return int(4 * per_sample * samples / analysed)

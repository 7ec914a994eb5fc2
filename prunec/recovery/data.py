"""Calibration data: a few hundred unlabeled inputs, validated against the model's inputs.

Sources: an .npz file (one array per model input, first axis = samples; or several per input,
NAME__0, NAME__1, ..., for samples of different shapes), a folder of images with a preprocessing
spec, or (Python API) a dict of arrays or of lists of arrays, or any iterable of {input name: array}
dicts.

Samples of different shapes (a recognizer's line widths, where the model leaves that dim open) are
kept in groups of one shape each: every consumer goes through CalibData.batches(), which never
mixes groups in one batch.

The first step of recovery (prunec/recovery/__init__.py): everything after it reads CalibData.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import onnx

from prunec.errors import PrunecError
from prunec.graph import Model
from prunec.runtime import graph_inputs, input_dtype

from .files import (CHUNK_SEP, check_budget, decode_png, decode_pnm, npz_shapes, read_image,  # noqa: F401
                    read_npz, to_rgb)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".npy", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------- the data
class CalibData:
    """Validated samples in groups of one shape: groups[g][name] is [N_g, *that group's sample shape].
    `arrays` is the one group's dict (data of one shape, the common case)."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None, source: str = "<memory>",
                 notes: list[str] | None = None, groups: list[dict[str, np.ndarray]] | None = None):
        self.groups = [dict(g) for g in groups] if groups is not None else [dict(arrays or {})]
        self.source, self.notes = source, list(notes or [])

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if len(self.groups) > 1:
            raise ValueError(f"calibration data {self.source} holds samples of {len(self.groups)} shapes: read "
                             "them by group (.groups) or batch (.batches())")
        return self.groups[0] if self.groups else {}

    @property
    def sizes(self) -> list[int]:
        return [len(next(iter(g.values()))) if g else 0 for g in self.groups]

    @property
    def shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """One sample's shape per input, for each group."""
        return [{k: tuple(v.shape[1:]) for k, v in g.items()} for g in self.groups]

    def __len__(self) -> int:
        return sum(self.sizes)

    def batches(self, size: int, limit: int | None = None):
        """Batches of at most `size` samples, group after group (never two shapes in one batch);
        `limit`: the samples of subset(limit)."""
        data = self if limit is None else self.subset(limit)
        for g, n in zip(data.groups, data.sizes):
            for i in range(0, n, size):
                yield {k: v[i:min(i + size, n)] for k, v in g.items()}

    def subset(self, n: int) -> "CalibData":
        """The first n samples, taken from every group in proportion to its size (so each shape stays
        represented)."""
        return self._take([slice(0, k) for k in shares(self.sizes, n)])

    def split(self, n_tail: int) -> tuple["CalibData", "CalibData"]:
        """(head, tail): the last n_tail samples, taken from every group in proportion to its size."""
        tails = shares(self.sizes, n_tail)
        return (self._take([slice(0, n - k) for n, k in zip(self.sizes, tails)]),
                self._take([slice(n - k, n) for n, k in zip(self.sizes, tails)]))

    def _take(self, parts: list[slice]) -> "CalibData":
        groups = [{k: v[sl] for k, v in g.items()} for g, sl in zip(self.groups, parts)]
        return CalibData(source=self.source, notes=self.notes,
                         groups=[g for g in groups if len(next(iter(g.values()), ()))] or groups[:1])

    def map(self, fn, source: str | None = None) -> "CalibData":
        """fn(name, array) applied to every group's arrays (shapes may change; groups are not merged)."""
        return CalibData(source=source or self.source, notes=self.notes,
                         groups=[{k: fn(k, v) for k, v in g.items()} for g in self.groups])

    def __add__(self, other: "CalibData") -> "CalibData":
        """These samples then the other's, groups of one shape merged."""
        return CalibData(source=self.source, notes=self.notes, groups=by_shape(self.groups + other.groups))

    def shape_summary(self) -> list[dict]:
        """[{"shape": {input: one sample's shape}, "samples": n}] per group (for report.json)."""
        return [{"shape": {k: list(s) for k, s in shape.items()}, "samples": n}
                for shape, n in zip(self.shapes, self.sizes)]


def shares(sizes: list[int], n: int) -> list[int]:
    """n split over groups of these sizes in proportion (largest remainders), each at most its size."""
    total = sum(sizes)
    if n >= total:
        return list(sizes)
    exact = [s * n / total for s in sizes]
    out = [int(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: out[i] - exact[i])[:n - sum(out)]:
        out[i] += 1
    return out


def by_shape(chunks: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Chunks of samples grouped by their sample shapes (first appearance first; empty chunks dropped)."""
    groups: dict[tuple, list[dict]] = {}
    for c in chunks:
        if c and len(next(iter(c.values()))):
            groups.setdefault(tuple((k, v.shape[1:]) for k, v in sorted(c.items())), []).append(c)
    return [cs[0] if len(cs) == 1 else {k: np.concatenate([c[k] for c in cs]) for k in cs[0]}
            for cs in groups.values()]


class InputSpec(NamedTuple):
    shape: tuple[int, ...]  # the analysed shape
    dtype: np.dtype
    open: dict[int, str]  # axes after the batch axis the model leaves open (name or '')


def _model_inputs(model: Model) -> dict[str, InputSpec]:
    proto = model.to_proto(restore_io=False)
    dynamic = model.dynamic_dims
    return {vi.name: InputSpec(tuple(model.input_shapes[vi.name]), input_dtype(vi),
                               {a: p for a, p in dynamic.get(vi.name, {}).items() if a > 0})
            for vi in graph_inputs(proto)}


def declared_inputs(proto: onnx.ModelProto) -> dict[str, InputSpec]:
    """The graph inputs as the file declares them, before any shape is resolved: dynamic dims are
    1 and open (for reading the calibration data's shapes when the model cannot be loaded at the
    default analysis size)."""
    out = {}
    for vi in graph_inputs(proto):
        dims = vi.type.tensor_type.shape.dim
        fixed = [d.HasField("dim_value") and d.dim_value > 0 for d in dims]
        out[vi.name] = InputSpec(tuple(d.dim_value if f else 1 for d, f in zip(dims, fixed)), input_dtype(vi),
                                 {a: d.dim_param for a, (d, f) in enumerate(zip(dims, fixed)) if a > 0 and not f})
    return out


def _expected(spec: InputSpec) -> str:
    """What one input's calibration array must look like: [samples, 3, 16, 16], open dims by name."""
    dims = [spec.open[a] or "?" if a in spec.open else str(d) for a, d in enumerate(spec.shape)][1:]
    declared = [spec.open[a] or "?" if a in spec.open else d for a, d in enumerate(spec.shape)]
    return f"[samples, {', '.join(dims)}] (the model's input is {_show(declared)})"


def _show(dims) -> str:
    return "[" + ", ".join(map(str, dims)) + "]"


def _sample_check(inputs: dict[str, InputSpec], source: str):
    """check(name, label, shape, chunked) -> samples in an array of that shape: a batch [n, *sample],
    or (chunked: an entry of a list or an NAME__i member) one sample; open dims may take any size."""
    def check(name: str, label: str, shape: tuple[int, ...], chunked: bool) -> int:
        spec = inputs[name]
        rank = len(spec.shape)
        batched = len(shape) == rank
        sample = shape[1:] if batched else shape
        fits = (batched or (chunked and len(shape) == rank - 1)) and all(
            s == want or (a in spec.open and s > 0) for a, (s, want) in enumerate(zip(sample, spec.shape[1:]), 1))
        if not fits:
            raise PrunecError(f"calibration data {source}: {label} has shape {_show(shape)}; expected "
                              f"{_expected(spec)}" + ("; or one sample without the samples axis" if chunked else ""))
        return shape[0] if batched else 1
    return check


def _validate(chunks: list[dict[str, np.ndarray]], model: Model, source: str,
              labels: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Names must match the model's inputs; each sample's shape must fit the input without its batch
    axis (open dims any size); chunks of samples -> groups of one shape."""
    inputs = _model_inputs(model)
    check = _sample_check(inputs, source)
    out, seen = [], 0
    for c, chunk in enumerate(chunks):
        missing, extra = sorted(set(inputs) - set(chunk)), sorted(set(chunk) - set(inputs))
        if missing or extra:
            raise PrunecError(f"calibration data {source}: has inputs {sorted(chunk)}, the model's inputs are "
                              f"{sorted(inputs)}" + (f" (missing {missing})" if missing else ""))
        count, arrays = None, {}
        for name, spec in inputs.items():
            a = np.asarray(chunk[name])
            label = f"input {name!r}" + (f" ({labels[c]})" if labels and labels[c] else "")
            n = check(name, label, tuple(a.shape), False)
            if count is not None and n != count:
                raise PrunecError(f"calibration data {source}: inputs have different numbers of samples"
                                  + (f" ({labels[c]})" if labels and labels[c] else ""))
            count = n
            if a.dtype.kind not in "biuf":
                raise PrunecError(f"calibration data {source}: input {name!r} has non-numeric dtype {a.dtype}")
            if np.issubdtype(spec.dtype, np.integer) and a.dtype.kind == "f":
                raise PrunecError(f"calibration data {source}: input {name!r} is float but the model expects {spec.dtype}")
            if a.dtype.kind == "f" and len(a):
                finite = np.isfinite(a).reshape(len(a), -1).all(axis=1)
                if not finite.all():
                    raise PrunecError(f"calibration data {source}: input {name!r} has NaN or infinite values in "
                                      f"{int((~finite).sum())} of {len(a)} samples (first: sample "
                                      f"{seen + int(np.argmin(finite))}); remove or fix them")
            arrays[name] = np.ascontiguousarray(a, dtype=spec.dtype)
        out.append(arrays)
        seen += count or 0
    if not seen:
        raise PrunecError(f"calibration data {source}: no samples")
    return by_shape(out)


def _first(chunks: list[dict[str, np.ndarray]], max_samples: int | None) -> list[dict[str, np.ndarray]]:
    """The chunks cut to the first max_samples samples."""
    if not max_samples:
        return chunks
    out, left = [], max_samples
    for c in chunks:
        if left <= 0:
            break
        n = len(next(iter(c.values()))) if c else 0
        out.append({k: v[:left] for k, v in c.items()})
        left -= n
    return out


def _as_chunks(arrays: dict, inputs: dict[str, InputSpec], source: str) -> tuple[list[dict], list[str]]:
    """A dict of arrays (one chunk) or of lists of arrays (chunk i = entry i of every list; an entry
    is one sample or a batch) -> chunks with a samples axis, and each chunk's label."""
    lists = {k: isinstance(v, (list, tuple)) for k, v in arrays.items()}
    if not any(lists.values()):
        return [{k: np.asarray(v) for k, v in arrays.items()}], [""]
    if not all(lists.values()) or len({len(v) for v in arrays.values()}) > 1:
        raise PrunecError(f"calibration data {source}: give every input as a list of the same length (entry i of "
                          "each list holds the same samples) or every input as one array")
    check = _sample_check(inputs, source)
    chunks, labels = [], []
    for i in range(len(next(iter(arrays.values())))):
        chunk = {}
        for k, v in arrays.items():
            a = np.asarray(v[i])
            if k in inputs:
                check(k, f"input {k!r} (list entry {i})", tuple(a.shape), True)
                chunk[k] = a if a.ndim == len(inputs[k].shape) else a[None]
            else:
                chunk[k] = a
        chunks.append(chunk)
        labels.append(f"list entry {i}")
    return chunks, labels


def from_arrays(arrays: dict, model: Model, max_samples: int | None = None,
                source: str = "<arrays>") -> CalibData:
    """{input name: array [samples, ...]} or {input name: [array, ...]} (arrays of different shapes)."""
    chunks, labels = _as_chunks(arrays, _model_inputs(model), source)
    return CalibData(source=source, groups=_validate(_first(chunks, max_samples), model, source, labels))


def from_npz(path: str | Path, model: Model, max_samples: int | None = None) -> CalibData:
    """Only the samples used are read, after every member's header was checked (recovery/files.py)."""
    path = Path(path)
    inputs = _model_inputs(model)
    chunks = read_npz(path, inputs, max_samples, _sample_check(inputs, str(path)))
    return CalibData(source=str(path), groups=_validate(chunks, model, str(path)))


def from_iterable(samples: Iterable[dict], model: Model, max_samples: int | None = None) -> CalibData:
    """Each item maps input names to one sample (with or without the batch axis) or a batch; items
    may differ in shape where the model's dims are open."""
    inputs = _model_inputs(model)
    check = _sample_check(inputs, "<iterable>")
    chunks, labels, n = [], [], 0
    for i, item in enumerate(samples):
        if not isinstance(item, dict):
            raise PrunecError(f"calibration sample {i}: expected a dict of input name -> array, got {type(item).__name__}")
        if set(item) != set(inputs):
            raise PrunecError(f"calibration sample {i}: has inputs {sorted(item)}, the model's inputs are {sorted(inputs)}")
        chunk = {}
        for name, spec in inputs.items():
            a = np.asarray(item[name])
            check(name, f"input {name!r} (sample {i})", tuple(a.shape), True)
            chunk[name] = a[None] if a.ndim == len(spec.shape) - 1 else a
        chunks.append(chunk)
        labels.append(f"sample {i}")
        n += len(next(iter(chunk.values()))) if chunk else 0
        if max_samples and n >= max_samples:
            break
    if n == 0:
        raise PrunecError("calibration data: the iterable gave no samples")
    return CalibData(source="<iterable>", groups=_validate(_first(chunks, max_samples), model, "<iterable>", labels))


def analysis_shapes(calib, model: Model | None, max_samples: int | None = None,
                    inputs: dict[str, InputSpec] | None = None) -> tuple[dict[str, tuple], int]:
    """The sample shapes (one per input, without the samples axis) the most of the calibration
    samples have (the first such when several are as frequent), and how many different ones there
    are; ({}, 0) when that cannot be known without reading the data (an image folder, an iterable)
    or the source is unreadable (the loader reports it). An .npz is read from its headers only.
    `inputs` (declared_inputs) instead of a model: before the model could be loaded."""
    inputs = inputs if inputs is not None else _model_inputs(model)
    try:
        if isinstance(calib, CalibData):
            counted = list(zip(calib.shapes, calib.sizes))
        elif isinstance(calib, dict):
            chunks, _ = _as_chunks(calib, inputs, "<arrays>")
            counted = [({k: tuple(np.shape(v)[1:]) for k, v in c.items()}, len(next(iter(c.values()))))
                       for c in chunks]
        elif isinstance(calib, (str, Path)) and str(calib).endswith(".npz") and Path(calib).is_file():
            counted = []
            for c in npz_shapes(Path(calib), inputs):
                batched = {k: len(s) == len(inputs[k].shape) for k, s in c.items()}
                counted.append(({k: tuple(s[1:]) if batched[k] else tuple(s) for k, s in c.items()},
                                next((s[0] for k, s in c.items() if batched[k]), 1)))
        else:
            return {}, 0
    except (PrunecError, OSError, ValueError, TypeError):
        return {}, 0
    totals: dict[tuple, int] = {}
    left = max_samples or sum(n for _, n in counted)
    for shape, n in counted:
        key = tuple(sorted(shape.items()))
        if left > 0 and n > 0:
            totals[key] = totals.get(key, 0) + min(n, left)
        left -= n
    if not totals:
        return {}, 0
    best = max(totals.values())
    return dict(next(k for k, v in totals.items() if v == best)), len(totals)


# --------------------------------------------------------------------------- images
@dataclass
class Preprocess:
    """How images become an input tensor: resize, (x - mean) / std on 0..255 pixels, layout, colour order."""

    size: tuple[int, int] | None = None  # (height, width); None: the model input's spatial size
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (255.0,)
    layout: str = "NCHW"
    bgr: bool = False
    letterbox: bool = False  # keep aspect ratio, pad with grey 114 (YOLO style)

    @classmethod
    def parse(cls, spec: str | None) -> "Preprocess":
        p = cls()
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.lower()
            try:
                if key == "size" and sep:
                    dims = [int(d) for d in value.lower().replace("x", "/").split("/")]
                    p.size = (dims[0], dims[-1])
                elif key in ("mean", "std") and sep:
                    setattr(p, key, tuple(float(v) for v in value.split("/")))
                elif key == "layout" and value.upper() in ("NCHW", "NHWC"):
                    p.layout = value.upper()
                elif key in ("rgb", "bgr") and not sep:
                    p.bgr = key == "bgr"
                elif key in ("letterbox", "stretch") and not sep:
                    p.letterbox = key == "letterbox"
                else:
                    raise ValueError
            except ValueError:
                raise PrunecError(f"--preprocess {spec!r}: cannot read {part!r}; expected e.g. "
                                  "size=320,mean=0,std=255,layout=NCHW,rgb (mean/std per channel as a/b/c; "
                                  "also letterbox)") from None
        if any(s == 0 for s in p.std):
            raise PrunecError(f"--preprocess {spec!r}: std must not be 0")
        return p

    def apply(self, rgb: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
        """rgb: uint8/float [H, W, 3] -> float32 [C, H, W] or [H, W, C]."""
        img = rgb.astype(np.float32)
        if channels == 1:
            img = img @ np.array([0.299, 0.587, 0.114], np.float32)[:, None] if img.shape[2] == 3 else img[..., :1]
        elif self.bgr:
            img = img[..., ::-1]
        img = _letterbox(img, size) if self.letterbox else resize_bilinear(img, size)
        mean = np.asarray(self.mean, np.float32)[:channels] if len(self.mean) > 1 else np.float32(self.mean[0])
        std = np.asarray(self.std, np.float32)[:channels] if len(self.std) > 1 else np.float32(self.std[0])
        img = (img - mean) / std
        return np.ascontiguousarray(img.transpose(2, 0, 1) if self.layout == "NCHW" else img)


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, C] float -> [h, w, C], pixel-centre aligned (as most image libraries do)."""
    h, w = size
    H, W = img.shape[:2]
    if (H, W) == (h, w):
        return img

    def axis(n_out, n_in):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(x).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (x - i0).astype(np.float32)

    y0, y1, fy = axis(h, H)
    x0, x1, fx = axis(w, W)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def _letterbox(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    scale = min(h / img.shape[0], w / img.shape[1])
    nh, nw = max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))
    out = np.full((h, w, img.shape[2]), 114.0, np.float32)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top:top + nh, left:left + nw] = resize_bilinear(img, (nh, nw))
    return out


def from_images(folder: str | Path, model: Model, preprocess: Preprocess | str | None = None,
                max_samples: int | None = None) -> CalibData:
    folder = Path(folder)
    pre = preprocess if isinstance(preprocess, Preprocess) else Preprocess.parse(preprocess)
    inputs = _model_inputs(model)
    if len(inputs) != 1:
        raise PrunecError(f"--calib {folder}: a folder of images needs a model with one input; this one has "
                          f"{sorted(inputs)} (use an .npz with one array per input)")
    (name, (shape, dtype, _)), = inputs.items()
    if len(shape) != 4:
        raise PrunecError(f"--calib {folder}: input {name!r} has shape {list(shape)}, not an image batch")
    c_axis = 1 if pre.layout == "NCHW" else 3
    channels = shape[c_axis]
    hw = (shape[2], shape[3]) if pre.layout == "NCHW" else (shape[1], shape[2])
    if channels not in (1, 3):
        raise PrunecError(f"--calib {folder}: input {name!r} {list(shape)} has {channels} channels on the "
                          f"{pre.layout} channel axis; set --preprocess layout=NCHW or NHWC")
    if pre.size is not None and tuple(pre.size) != hw:
        raise PrunecError(f"--preprocess size={pre.size[0]}x{pre.size[1]} does not match the model input "
                          f"{name!r} {list(shape)}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise PrunecError(f"--calib {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    files = files[:max_samples] if max_samples else files
    shape = (channels, *hw) if pre.layout == "NCHW" else (*hw, channels)
    check_budget(len(files), int(np.prod(shape)) * max(np.dtype(dtype).itemsize, 4), str(folder))
    samples = np.empty((len(files), *shape), dtype)  # filled one decoded image at a time
    for i, f in enumerate(files):
        samples[i] = pre.apply(read_image(f), hw, channels)
    return CalibData(source=str(folder), groups=_validate([{name: samples}], model, str(folder)))


def load_calib(source, model: Model, preprocess: str | Preprocess | None = None,
               max_samples: int | None = None) -> CalibData:
    """Whatever the user gave (path to .npz or image folder, dict of arrays, iterable of dicts) -> CalibData."""
    if isinstance(source, CalibData):
        return CalibData(source=source.source, notes=source.notes,
                         groups=_validate(_first(source.groups, max_samples), model, source.source))
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return from_images(path, model, preprocess, max_samples)
        if not path.is_file():
            raise PrunecError(f"--calib {path}: no such file or folder")
        if path.suffix.lower() != ".npz":
            raise PrunecError(f"--calib {path}: expected an .npz file (one array per input) or a folder of images")
        return from_npz(path, model, max_samples)
    if isinstance(source, dict):
        return from_arrays(source, model, max_samples)
    return from_iterable(source, model, max_samples)


def mirrored(data: CalibData, axis: int) -> CalibData:
    """The samples followed by their mirror images along `axis` (of the model input, batch axis = 0),
    group by group: twice the samples for reconstruction where a mirrored input is a valid input
    (photos, clothes; not text or digits)."""
    for name, a in (data.groups[0] if data.groups else {}).items():
        if not 1 <= axis < a.ndim:
            raise PrunecError(f"--calib-mirror {axis}: input {name!r} has axes 1..{a.ndim - 1} to mirror "
                              f"(shape {list(a.shape)}; the batch axis 0 cannot be mirrored)")
    return data.map(lambda name, a: np.concatenate([a, np.flip(a, axis)]), f"{data.source} + mirrored (axis {axis})")


def fit_and_check(data: CalibData, mirror: int | None = None) -> tuple[CalibData, CalibData, CalibData]:
    """(all samples, fit split, check split): fit on most samples, check on the rest (all of them when
    there are too few to spare), each shape in proportion. With `mirror`, each split is followed by
    its mirror images (a held-out sample's mirror image is held out too)."""
    fit, check = _split(data)
    if mirror is None:
        return data, fit, check
    if fit is check:  # too few samples to hold any out
        data = mirrored(data, mirror)
        return data, data, data
    fit, check = mirrored(fit, mirror), mirrored(check, mirror)
    return fit + check, fit, check


def _split(data: CalibData) -> tuple[CalibData, CalibData]:
    """Fit on most samples, check on the rest (all of them when there are too few to spare)."""
    n = len(data)
    if n < 32:
        return data, data
    return data.split(min(64, n // 5))

"""Calibration data: a few hundred unlabeled inputs, validated against the model's inputs.

Sources: an .npz file (one array per model input, first axis = samples), a folder of images with a
preprocessing spec, or (Python API) any iterable of {input name: array} dicts.

The first step of recovery (prunec/recovery/__init__.py): everything after it reads CalibData.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from prunec.errors import PrunecError
from prunec.graph import Model
from prunec.runtime import graph_inputs, input_dtype

from .files import check_budget, decode_png, decode_pnm, read_image, read_npz, to_rgb  # noqa: F401

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".npy", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------- the data
@dataclass
class CalibData:
    """Validated samples: arrays[name] is [N, *input shape without batch]."""

    arrays: dict[str, np.ndarray]
    source: str = "<memory>"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def batches(self, size: int, limit: int | None = None):
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, size):
            yield {k: v[i:min(i + size, n)] for k, v in self.arrays.items()}

    def subset(self, n: int) -> "CalibData":
        return CalibData({k: v[:n] for k, v in self.arrays.items()}, self.source, self.notes)


def _model_inputs(model: Model) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    proto = model.to_proto(restore_io=False)
    return {vi.name: (tuple(model.input_shapes[vi.name]), input_dtype(vi)) for vi in graph_inputs(proto)}


def _validate(arrays: dict[str, np.ndarray], model: Model, source: str) -> dict[str, np.ndarray]:
    """Names must match the model's inputs; each sample's shape must match the input without its batch axis."""
    inputs = _model_inputs(model)
    missing, extra = sorted(set(inputs) - set(arrays)), sorted(set(arrays) - set(inputs))
    if missing or extra:
        raise PrunecError(f"calibration data {source}: has inputs {sorted(arrays)}, the model's inputs are "
                          f"{sorted(inputs)}" + (f" (missing {missing})" if missing else ""))
    out, count = {}, None
    for name, (shape, dtype) in inputs.items():
        a = np.asarray(arrays[name])
        want = tuple(shape[1:])
        if a.ndim != len(shape) or tuple(a.shape[1:]) != want:
            raise PrunecError(f"calibration data {source}: input {name!r} has shape {list(a.shape)}; expected "
                              f"[samples, {', '.join(map(str, want))}] (the model's input is {list(shape)})")
        if count is not None and len(a) != count:
            raise PrunecError(f"calibration data {source}: inputs have different numbers of samples")
        count = len(a)
        if a.dtype.kind not in "biuf":
            raise PrunecError(f"calibration data {source}: input {name!r} has non-numeric dtype {a.dtype}")
        if np.issubdtype(dtype, np.integer) and a.dtype.kind == "f":
            raise PrunecError(f"calibration data {source}: input {name!r} is float but the model expects {dtype}")
        if a.dtype.kind == "f" and len(a):
            finite = np.isfinite(a).reshape(len(a), -1).all(axis=1)
            if not finite.all():
                raise PrunecError(f"calibration data {source}: input {name!r} has NaN or infinite values in "
                                  f"{int((~finite).sum())} of {len(a)} samples (first: sample "
                                  f"{int(np.argmin(finite))}); remove or fix them")
        out[name] = np.ascontiguousarray(a, dtype=dtype)
    if not count:
        raise PrunecError(f"calibration data {source}: no samples")
    return out


def from_arrays(arrays: dict[str, np.ndarray], model: Model, max_samples: int | None = None,
                source: str = "<arrays>") -> CalibData:
    arrays = {k: (np.asarray(v)[:max_samples] if max_samples else np.asarray(v)) for k, v in arrays.items()}
    return CalibData(_validate(arrays, model, source), source)


def from_npz(path: str | Path, model: Model, max_samples: int | None = None) -> CalibData:
    """Only the samples used are read, after every member's header was checked (recovery/files.py)."""
    path = Path(path)
    arrays = read_npz(path, _model_inputs(model), max_samples)
    return CalibData(_validate(arrays, model, str(path)), str(path))


def from_iterable(samples: Iterable[dict], model: Model, max_samples: int | None = None) -> CalibData:
    """Each item maps input names to one sample (with or without the batch axis) or a batch."""
    inputs = _model_inputs(model)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in inputs}
    n = 0
    for i, item in enumerate(samples):
        if not isinstance(item, dict):
            raise PrunecError(f"calibration sample {i}: expected a dict of input name -> array, got {type(item).__name__}")
        if set(item) != set(inputs):
            raise PrunecError(f"calibration sample {i}: has inputs {sorted(item)}, the model's inputs are {sorted(inputs)}")
        rows = None
        for name, (shape, _) in inputs.items():
            a = np.asarray(item[name])
            if a.ndim == len(shape) - 1:
                a = a[None]
            parts[name].append(a)
            rows = len(a)
        n += rows or 0
        if max_samples and n >= max_samples:
            break
    if n == 0:
        raise PrunecError("calibration data: the iterable gave no samples")
    try:
        arrays = {k: np.concatenate(v)[:max_samples] if max_samples else np.concatenate(v) for k, v in parts.items()}
    except ValueError as exc:
        raise PrunecError(f"calibration data: samples have different shapes ({exc})") from None
    return CalibData(_validate(arrays, model, "<iterable>"), "<iterable>")


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
    (name, (shape, dtype)), = inputs.items()
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
    return CalibData(_validate({name: samples}, model, str(folder)), str(folder))


def load_calib(source, model: Model, preprocess: str | Preprocess | None = None,
               max_samples: int | None = None) -> CalibData:
    """Whatever the user gave (path to .npz or image folder, dict of arrays, iterable of dicts) -> CalibData."""
    if isinstance(source, CalibData):
        data = _validate(source.arrays, model, source.source)
        return CalibData({k: v[:max_samples] if max_samples else v for k, v in data.items()}, source.source)
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
    """The samples followed by their mirror images along `axis` (of the model input, batch axis = 0):
    twice the samples for reconstruction where a mirrored input is a valid input (photos, clothes;
    not text or digits)."""
    out = {}
    for name, a in data.arrays.items():
        if not 1 <= axis < a.ndim:
            raise PrunecError(f"--calib-mirror {axis}: input {name!r} has axes 1..{a.ndim - 1} to mirror "
                              f"(shape {list(a.shape)}; the batch axis 0 cannot be mirrored)")
        out[name] = np.concatenate([a, np.flip(a, axis)])
    return CalibData(out, f"{data.source} + mirrored (axis {axis})", list(data.notes))


def fit_and_check(data: CalibData, mirror: int | None = None) -> tuple[CalibData, CalibData, CalibData]:
    """(all samples, fit split, check split): fit on most samples, check on the rest (all of them when
    there are too few to spare). With `mirror`, each split is followed by its mirror images (a held-out
    sample's mirror image is held out too)."""
    fit, check = _split(data)
    if mirror is None:
        return data, fit, check
    if fit is check:  # too few samples to hold any out
        data = mirrored(data, mirror)
        return data, data, data
    fit, check = mirrored(fit, mirror), mirrored(check, mirror)
    return CalibData({k: np.concatenate([fit.arrays[k], check.arrays[k]]) for k in fit.arrays}, fit.source), fit, check


def _split(data: CalibData) -> tuple[CalibData, CalibData]:
    """Fit on most samples, check on the rest (all of them when there are too few to spare)."""
    n = len(data)
    if n < 32:
        return data, data
    n_check = min(64, n // 5)
    fit = CalibData({k: v[:n - n_check] for k, v in data.arrays.items()}, data.source)
    check = CalibData({k: v[n - n_check:] for k, v in data.arrays.items()}, data.source)
    return fit, check

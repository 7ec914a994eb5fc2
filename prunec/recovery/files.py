"""Calibration files read within bounds: .npz members and images are checked against their declared
sizes before anything is decoded, and only the samples used are read.

A 2.6 MB PNG can declare 30000x30000 pixels (5.4 GB decoded), a 1 MB .npz can hold a member that
inflates to gigabytes; neither may reach memory. Limits: MAX_IMAGE_PIXELS per image, and
CALIB_MAX_BYTES for all the samples kept (the error says to lower --calib-samples).
"""
from __future__ import annotations

import os
import struct
import zipfile
import zlib
from math import prod
from pathlib import Path

import numpy as np

from prunec.errors import PrunecError, one_line

CALIB_MAX_BYTES = int(os.environ.get("PRUNEC_CALIB_MAX_BYTES", 4 * 2**30))
MAX_IMAGE_PIXELS = 8192 * 8192


def check_budget(n_samples: int, sample_bytes: int, source: str) -> None:
    total = n_samples * sample_bytes
    if total > CALIB_MAX_BYTES:
        fit = max(1, CALIB_MAX_BYTES // max(sample_bytes, 1))
        raise PrunecError(f"calibration data {source}: {n_samples} samples of {sample_bytes:,} bytes need "
                          f"{total / 2**30:.1f} GiB, over the {CALIB_MAX_BYTES / 2**30:.1f} GiB limit; "
                          f"use --calib-samples {fit} or fewer (limit: PRUNEC_CALIB_MAX_BYTES)")


# --------------------------------------------------------------------------- .npz
CHUNK_SEP = "__"  # NAME__0, NAME__1, ...: several arrays of one input (samples of different shapes)


def npz_members(zf: zipfile.ZipFile, inputs, source: str) -> list[tuple[int, dict[str, zipfile.ZipInfo]]]:
    """(index, members) of each chunk of samples, in order: a plain NAME member first (index -1),
    then NAME__0, NAME__1, ... by number; chunk i of every input together make the same samples."""
    chunks: dict[str, dict] = {}
    names = []
    for info in zf.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        names.append(name)
        base, sep, index = name.rpartition(CHUNK_SEP)
        if name in inputs:
            chunks.setdefault(name, {})[-1] = info
        elif sep and base in inputs and index.isdigit():
            chunks.setdefault(base, {})[int(index)] = info
        else:
            chunks.setdefault(None, {})[name] = info
    missing, extra = sorted(set(inputs) - set(chunks)), sorted(chunks.get(None, {}))
    if missing or extra:
        raise PrunecError(f"calibration data {source}: has inputs {sorted(names)}, the model's inputs are "
                          f"{sorted(inputs)}" + (f" (missing {missing})" if missing else "")
                          + (f"; several arrays per input are named NAME{CHUNK_SEP}0, NAME{CHUNK_SEP}1, ..."
                             if extra and not missing else ""))
    indices = {name: sorted(chunks[name]) for name in inputs}
    first = next(iter(inputs))
    for name, idx in indices.items():
        if idx != indices[first]:
            raise PrunecError(f"calibration data {source}: input {first!r} has {_members(first, indices[first])} "
                              f"but {name!r} has {_members(name, idx)}; every input needs the same "
                              f"NAME{CHUNK_SEP}i members (chunk i of each input holds the same samples)")
    return [(i, {name: chunks[name][i] for name in inputs}) for i in indices[first]]


def _members(name: str, indices: list[int]) -> str:
    return ", ".join(name if i < 0 else f"{name}{CHUNK_SEP}{i}" for i in indices)


def chunk_label(name: str, info: zipfile.ZipInfo) -> str:
    member = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    return f"input {name!r}" + (f" (member {member!r})" if member != name else "")


def npz_shapes(path: Path, inputs, source: str | None = None) -> list[dict[str, tuple]]:
    """Each chunk's member shapes (from the headers only): what the analysis shape is chosen from."""
    source = source or str(path)
    with _open_npz(path) as zf:
        return [{name: _npy_header(zf, info, source, name)[0] for name, info in chunk.items()}
                for _, chunk in npz_members(zf, inputs, source)]


def read_npz(path: Path, inputs, max_samples: int | None, check=None) -> list[dict[str, np.ndarray]]:
    """The chunks of samples (one dict of [n, *sample shape] arrays per chunk), the first max_samples
    samples in all, after checking every member's header (names, shape, dtype) and the memory limit.
    `inputs`: name -> (analysed shape, dtype, ...); `check(name, label, shape, chunked) -> rows` raises
    on a shape that does not fit and says how many samples the member holds."""
    source = str(path)
    with _open_npz(path) as zf:
        chunks = npz_members(zf, inputs, source)
        planned, total, sample_bytes = [], 0, 0
        for index, chunk in chunks:
            headers = {name: _npy_header(zf, info, source, name) for name, info in chunk.items()}
            counts = set()
            for name, (shape, _, _) in headers.items():
                counts.add(check(name, chunk_label(name, chunk[name]), tuple(shape), index >= 0))
            if len(counts) > 1:
                raise PrunecError(f"calibration data {source}: inputs have different numbers of samples"
                                  + (f" ({', '.join(i.filename for i in chunk.values())})" if index >= 0 else ""))
            n = counts.pop() if counts else 0
            n = min(n, max_samples - total) if max_samples else n
            if n <= 0 and total:
                break
            batched = {name: (shape if len(shape) == len(inputs[name][0]) else (1, *shape), fortran, dtype)
                       for name, (shape, fortran, dtype) in headers.items()}
            planned.append((chunk, batched, n))
            total += n
            # budget in the model's dtypes: that is what the samples are converted to
            sample_bytes += n * sum(int(prod(shape[1:])) * max(np.dtype(dt).itemsize, np.dtype(inputs[k][1]).itemsize)
                                    for k, (shape, _, dt) in batched.items())
        check_budget(total, sample_bytes // max(total, 1), source)
        return [{name: _read_rows(zf, chunk[name], shape, fortran, dtype, n, source, name)
                 for name, (shape, fortran, dtype) in batched.items()}
                for chunk, batched, n in planned]


def _open_npz(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        hint = ""
        try:
            with open(path, "rb") as f:
                if f.read(6) == b"\x93NUMPY":
                    hint = "; this is a single .npy array: save it with np.savez(file, input_name=array)"
        except OSError:
            pass
        raise PrunecError(f"calibration file {path}: cannot read it as .npz ({one_line(exc)}){hint}") from None


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, name: str):
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            header_len = f.tell() if f.seekable() else None
    except PrunecError:
        raise
    except Exception as exc:
        raise PrunecError(f"calibration data {source}: member {info.filename!r} is not a readable .npy array "
                          f"({one_line(exc, 300)})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise PrunecError(f"calibration data {source}: input {name!r} has non-numeric dtype {dtype}")
    declared = int(prod(shape)) * dtype.itemsize
    if header_len is not None and info.file_size != header_len + declared:
        raise PrunecError(f"calibration data {source}: member {info.filename!r} declares shape {list(shape)} "
                          f"({declared:,} bytes) but holds {info.file_size - header_len:,}: corrupt or truncated")
    return shape, fortran, dtype


def _read_rows(zf, info, shape, fortran: bool, dtype: np.dtype, n: int, source: str, name: str) -> np.ndarray:
    row = int(prod(shape[1:])) * dtype.itemsize
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
            if fortran and len(shape) > 1 and n < shape[0]:
                # column-major: a sample's values are spread over the whole member
                check_budget(shape[0], row, source)
                data = f.read(shape[0] * row)
                a = np.frombuffer(data, dtype).reshape(shape, order="F")[:n]
            else:
                data = f.read(n * row)
                if len(data) != n * row:
                    raise EOFError(f"{len(data)} of {n * row} bytes")
                a = np.frombuffer(data, dtype).reshape((n, *shape[1:]), order="F" if fortran else "C")
    except PrunecError:
        raise
    except Exception as exc:  # zlib.error, BadZipFile (bad CRC), EOFError on a truncated member
        raise PrunecError(f"calibration data {source}: cannot read member {info.filename!r} "
                          f"({one_line(exc, 300)})") from None
    return np.ascontiguousarray(a)


# --------------------------------------------------------------------------- images
def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 [H, W, 3] RGB. Pillow when installed (pip install prunec[images]);
    else the built-in PNG/PPM/PGM readers. Sizes are checked before decoding."""
    try:
        return _read_image(path)
    except PrunecError:
        raise
    except MemoryError:
        raise PrunecError(f"image {path}: out of memory decoding it") from None
    except Exception as exc:
        raise PrunecError(f"image {path}: cannot decode it ({one_line(exc, 300)})") from None


def _check_pixels(w: int, h: int, path) -> None:
    if w <= 0 or h <= 0:
        raise PrunecError(f"image {path}: declares {w}x{h} pixels")
    if w * h > MAX_IMAGE_PIXELS:
        raise PrunecError(f"image {path}: declares {w}x{h} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                          "(a decompression bomb, or resize it first)")


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        a = np.load(path, mmap_mode="r", allow_pickle=False)  # header only until sliced
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
            raise PrunecError(f"image {path}: .npy of shape {list(a.shape)} is not an [H, W(, C)] image")
        _check_pixels(a.shape[1], a.shape[0], path)
        return to_rgb(np.asarray(a))
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        with Image.open(path) as im:  # reads the header only
            _check_pixels(*im.size, path)
            return np.asarray(im.convert("RGB"))
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return to_rgb(decode_png(data, str(path)))
    if data[:2] in (b"P5", b"P6"):
        return to_rgb(decode_pnm(data, str(path)))
    raise PrunecError(f"image {path}: only PNG, PPM/PGM and .npy can be read without Pillow "
                      "(pip install prunec[images] for JPEG and others), or pass an .npz with --calib")


def to_rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise PrunecError(f"image array of dtype {a.dtype} is not numeric")
    if a.dtype != np.uint8:
        a = np.nan_to_num(np.asarray(a, np.float32))
        a = np.clip(a, 0, 255).astype(np.uint8) if a.max(initial=0) > 1 else (np.clip(a, 0, 1) * 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a[..., :3]


def decode_pnm(data: bytes, name: str) -> np.ndarray:
    tokens, pos = [], 2
    while len(tokens) < 3:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            end = data.find(b"\n", pos)
            if end < 0:
                raise PrunecError(f"image {name}: truncated PNM header")
            pos = end + 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos or not data[start:pos].isdigit():
            raise PrunecError(f"image {name}: corrupt PNM header")
        tokens.append(int(data[start:pos]))
    w, h, maxval = tokens
    _check_pixels(w, h, name)
    if not 0 < maxval < 65536:
        raise PrunecError(f"image {name}: PNM maxval {maxval} is out of range")
    channels = 3 if data[:2] == b"P6" else 1
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    need = w * h * channels * dtype.itemsize
    if len(data) < pos + 1 + need:
        raise PrunecError(f"image {name}: truncated ({len(data) - pos - 1} of {need} pixel bytes)")
    a = np.frombuffer(data, dtype, count=w * h * channels, offset=pos + 1).reshape(h, w, channels)
    return (a.astype(np.float32) * (255.0 / maxval)).astype(np.uint8) if maxval != 255 else a


def decode_png(data: bytes, name: str) -> np.ndarray:
    """8/16-bit non-interlaced PNG (grey, RGB, palette, with or without alpha) -> uint8 [H, W, C]."""
    pos, idat, palette, header = 8, [], None, None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if len(chunk) != length:
            raise PrunecError(f"image {name}: truncated PNG (chunk {ctype!r})")
        pos += 12 + length
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif ctype == b"PLTE":
            palette = np.frombuffer(chunk[:len(chunk) // 3 * 3], np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(chunk)
        elif ctype == b"IEND":
            break
    if header is None:
        raise PrunecError(f"image {name}: corrupt PNG (no IHDR chunk)")
    w, h, depth, color, _, _, interlace = header
    _check_pixels(w, h, name)  # before inflating anything
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if channels is None or interlace or depth not in (8, 16) or (color == 3 and depth != 8):
        raise PrunecError(f"image {name}: PNG variant (colour {color}, depth {depth}, interlace {interlace}) "
                          "needs Pillow (pip install prunec[images])")
    if color == 3 and palette is None:
        raise PrunecError(f"image {name}: corrupt PNG (palette image without PLTE)")
    bpp = channels * depth // 8
    expected = h * (1 + w * bpp)
    inflater = zlib.decompressobj()
    raw = inflater.decompress(b"".join(idat), expected)  # never more than the header promises
    if len(raw) != expected:
        raise PrunecError(f"image {name}: corrupt PNG ({len(raw)} of {expected} pixel bytes)")
    raw = np.frombuffer(raw, np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), np.uint8)
    prev = np.zeros(w * bpp, np.int32)
    for y in range(h):  # undo the per-row filters
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        elif f in (1, 3, 4):
            cur = np.zeros_like(line)
            for x in range(w * bpp):  # depends on the left neighbour: sequential
                a = cur[x - bpp] if x >= bpp else 0
                c = prev[x - bpp] if x >= bpp else 0
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + prev[x]) >> 1
                else:
                    p = a + prev[x] - c
                    pa, pb, pc = abs(p - a), abs(p - prev[x]), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (prev[x] if pb <= pc else c)
                cur[x] = (line[x] + pred) & 255
        else:
            raise PrunecError(f"image {name}: corrupt PNG (filter {f})")
        out[y] = cur
        prev = cur
    if depth == 16:
        a = out.reshape(h, w, channels, 2)[..., 0]
    else:
        a = out.reshape(h, w, channels)
    if color == 3:
        if int(a.max(initial=0)) >= len(palette):
            raise PrunecError(f"image {name}: corrupt PNG (palette index out of range)")
        a = palette[a[..., 0]]
    return a[..., :3] if channels in (3, 4) else a[..., :1]

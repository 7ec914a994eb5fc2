"""Sparsity patterns on weight matrices, and the annotation that records them in the model.

Every Conv / Gemm / MatMul weight is seen as a matrix [rows = output channels, columns = reduction]:

- Gemm / MatMul: W as [out features, in features] (a MatMul's [K, N] weight is transposed).
- Conv: W[M, C/g, *kernel] moved to [M, *kernel, C/g] and flattened, so a row's columns run over the
  kernel taps, input channels innermost: the order an NHWC implicit GEMM reads, and the one where an
  N:M group is N of M consecutive input channels at one tap (what sparse tensor cores expect).

Patterns on that matrix:

- `unstructured`: any entries.
- `N:M`: in every run of M consecutive columns of a row at most N are nonzero (2:4 -> 50%).
- `block:RxC`: entries are zeroed in whole R x C tiles aligned at multiples of R rows and C columns
  (edge tiles are partial). `block:1x8` keeps runs of 8 columns, `block:8x1` runs of 8 output rows.

The annotation is Model.annotations["sparsity"], saved in the model's metadata_props under the key
ANNOTATION_KEY ("prunec.sparsity") as JSON:

    {"version": 1,
     "tensors": {"<weight name>": {"node": "...", "op": "Conv", "pattern": "block:1x8",
                                   "sparsity": 0.9, "criterion": "magnitude", "reconstructed": false,
                                   "matrix": [rows, cols], "layout": "out x (kernel taps, in channels)"}}}

`sparsity` is the measured share of exact zeros in the weight. Other tools read it with
`json.loads(dict((p.key, p.value) for p in model.metadata_props)["prunec.sparsity"])`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import PrunecError

ANNOTATION_NAME = "sparsity"  # Model.annotations key, saved as metadata_props "prunec.sparsity"
ANNOTATION_KEY = "prunec." + ANNOTATION_NAME
ANNOTATION_VERSION = 1
LAYOUTS = {"Conv": "out x (kernel taps, in channels)", "Gemm": "out x in", "MatMul": "out x in (weight transposed)"}


@dataclass(frozen=True)
class Pattern:
    kind: str  # "unstructured" | "nm" | "block"
    n: int = 0
    m: int = 0
    rows: int = 1
    cols: int = 1

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        t = (text or "").strip().lower()
        if t == "unstructured":
            return cls("unstructured")
        if match := re.fullmatch(r"(\d+):(\d+)", t):
            n, m = int(match[1]), int(match[2])
            if not 0 < n < m:
                raise PrunecError(f"--pattern {text}: N:M needs 0 < N < M (e.g. 2:4)")
            return cls("nm", n=n, m=m)
        if match := re.fullmatch(r"block:(\d+)x(\d+)", t):
            r, c = int(match[1]), int(match[2])
            if r < 1 or c < 1 or r * c < 2:
                raise PrunecError(f"--pattern {text}: a block needs at least 2 entries (e.g. block:1x8)")
            return cls("block", rows=r, cols=c)
        raise PrunecError(f"--pattern {text!r}: expected unstructured, N:M (e.g. 2:4) or block:RxC (e.g. block:1x8)")

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.rows}x{self.cols}"
        return "unstructured"

    @property
    def fixed_sparsity(self) -> float | None:
        """N:M fixes the share of zeros; the other patterns take it from --sparsity."""
        return 1.0 - self.n / self.m if self.kind == "nm" else None

    def unfit(self, shape: tuple[int, int]) -> str | None:
        """Why a matrix of this shape cannot carry the pattern (None: it can)."""
        if self.kind == "nm" and shape[1] % self.m:
            return f"reduction length {shape[1]} is not a multiple of {self.m}"
        return None


# --------------------------------------------------------------------------- matrix views
def matrix_view(op: str, w: np.ndarray, trans_b: bool = False) -> np.ndarray:
    """The weight as [out, reduction] (see the module docstring); a copy-free view where possible."""
    if op == "Conv":
        return np.moveaxis(w, 1, -1).reshape(w.shape[0], -1)
    if op == "Gemm":
        return w if trans_b else w.T
    return w.T  # MatMul [K, N]


def from_matrix_view(op: str, mat: np.ndarray, shape: tuple[int, ...], trans_b: bool = False) -> np.ndarray:
    if op == "Conv":
        moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
        return np.ascontiguousarray(np.moveaxis(mat.reshape(moved), -1, 1))
    if op == "Gemm":
        return np.ascontiguousarray(mat if trans_b else mat.T)
    return np.ascontiguousarray(mat.T)


def conv_view_order(shape: tuple[int, ...]) -> np.ndarray:
    """perm with view[:, j] == w.reshape(M, -1)[:, perm[j]] for a Conv weight of this shape."""
    cin, taps = shape[1], int(np.prod(shape[2:]))
    return (np.arange(cin)[None, :] * taps + np.arange(taps)[:, None]).reshape(-1)


# --------------------------------------------------------------------------- masks
def _block_scores(scores: np.ndarray, r: int, c: int) -> np.ndarray:
    """Mean score of each R x C tile (edge tiles partial): [ceil(rows/R), ceil(cols/C)]."""
    rows, cols = scores.shape
    pr, pc = -rows % r, -cols % c
    padded = np.pad(scores, ((0, pr), (0, pc)))
    counts = np.pad(np.ones_like(scores), ((0, pr), (0, pc)))
    shape = (padded.shape[0] // r, r, padded.shape[1] // c, c)
    return padded.reshape(shape).sum((1, 3)) / counts.reshape(shape).sum((1, 3))


def expand_blocks(keep_blocks: np.ndarray, r: int, c: int, shape: tuple[int, int]) -> np.ndarray:
    return np.repeat(np.repeat(keep_blocks, r, 0), c, 1)[:shape[0], :shape[1]]


def unit_scores(scores: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Scores of the units the pattern removes together (entries, or tiles for blocks)."""
    return _block_scores(scores, pattern.rows, pattern.cols) if pattern.kind == "block" else scores


def make_mask(scores: np.ndarray, pattern: Pattern, sparsity: float, per_row: bool = False) -> np.ndarray:
    """Keep mask [rows, cols] with the lowest-scoring units zeroed.
    N:M ignores `sparsity` (fixed by the pattern); `per_row`: unstructured ranks each row alone."""
    rows, cols = scores.shape
    if pattern.kind == "nm":
        groups = scores.reshape(rows, cols // pattern.m, pattern.m)
        order = np.argsort(groups, axis=-1, kind="stable")
        keep = np.ones_like(groups, dtype=bool)
        np.put_along_axis(keep, order[..., :pattern.m - pattern.n], False, axis=-1)
        return keep.reshape(rows, cols)
    units = unit_scores(scores, pattern)
    if per_row and pattern.kind == "unstructured":
        k = int(round(sparsity * cols))
        keep = np.ones_like(units, dtype=bool)
        if k:
            np.put_along_axis(keep, np.argsort(units, axis=1, kind="stable")[:, :k], False, axis=1)
    else:
        k = int(round(sparsity * units.size))
        keep = np.ones(units.size, dtype=bool)
        keep[np.argsort(units, axis=None, kind="stable")[:k]] = False
        keep = keep.reshape(units.shape)
    if pattern.kind == "block":
        return expand_blocks(keep, pattern.rows, pattern.cols, scores.shape)
    return keep


def pattern_violations(mat: np.ndarray, pattern: Pattern) -> int:
    """Number of N:M groups or R x C tiles that break the pattern (0 when it holds exactly)."""
    nz = mat != 0
    if pattern.kind == "nm":
        counts = nz.reshape(mat.shape[0], -1, pattern.m).sum(-1)
        return int(np.count_nonzero(counts > pattern.n))
    if pattern.kind == "block":
        dens = _block_scores(nz.astype(np.float64), pattern.rows, pattern.cols)
        return int(np.count_nonzero((dens > 0) & (dens < 1)))
    return 0


# --------------------------------------------------------------------------- annotation
def read_annotation(annotations: dict) -> dict:
    """The sparsity annotation among a Model's annotations ({} if there is none)."""
    data = annotations.get(ANNOTATION_NAME)
    return data if isinstance(data, dict) else {}


def merged_annotation(annotations: dict, tensors: dict[str, dict]) -> dict:
    """The annotation with these tensors' entries added (a second sparsify of a tensor replaces its entry)."""
    old = read_annotation(annotations).get("tensors", {})
    return {"version": ANNOTATION_VERSION, "tensors": {**old, **tensors}}


def format_annotation(annotation: dict) -> list[str]:
    """Lines for `prunec inspect`."""
    tensors = annotation.get("tensors", {})
    if not tensors:
        return []
    lines = [f"sparsity annotation ({ANNOTATION_KEY}): {len(tensors)} weight tensors",
             f"  {'tensor':<40} {'op':<7} {'pattern':<12} {'sparsity':>8}  criterion"]
    for name, t in sorted(tensors.items()):
        short = name if len(name) <= 40 else "…" + name[-39:]
        crit = t.get("criterion", "?") + (" + reconstruction" if t.get("reconstructed") else "")
        lines.append(f"  {short:<40} {t.get('op', '?'):<7} {t.get('pattern', '?'):<12} "
                     f"{100 * float(t.get('sparsity', math.nan)):>7.1f}%  {crit}")
    return lines

"""Pruning a weight matrix under a pattern while keeping its outputs: OBS row updates (SparseGPT-style).

The layer's loss for weights W [rows, cols] on inputs with (damped) Gram matrix H = X^T X is
(W - W*) H (W - W*)^T. Columns are pruned left to right; when column i loses entries, the error
they cause is spread over the columns not yet visited through the upper Cholesky factor U of H^-1:

    err = (w_i - q_i) / U[i, i];     W[:, j] -= err * U[i, j]    for j > i

which is the optimal (OBS) compensation for every row at once. Masks are chosen as the columns
are reached (by w^2 / U[i,i]^2, the OBS saliency, on the weights already updated): per chunk of
columns for unstructured and block patterns, per group of M columns for N:M. Columns flagged
`frozen` (the bias as an intercept column) are never pruned, only updated.
"""
from __future__ import annotations

import numpy as np

from prunec.sparsity import Pattern, make_mask

CHUNK = 128  # columns whose masks are chosen together (and whose updates are applied lazily)


def upper_inverse_factor(H: np.ndarray) -> np.ndarray:
    """U upper triangular with H^-1 = U^T U; more damping if H is numerically singular."""
    d = len(H)
    damp = 0.0
    scale = float(np.mean(np.diag(H))) or 1.0
    for _ in range(6):
        try:
            Linv = np.linalg.inv(np.linalg.cholesky(H + damp * scale * np.eye(d)))
            return np.linalg.cholesky(Linv.T @ Linv).T
        except np.linalg.LinAlgError:
            damp = 1e-4 if damp == 0 else damp * 10
    raise np.linalg.LinAlgError("Gram matrix is not positive definite even after damping")


def obs_prune(W: np.ndarray, H: np.ndarray, pattern: Pattern, sparsity: float,
              frozen: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """W [rows, cols] (float64), H [cols, cols] damped Gram matrix; the last `frozen` columns are never
    pruned. Returns (updated weights with exact zeros, keep mask over the prunable columns)."""
    W = np.array(W, dtype=np.float64)
    rows, cols = W.shape
    n = cols - frozen
    U = upper_inverse_factor(H)
    diag = np.diag(U)
    keep = np.ones((rows, n), dtype=bool)
    chunk = CHUNK
    if pattern.kind == "block":
        chunk = max(pattern.cols, pattern.cols * (CHUNK // pattern.cols))
    elif pattern.kind == "nm":
        chunk = max(pattern.m, pattern.m * (CHUNK // pattern.m))
    for i1 in range(0, cols, chunk):
        i2 = min(i1 + chunk, cols)
        p2 = min(i2, n)  # prunable columns of this chunk
        if i1 < n and pattern.kind != "nm":
            scores = W[:, i1:p2] ** 2 / diag[i1:p2] ** 2
            keep[:, i1:p2] = make_mask(scores, pattern, sparsity)
        Err = np.zeros((rows, i2 - i1))
        for i in range(i1, i2):
            if i < n and pattern.kind == "nm" and (i - i1) % pattern.m == 0:
                scores = W[:, i:i + pattern.m] ** 2 / diag[i:i + pattern.m] ** 2
                keep[:, i:i + pattern.m] = make_mask(scores, pattern, 0.0)
            w = W[:, i]
            q = w * keep[:, i] if i < n else w
            err = (w - q) / U[i, i]
            W[:, i] = q
            if i + 1 < i2:
                W[:, i + 1:i2] -= np.outer(err, U[i, i + 1:i2])
            Err[:, i - i1] = err
        if i2 < cols:
            W[:, i2:] -= Err @ U[i1:i2, i2:]
    W[:, :n][~keep] = 0.0  # exact zeros whatever the rounding of the updates
    return W, keep

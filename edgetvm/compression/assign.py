"""Error-compensating codebook assignment (OBQ / GPTQ: Frantar et al. 2022) on calibration inputs.

k-means (kmeans.py) gives every weight its *nearest* codebook entry; the refit (refit.py) then moves the
codebook and the scales with those assignments fixed. The assignments themselves can be chosen against
the layer's output error instead. For one GEMM ``y = X w`` with inputs ``X`` (``n x d``: im2col patches
of the clustered model, as the refit reads them) and ``H = X^T X + lambda I`` (``lambda`` 1% of the
mean diagonal), GPTQ walks the input columns ``j`` in order with ``U`` the upper Cholesky factor of
``H^-1`` (``H^-1 = U^T U``):

    q_j = s_o T[nearest(w_oj / s_o)]                  (each output row o: its scale, its codebook)
    e_j = (w_j - q_j) / U[j, j]
    w[:, j+1:] -= e_j U[j, j+1:]

so each rounding error is spread over the columns not yet rounded, weighted by how the inputs correlate
(blocked by 128 columns: the rank-1 updates inside a block, one GEMM for the columns after it).

The target ``w`` is not the original weight but the one that best reproduces the *original* output
on the clustered model's inputs: ``||X W^T - X0 W0^T||^2 = ||X (W - W*)^T||^2 + const`` with
``W*^T = W0^T + H^-1 X^T (X0 - X) W0^T``, which is ``W0`` when the earlier layers are exact (``X = X0``).
Weights at exactly zero in a codebook holding zero (magnitude pruning's exact code, sharing.py) stay
zero, and their own error is spread like any other (SparseGPT's view); the others choose among the
non-zero entries. A grouped conv has one ``H`` per group; all of them are walked at once.

Damping: ``lambda`` is 1% of the mean diagonal (GPTQ's) where the calibration rows are at least 4 per
input column, 30% where fewer (SFace's 7x7 layers: 490 patches from 10 faces for 512 or 1024 inputs):
there ``H`` is near singular and the 1% assignment fits the calibration faces, not the held-out ones.

Measured (benchmarks/bench_compression.py, scaled codebooks refit after, held-out faces), so the
default with calibration inputs (options.DEFAULT_ASSIGN), nearest without:

    model / config              assign   coded B    min / mean cosine, or IoU / landmark px / missed
    SFace scaled-conv16-fc4     nearest  3,081,479  0.9405 / 0.9610
                                gptq     3,082,858  0.9695 / 0.9826
    SFace scaled-conv32-fc4     nearest  3,463,413  0.9720 / 0.9844
                                gptq     3,463,808  0.9861 / 0.9916
    RetinaFace scaled k16       nearest    224,455  0.910 / 4.61 px / 1 missed
                                gptq       224,874  0.935 / 2.60 px / 0 missed
    RetinaFace scaled k8        nearest    172,009  0.730 / 13.8 px / 2 missed
                                gptq       173,647  0.870 / 6.28 px / 0 missed

Tried and not kept: 1% damping everywhere (SFace conv16 0.9604 / 0.9752), 10% (0.9714; RetinaFace
k8 1 missed), 30% everywhere (SFace 0.9772 / 0.9825 but RetinaFace k16 0.880, k8 0.837 / 6.4 px),
100% (SFace 0.9732); GPTQ and the refit twice over (RetinaFace k16 3.10 px, k8 1 missed); ``W0`` as
the target instead of ``W*`` (RetinaFace k16 3.42 px, k8 1 missed). The GPTQ itself costs seconds a
model (RetinaFace 3.6 s); the worst face is a noisy measure on 12 faces.
"""

from __future__ import annotations

import numpy as np

ASSIGNMENTS = ("gptq", "nearest")
DAMPING = 0.01
DAMPING_FEW_ROWS = 0.3
FEW_ROWS = 4  # fewer than this many calibration rows per input column: DAMPING_FEW_ROWS
BLOCK = 128


def damped_hessians(x: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """Per group ``X^T X + lambda I`` (``x``: ``[N, groups, K]``; returns ``[groups, K, K]``, float64),
    ``lambda`` = ``damping`` times the mean diagonal (1 for inputs all zero)."""
    xg = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float64)
    h = xg.transpose(0, 2, 1) @ xg
    depth = h.shape[-1]
    mean = np.einsum("gii->g", h) / depth
    h += (damping * np.where(mean > 0, mean, 1.0))[:, None, None] * np.eye(depth)
    return h


def inverse_factor(h: np.ndarray) -> np.ndarray:
    """Per group, the upper Cholesky factor ``U`` of ``h^-1`` (``h``: ``damped_hessians``)."""
    inverse = np.linalg.inv(np.linalg.cholesky(h))  # L^-1, so H^-1 = L^-T L^-1
    hinv = inverse.transpose(0, 2, 1) @ inverse
    return np.linalg.cholesky(hinv).transpose(0, 2, 1)


def target_rows(x: np.ndarray, x0: np.ndarray, w0: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``W*`` of the module docstring (``[O, K]``): ``W0`` corrected for the error ``X - X0`` the
    clustered layers before this one pass on (``h``: ``damped_hessians(x)``)."""
    outputs = w0.shape[0]
    groups = x.shape[1]
    per_group = outputs // groups
    rows = w0.astype(np.float64).copy()
    for g in range(groups):
        xs, x0s = x[:, g].astype(np.float64), x0[:, g].astype(np.float64)
        part = slice(g * per_group, (g + 1) * per_group)
        drift = (x0s - xs) @ rows[part].T  # [N, per_group]
        rows[part] += np.linalg.solve(h[g], xs.T @ drift).T
    return rows


def codebook_rows(codes: np.ndarray, per_output: bool) -> tuple[np.ndarray, np.ndarray]:
    """The sorted non-zero codebook entries each output row may take (``[O, k]``, padded with NaN after
    its own), and where the codes sit at an exact zero that stays zero (``[O, K]`` bool)."""
    books = [np.unique(row) for row in (codes if per_output else codes.reshape(1, -1))]
    pinned = np.zeros(codes.shape, dtype=bool)
    for b, book in enumerate(books):
        if (book == 0).any():
            rows = slice(b, b + 1) if per_output else slice(None)
            pinned[rows] = codes[rows] == 0
    free = [book[book != 0] for book in books]
    width = max(1, max(book.size for book in free))
    table = np.full((len(free), width), np.nan)
    for b, book in enumerate(free):
        table[b, :book.size] = book
    return (table if per_output else np.broadcast_to(table, (codes.shape[0], width))), pinned


def nearest(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per row the entry of its sorted ``table`` row (NaN-padded) nearest to ``values`` (ties to the lower)."""
    distance = np.abs(values[:, None] - table)
    return np.take_along_axis(table, np.nanargmin(np.where(np.isnan(distance), np.inf, distance), axis=1)[:, None],
                              axis=1)[:, 0] if table.shape[1] > 1 else table[:, 0].copy()


def gptq_assign(x: np.ndarray, x0: np.ndarray, w0: np.ndarray, codes: np.ndarray, per_output: bool,
                scales: np.ndarray | None = None, damping: float | None = None, block: int = BLOCK) -> np.ndarray:
    """The codes of the module docstring for one GEMM: ``x``, ``x0`` ``[N, groups, K]`` (the clustered and
    the original model's inputs), ``w0`` ``[O, K]``, ``codes`` ``[O, K]`` holding the current codebook
    values (one codebook, or one per row if ``per_output``), ``scales`` ``[O]`` a scaled codebook's (weight
    row ``o`` is ``scales[o] * codes[o]``). Returns new codes ``[O, K]``: each an entry of its row's
    codebook (float32 like ``codes``), exact zeros kept where the codebook's zero pins them."""
    outputs, depth = w0.shape
    groups = x.shape[1]
    per_group = outputs // groups
    if damping is None:
        damping = DAMPING if x.shape[0] >= FEW_ROWS * depth else DAMPING_FEW_ROWS
    table, pinned = codebook_rows(codes.astype(np.float64), per_output)
    if np.isnan(table).all():
        return codes.copy()
    gain = np.ones(outputs) if scales is None else scales.astype(np.float64)
    # A channel with no scale holds zeros whatever it is assigned: it keeps its codes.
    live = gain != 0
    safe = np.where(live, gain, 1.0)
    hessians = damped_hessians(x, damping)
    factor = inverse_factor(hessians)
    w = target_rows(x, x0, w0, hessians).reshape(groups, per_group, depth)
    table = table.reshape(groups, per_group, -1)
    pinned = pinned.reshape(groups, per_group, depth)
    safe = safe.reshape(groups, per_group)
    chosen = np.zeros((groups, per_group, depth))
    for start in range(0, depth, block):
        stop = min(start + block, depth)
        errors = np.zeros((groups, per_group, stop - start))
        for j in range(start, stop):
            column = w[:, :, j]
            code = nearest((column / safe).reshape(-1), table.reshape(outputs, -1)).reshape(groups, per_group)
            code = np.where(pinned[:, :, j], 0.0, code)
            chosen[:, :, j] = code
            error = (column - safe * code) / factor[:, j, j][:, None]
            w[:, :, j + 1:stop] -= error[:, :, None] * factor[:, None, j, j + 1:stop]
            errors[:, :, j - start] = error
        w[:, :, stop:] -= errors @ factor[:, start:stop, stop:]
    chosen = chosen.reshape(outputs, depth)
    return np.where(live[:, None], chosen, codes).astype(codes.dtype)

"""Five-point face alignment to the ArcFace 112x112 template with a least-squares similarity.

Umeyama (1991), "Least-squares estimation of transformation parameters between two point
patterns": for centred source points ``p_i`` and destination points ``q_i`` with covariance
``S = 1/n sum q_i p_i^T = U D V^T`` the rotation is ``R = U diag(1, det(U V^T)) V^T``, the scale
``c = trace(D diag(1, det(U V^T))) / var(p)`` and the translation ``t = mean(q) - c R mean(p)``.

In two dimensions a scaled rotation is ``[[a, -b], [b, a]]`` and the same least-squares problem
has the closed form ``a = sum(p . q) / sum |p|^2``, ``b = sum(p x q) / sum |p|^2``: the board-side
C library uses it (no SVD needed); ``tests/face`` checks the two agree.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .image import as_rgb, warp_affine

# The standard 5-point template of ArcFace (InsightFace) crops, 112x112 pixels: the person's right
# eye, left eye, nose tip, right and left mouth corner (image left to right).
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float32)
ARCFACE_SIZE = 112


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """The similarity ``dst ~ c R src + t`` minimising the squared error, as a 3x3 matrix (float64)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    num, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / num
    variance = src_c.var(axis=0).sum()
    if variance <= 1e-12:
        raise InputError("alignment: all landmarks are the same point; the detection is degenerate")
    u, s, vt = np.linalg.svd(cov)
    # A reflection is never a valid face pose: flip the last singular direction instead.
    d = np.ones(dim)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    m = np.eye(dim + 1)
    m[:dim, :dim] = u @ np.diag(d) @ vt
    scale = (s @ d) / variance if estimate_scale else 1.0
    m[:dim, dim] = dst_mean - scale * (m[:dim, :dim] @ src_mean)
    m[:dim, :dim] *= scale
    return m


def similarity_closed_form(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2-D least-squares similarity in closed form, 2x3 (the C library's formula, float64 here)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    p = src - src.mean(axis=0)
    q = dst - dst.mean(axis=0)
    norm = (p ** 2).sum()
    if norm <= 1e-12:
        raise InputError("alignment: all landmarks are the same point; the detection is degenerate")
    a = (p[:, 0] * q[:, 0] + p[:, 1] * q[:, 1]).sum() / norm
    b = (p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum() / norm
    rot = np.array([[a, -b], [b, a]])
    t = dst.mean(axis=0) - rot @ src.mean(axis=0)
    return np.concatenate([rot, t[:, None]], axis=1)


def alignment_matrix(landmarks: np.ndarray) -> np.ndarray:
    """2x3 float32 map from image pixels to the 112x112 ArcFace crop for five ``landmarks`` (5, 2)."""
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.shape != (5, 2):
        raise InputError(f"alignment needs five (x, y) landmarks, got an array of shape {landmarks.shape}")
    return umeyama(landmarks, ARCFACE_TEMPLATE)[:2].astype(np.float32)


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The aligned 112x112 RGB crop (float32, 0..255) of the face with these five landmarks."""
    return warp_affine(as_rgb(image), alignment_matrix(landmarks), ARCFACE_SIZE, ARCFACE_SIZE)

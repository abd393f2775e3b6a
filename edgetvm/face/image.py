"""Images in and out of the face pipeline: reading with Pillow, binary PPM/PGM for the board, and the
one resampling rule (bilinear, half-pixel centres) that the Python pipeline and the C library share.

The board-side C library (``face/c/face_proc.c``) implements ``resize_bilinear`` and
``warp_affine`` with the same float32 arithmetic, so host and board see the same detector input and
the same aligned crop up to float rounding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data import read_image  # noqa: F401 - the one image reader, re-exported for the face pipeline
from ..errors import InputError
from ..io import atomic_path


def as_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Accept (H, W) grey or (H, W, 3) RGB, uint8 or float in 0..255; return RGB uint8."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"{what}: expected an (H, W) grey or (H, W, 3) RGB image, got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"{what}: image of {image.shape[1]}x{image.shape[0]} pixels is too small")
    return np.ascontiguousarray(image)


def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps of bilinear resampling along one axis, half-pixel centres, clamped at the border.

    ``src = (dst + 0.5) * in/out - 0.5``, clamped to ``[0, in - 1]``; ``i0 = floor(src)``,
    ``i1 = min(i0 + 1, in - 1)``, weight ``f = src - i0``. All float32, as in the C library.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.clip(src, np.float32(0.0), np.float32(in_size - 1))
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, frac


def resize_bilinear(image: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Resize an (H, W, C) image to (out_h, out_w, C) float32 with bilinear taps (no antialiasing)."""
    h, w = image.shape[:2]
    x0, x1, fx = _axis_taps(w, out_w)
    y0, y1, fy = _axis_taps(h, out_h)
    img = image.astype(np.float32)
    fx = fx[None, :, None]
    top = img[y0][:, x0] * (np.float32(1) - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (np.float32(1) - fx) + img[y1][:, x1] * fx
    fy = fy[:, None, None]
    return (top * (np.float32(1) - fy) + bottom * fy).astype(np.float32)


def warp_affine(image: np.ndarray, matrix: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Sample ``image`` (H, W, C) at ``matrix^-1 @ (u, v, 1)`` for every output pixel (u, v), bilinear,
    zero outside the image (OpenCV's ``warpAffine`` convention: pixel centres at integer coordinates).

    ``matrix`` is the 2x3 forward map image -> output. Returns (out_h, out_w, C) float32.
    """
    m = np.asarray(matrix, dtype=np.float64)
    a, b, c = m[0]
    d, e, f = m[1]
    det = a * e - b * d
    if abs(det) < 1e-12:
        raise InputError("warp_affine: the transform is singular (landmarks collapsed onto a point or a line)")
    # Inverse of [[a b c] [d e f]] in closed form, rounded to float32 as the C library stores it.
    inv = np.array([[e / det, -b / det, (b * f - c * e) / det],
                    [-d / det, a / det, (c * d - a * f) / det]], dtype=np.float32)
    u, v = np.meshgrid(np.arange(out_w, dtype=np.float32), np.arange(out_h, dtype=np.float32))
    sx = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    sy = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    h, w = image.shape[:2]
    x0f = np.floor(sx)
    y0f = np.floor(sy)
    fx = (sx - x0f)[..., None]
    fy = (sy - y0f)[..., None]
    x0 = x0f.astype(np.int64)
    y0 = y0f.astype(np.int64)
    img = image.astype(np.float32)

    def tap(yy, xx):
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        vals = img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        return np.where(inside[..., None], vals, np.float32(0))

    one = np.float32(1)
    top = tap(y0, x0) * (one - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (one - fx) + tap(y0 + 1, x0 + 1) * fx
    return (top * (one - fy) + bottom * fy).astype(np.float32)


def write_ppm(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as binary PPM (P6), the format the board-side demo reads."""
    image = as_rgb(image, str(path))
    h, w = image.shape[:2]
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(f"P6\n{w} {h}\n255\n".encode())
            fh.write(image.tobytes())
    return path


def score_label(score: float) -> str:
    """A detection score as the picture labels it and ``edgetvm face detect`` prints it: the two agree."""
    return f"{float(score):.3f}"


def draw_faces(image: np.ndarray, faces, path: str | os.PathLike, labels: list[str] | None = None) -> Path:
    """Draw boxes, scores (or ``labels``, one per face) and the five landmarks of ``faces`` onto a
    copy of ``image``; write it."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(as_rgb(image))
    draw = ImageDraw.Draw(canvas)
    # right eye, left eye, nose, right and left mouth corner (image left to right)
    colors = [(255, 0, 0), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 128, 255)]
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = (float(v) for v in face.box)
        width = max(1, int(round((x2 - x1) / 60)))
        draw.rectangle([x1, y1, x2, y2], outline=(0, 255, 0), width=width)
        draw.text((x1 + 2, max(0.0, y1 - 12)), labels[i] if labels else score_label(face.score),
                  fill=(255, 255, 255))
        r = max(1.5, (x2 - x1) / 40)
        for (px, py), color in zip(face.landmarks, colors):
            draw.ellipse([px - r, py - r, px + r, py + r], fill=color)
    return save_image(canvas, path)


def save_image(picture, path: str | os.PathLike) -> Path:
    """Write a Pillow image atomically in the format its suffix names (png when it has none)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fmt = (path.suffix.lstrip(".") or "png").upper()
        fmt = {"JPG": "JPEG", "PPM": "PPM", "PGM": "PPM"}.get(fmt, fmt)
        try:
            picture.save(tmp, format=fmt)
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(f"{path}: cannot write this image format ({exc}); use .png or .jpg") from None
    return path

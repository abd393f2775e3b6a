"""Greedy non-maximum suppression over axis-aligned boxes (x1, y1, x2, y2)."""

from __future__ import annotations

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box against many: ``|A n B| / (|A| + |B| - |A n B|)``."""
    box = np.asarray(box, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(ix2 - ix1, 0) * np.maximum(iy2 - iy1, 0)
    area_a = max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0)
    area_b = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None = None) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first.

    Visit boxes by decreasing score (ties: lower index first, as the C library's stable sort does);
    keep a box unless its IoU with an already kept box exceeds ``iou_threshold``.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for rank, idx in enumerate(order):
        if suppressed[rank]:
            continue
        keep.append(int(idx))
        if top_k is not None and len(keep) >= top_k:
            break
        rest = order[rank + 1:]
        if len(rest):
            suppressed[rank + 1:] |= box_iou(boxes[idx], boxes[rest]) > iou_threshold
    return np.asarray(keep, dtype=np.int64)

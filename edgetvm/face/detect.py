"""Face detectors' pre- and post-processing: letterboxing, anchor decoding, thresholds and NMS.

Two detectors, both giving a box, a score and five landmarks (right eye, left eye, nose, right and
left mouth corner of the person: image left to right):

* RetinaFace (Deng et al., 2019), MobileNet-0.25 backbone. Priors are laid on three feature maps
  (steps 8, 16, 32) with two square sizes each ([16, 32], [64, 128], [256, 512] px). A prior
  ``(pcx, pcy, pw, ph)`` (centre and size, relative to the input) and the regression ``(dx, dy, dw,
  dh)`` give, with the variances ``v0 = 0.1, v1 = 0.2`` of the original SSD-style encoding::

      cx = pcx + dx * v0 * pw      w = pw * exp(dw * v1)
      cy = pcy + dy * v0 * ph      h = ph * exp(dh * v1)
      landmark_k = (pcx + lx_k * v0 * pw, pcy + ly_k * v0 * ph)

  Input: BGR minus the per-channel mean (104, 117, 123).

* YuNet (2023mar, OpenCV's ``FaceDetectorYN``): anchor-free, one point per cell of the stride-8,
  16 and 32 maps; for cell (row r, column c) with stride s::

      score = sqrt(clamp(cls, 0, 1) * clamp(obj, 0, 1))
      cx = (c + bx) * s,  cy = (r + by) * s,  w = exp(bw) * s,  h = exp(bh) * s
      landmark_k = ((c + kx_k) * s, (r + ky_k) * s)

  Input: BGR 0..255.

Both run at a fixed input size (the networks are compiled with static shapes): the image is resized
to fit (aspect kept, bilinear), placed at the top-left and the rest is zero (the mean colour for
RetinaFace). The board-side C library (``face/c/face_proc.c``) mirrors every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .image import as_rgb, resize_bilinear
from .nms import nms

RETINAFACE_STEPS = (8, 16, 32)
RETINAFACE_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
RETINAFACE_VARIANCES = (0.1, 0.2)
RETINAFACE_MEAN_BGR = (104.0, 117.0, 123.0)
YUNET_STRIDES = (8, 16, 32)


@dataclass
class Face:
    """One detected face in image pixels: box ``(x1, y1, x2, y2)``, score, five landmarks (5, 2)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        out = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }
        if self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
        return out


@dataclass(frozen=True)
class Letterbox:
    """Where the image went in the detector input: detector pixel * scale = image pixel."""

    resized_w: int
    resized_h: int
    scale_x: float
    scale_y: float


def fit_size(width: int, height: int, in_w: int, in_h: int) -> tuple[int, int]:
    """Size of the image scaled to fit ``in_w x in_h`` with its aspect ratio kept (round half up)."""
    ratio = min(in_w / width, in_h / height)
    new_w = min(in_w, max(1, int(math.floor(width * ratio + 0.5))))
    new_h = min(in_h, max(1, int(math.floor(height * ratio + 0.5))))
    return new_w, new_h


def letterbox(image: np.ndarray, in_w: int, in_h: int, mean_bgr=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, Letterbox]:
    """RGB uint8 image -> detector input (1, 3, in_h, in_w) float32 BGR minus ``mean_bgr``, zero padded."""
    image = as_rgb(image)
    h, w = image.shape[:2]
    new_w, new_h = fit_size(w, h, in_w, in_h)
    resized = resize_bilinear(image, new_w, new_h)
    out = np.zeros((1, 3, in_h, in_w), dtype=np.float32)
    for channel, (rgb_index, mean) in enumerate(zip((2, 1, 0), mean_bgr)):
        out[0, channel, :new_h, :new_w] = resized[:, :, rgb_index] - np.float32(mean)
    return out, Letterbox(new_w, new_h, w / new_w, h / new_h)


def retinaface_priors(in_w: int, in_h: int) -> np.ndarray:
    """Priors (N, 4) as (cx, cy, w, h) relative to the input, in the network's output order:
    level by level, row-major over the feature map, both sizes of a cell next to each other."""
    priors = []
    for step, sizes in zip(RETINAFACE_STEPS, RETINAFACE_MIN_SIZES):
        rows, cols = math.ceil(in_h / step), math.ceil(in_w / step)
        cy, cx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cx = (cx.reshape(-1, 1) + 0.5) * step / in_w
        cy = (cy.reshape(-1, 1) + 0.5) * step / in_h
        for_cell = []
        for size in sizes:
            for_cell.append(np.concatenate(
                [cx, cy, np.full_like(cx, size / in_w), np.full_like(cy, size / in_h)], axis=1))
        priors.append(np.stack(for_cell, axis=1).reshape(-1, 4))
    return np.concatenate(priors).astype(np.float32)


@dataclass
class Detections:
    """Decoded candidates in detector-input pixels (before NMS)."""

    boxes: np.ndarray      # (N, 4) x1, y1, x2, y2
    scores: np.ndarray     # (N,)
    landmarks: np.ndarray  # (N, 5, 2)


def decode_retinaface(outputs: list[np.ndarray], in_w: int, in_h: int, score_threshold: float) -> Detections:
    """RetinaFace outputs ``loc (1, N, 4)``, ``conf (1, N, 2)`` (softmaxed), ``landmarks (1, N, 10)``."""
    loc, conf, landm = (np.asarray(o, dtype=np.float32).reshape(-1, o.shape[-1]) for o in outputs[:3])
    priors = retinaface_priors(in_w, in_h)
    if loc.shape[0] != priors.shape[0]:
        raise InputError(f"RetinaFace output has {loc.shape[0]} anchors, the priors of a {in_w}x{in_h} input are "
                         f"{priors.shape[0]}: the outputs do not belong to this input size")
    scores = conf[:, 1]
    keep = np.nonzero(scores > score_threshold)[0]
    loc, landm, p, scores = loc[keep], landm[keep], priors[keep], scores[keep]
    v0, v1 = (np.float32(v) for v in RETINAFACE_VARIANCES)
    cx = p[:, 0] + loc[:, 0] * v0 * p[:, 2]
    cy = p[:, 1] + loc[:, 1] * v0 * p[:, 3]
    w = p[:, 2] * np.exp(loc[:, 2] * v1)
    h = p[:, 3] * np.exp(loc[:, 3] * v1)
    half = np.float32(0.5)
    boxes = np.stack([(cx - w * half) * in_w, (cy - h * half) * in_h,
                      (cx + w * half) * in_w, (cy + h * half) * in_h], axis=1)
    lx = (p[:, 0:1] + landm[:, 0::2] * v0 * p[:, 2:3]) * in_w
    ly = (p[:, 1:2] + landm[:, 1::2] * v0 * p[:, 3:4]) * in_h
    return Detections(boxes.astype(np.float32), scores.astype(np.float32),
                      np.stack([lx, ly], axis=2).astype(np.float32))


def decode_yunet(outputs: list[np.ndarray], in_w: int, in_h: int, score_threshold: float) -> Detections:
    """YuNet outputs in the model's order: cls_8/16/32, obj_8/16/32, bbox_8/16/32, kps_8/16/32."""
    n = len(YUNET_STRIDES)
    if len(outputs) != 4 * n:
        raise InputError(f"YuNet has 12 outputs (cls, obj, bbox, kps at strides 8/16/32), got {len(outputs)}")
    boxes, scores, lms = [], [], []
    for i, stride in enumerate(YUNET_STRIDES):
        cls = np.asarray(outputs[i], dtype=np.float32).reshape(-1)
        obj = np.asarray(outputs[n + i], dtype=np.float32).reshape(-1)
        bbox = np.asarray(outputs[2 * n + i], dtype=np.float32).reshape(-1, 4)
        kps = np.asarray(outputs[3 * n + i], dtype=np.float32).reshape(-1, 10)
        cols, rows = in_w // stride, in_h // stride
        if cls.shape[0] != rows * cols:
            raise InputError(f"YuNet stride-{stride} output has {cls.shape[0]} cells, a {in_w}x{in_h} input has "
                             f"{rows * cols}")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = np.nonzero(score > score_threshold)[0]
        r = (keep // cols).astype(np.float32)
        c = (keep % cols).astype(np.float32)
        s = np.float32(stride)
        b = bbox[keep]
        cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
        w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
        half = np.float32(0.5)
        boxes.append(np.stack([cx - w * half, cy - h * half, cx + w * half, cy + h * half], axis=1))
        k = kps[keep]
        lms.append(np.stack([(c[:, None] + k[:, 0::2]) * s, (r[:, None] + k[:, 1::2]) * s], axis=2))
        scores.append(score[keep])
    return Detections(np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
                      np.concatenate(scores).astype(np.float32),
                      np.concatenate(lms).astype(np.float32).reshape(-1, 5, 2))


def select_faces(det: Detections, box: Letterbox, image_w: int, image_h: int, nms_threshold: float,
                 max_faces: int) -> list[Face]:
    """NMS in detector pixels, then map the kept faces back to image pixels (clipping boxes)."""
    keep = nms(det.boxes, det.scores, nms_threshold, top_k=max_faces)
    scale = np.array([box.scale_x, box.scale_y], dtype=np.float32)
    faces = []
    for i in keep:
        b = det.boxes[i].reshape(2, 2) * scale
        b[:, 0] = np.clip(b[:, 0], 0, image_w)
        b[:, 1] = np.clip(b[:, 1], 0, image_h)
        faces.append(Face(b.reshape(4), float(det.scores[i]), det.landmarks[i] * scale))
    return faces

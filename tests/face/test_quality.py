"""Face quality on the packaged portraits and degraded copies of them, and the 5-point head pose."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edgetvm.face.align import ARCFACE_TEMPLATE
from edgetvm.face.quality import TEMPLATE_PITCH_RATIO, assess_quality, head_pose, laplacian_variance


def test_laplacian_variance_matches_a_loop(rng):
    img = rng.uniform(0, 255, (40, 50))
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64)
    lap = [float((img[y - 1:y + 2, x - 1:x + 2] * kernel).sum()) for y in range(1, 39) for x in range(1, 49)]
    assert laplacian_variance(img) == pytest.approx(np.var(lap), rel=1e-12)


def test_head_pose_from_landmarks():
    assert head_pose(ARCFACE_TEMPLATE)["pitch_ratio"] == pytest.approx(TEMPLATE_PITCH_RATIO)
    half_eyes = float(ARCFACE_TEMPLATE[1, 0] - ARCFACE_TEMPLATE[0, 0]) / 2
    for shift in (-10.0, 5.0, 12.0):
        lm = ARCFACE_TEMPLATE.astype(np.float64).copy()
        lm[2, 0] = lm[:2, 0].mean() + shift
        # Scaled and rotated into an image: yaw is measured in the aligned frame, roll is the rotation.
        angle = math.radians(20)
        rot = 2.5 * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        pose = head_pose(lm @ rot.T + [300, 120])
        assert pose["yaw_deg"] == pytest.approx(math.degrees(math.asin(shift / half_eyes)), abs=0.5)
        eye_line = ARCFACE_TEMPLATE[1] - ARCFACE_TEMPLATE[0]
        assert pose["roll_deg"] == pytest.approx(20 + math.degrees(math.atan2(eye_line[1], eye_line[0])), abs=1e-3)


def test_quality_of_packaged_and_degraded_photos(ort_pipeline, astronaut, grace):
    def quality(image):
        return assess_quality(image, ort_pipeline.detect(image)[0])

    for photo in (astronaut, grace):
        q = quality(photo)
        assert q.acceptable() and q.components["size"] == q.components["sharpness"] == 1.0, q.reasons
    cases = {
        "blurred": np.asarray(Image.fromarray(astronaut).filter(ImageFilter.GaussianBlur(2))),
        "small face": np.asarray(Image.fromarray(grace).resize((grace.shape[1] // 6, grace.shape[0] // 6))),
        "badly exposed": (grace * 0.12).astype(np.uint8),
    }
    for reason, image in cases.items():
        q = quality(image)
        assert not q.acceptable() and any(r.startswith(reason) for r in q.reasons), (reason, q.reasons)

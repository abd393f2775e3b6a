"""Face quality on the packaged portraits and degraded copies of them, the 5-point head pose, and the
board's C twin (face/c/face_quality.c) against it."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

import edgetvm.face as face_pkg
from edgetvm.face.align import ARCFACE_TEMPLATE, align_face
from edgetvm.face.evaluation import augment
from edgetvm.face.quality import TEMPLATE_PITCH_RATIO, assess_quality, head_pose, laplacian_variance

C_DIR = Path(face_pkg.__file__).parent / "c"


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


class QualityResult(ctypes.Structure):
    _fields_ = [(name, ctypes.c_float) for name in (
        "score", "size", "sharpness", "pose", "exposure", "eye_distance_px", "laplacian_variance", "yaw_deg",
        "roll_deg", "pitch_ratio", "mean_grey", "clipped_fraction")]


def test_c_quality_matches_python(tmp_path, ort_pipeline, astronaut, grace):
    """face_quality.c (the board's enrolment gate) against quality.py on real and degraded faces."""
    lib_path = tmp_path / "libface_quality.so"
    subprocess.run([shutil.which("gcc") or "cc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                    "-shared", "-fPIC", "-o", str(lib_path), str(C_DIR / "face_quality.c"), str(C_DIR / "face_proc.c"),
                    "-lm"], check=True)
    lib = ctypes.CDLL(str(lib_path))
    images = [astronaut, grace, np.asarray(Image.fromarray(astronaut).filter(ImageFilter.GaussianBlur(1))),
              np.asarray(Image.fromarray(grace).resize((grace.shape[1] // 6, grace.shape[0] // 6))),
              (grace * 0.12).astype(np.uint8), augment(astronaut, np.random.default_rng(2))[0]]
    for image in images:
        face = ort_pipeline.detect(image)[0]
        crop = np.ascontiguousarray(align_face(image, face.landmarks), np.float32)
        ref = assess_quality(image, face, crop)
        ours = QualityResult()
        lm = np.ascontiguousarray(face.landmarks, np.float32).reshape(10)
        assert lib.face_assess_quality(crop.ctypes.data_as(ctypes.c_void_p), lm.ctypes.data_as(ctypes.c_void_p),
                                       ctypes.byref(ours)) == 0
        assert ours.score == pytest.approx(ref.score, abs=2e-3)
        for key, value in ref.components.items():
            assert getattr(ours, key) == pytest.approx(value, abs=2e-3), key
        for key, value in ref.measures.items():
            assert getattr(ours, key) == pytest.approx(value, rel=1e-4, abs=2e-3), key

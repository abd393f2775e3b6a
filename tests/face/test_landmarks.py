"""FaceMesh compiled by edgetvm on MediaPipe's crop of detected faces, against LiteRT on the same
crop; the crop geometry and the head pose read from the mesh."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from edgetvm.face.landmarks import (CHIN, EYE_CORNERS, FOREHEAD, IRIS_SIZE, LEFT_EYE_OUTER, MESH_SIZE, RIGHT_EYE_OUTER,
                                    FaceLandmarker, FaceRoi, head_pose, iris_input, mesh_input, roi_from_eye,
                                    roi_from_face, roi_from_mesh)


@pytest.fixture(scope="session")
def landmarkers():
    return FaceLandmarker(num_threads=1), FaceLandmarker("litert", num_threads=1)


def test_facemesh_matches_litert_on_the_crop(landmarkers, ort_pipeline_ci, astronaut, grace):
    ours, reference = landmarkers
    for image in (astronaut, grace):
        face = ort_pipeline_ci.detect(image)[0]
        x = mesh_input(image, roi_from_face(face))
        assert x.shape == (1, MESH_SIZE, MESH_SIZE, 3) and 0 <= x.min() and x.max() <= 1
        got, expected = ours.run_input(x), reference.run_input(x)
        assert [o.shape for o in got] == [o.shape for o in expected]
        for a, b in zip(got, expected):
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
        mesh = ours.from_face(image, face)
        assert mesh.points.shape == (468, 3) and mesh.presence > 0.99
        # The mesh covers the detected face: its box overlaps the detector's.
        x1, y1, x2, y2 = mesh.box()
        bx1, by1, bx2, by2 = face.box
        overlap = max(0, min(x2, bx2) - max(x1, bx1)) * max(0, min(y2, by2) - max(y1, by1))
        assert overlap / ((bx2 - bx1) * (by2 - by1)) > 0.8


def test_iris_matches_litert_and_lands_in_the_eye(landmarkers, ort_pipeline_ci, astronaut, grace):
    ours, reference = landmarkers
    for image in (astronaut, grace):
        mesh = reference.from_face(image, ort_pipeline_ci.detect(image)[0])
        irises = ours.irises(image, mesh)
        for eye, (corners, mirrored) in EYE_CORNERS.items():
            x = iris_input(image, roi_from_eye(mesh.points, corners), mirrored)
            assert x.shape == (1, IRIS_SIZE, IRIS_SIZE, 3)
            for a, b in zip(ours.run_iris(x), reference.run_iris(x)):
                assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
            # The iris centre lies between the eye's corners, its diameter a third to a half of their distance.
            outer, inner = (mesh.points[i, :2] for i in corners)
            width = np.linalg.norm(inner - outer)
            along = float((irises[eye].center - outer) @ (inner - outer)) / width ** 2
            assert 0.25 < along < 0.75 and 0.3 * width < 2 * irises[eye].radius < 0.55 * width, (eye, along)


def test_roi_maps_crop_points_back_to_the_image():
    roi = FaceRoi(cx=210.0, cy=140.0, size=150.0, angle=math.radians(25))
    points = np.array([[50.0, 60.0], [300.0, 100.0], [210.0, 140.0]])
    m = roi.matrix().astype(np.float64)
    crop = points @ m[:, :2].T + m[:, 2]
    # The network's coordinates have the crop's left edge at 0: pixel centre i is at i + 0.5.
    back = roi.to_image(np.concatenate([crop + 0.5, np.zeros((3, 1))], axis=1))
    np.testing.assert_allclose(back[:, :2], points, atol=1e-3)
    np.testing.assert_allclose(crop[2], [(MESH_SIZE - 1) / 2] * 2, atol=1e-4)
    # roi_from_mesh on points spanning a rotated square gives that square back (scale 1).
    corners = roi.corners()
    mesh = np.zeros((468, 3))
    mesh[:, :2] = corners[np.arange(468) % 4]
    mesh[RIGHT_EYE_OUTER, :2], mesh[LEFT_EYE_OUTER, :2] = corners[0], corners[1]
    again = roi_from_mesh(mesh, scale=1.0)
    np.testing.assert_allclose([again.cx, again.cy, again.size, again.angle],
                               [roi.cx, roi.cy, roi.size, roi.angle], atol=1e-6)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def test_head_pose_reads_known_rotations(landmarkers, ort_pipeline_ci, grace):
    """A real mesh turned to face the camera (its own axes), then rotated by known angles."""
    mesh = landmarkers[1].from_face(grace, ort_pipeline_ci.detect(grace)[0]).points.astype(np.float64)
    x = mesh[LEFT_EYE_OUTER] - mesh[RIGHT_EYE_OUTER]
    x /= np.linalg.norm(x)
    v = mesh[CHIN] - mesh[FOREHEAD]
    y = v - (v @ x) * x
    y /= np.linalg.norm(y)
    frontal = (mesh - mesh.mean(axis=0)) @ np.stack([x, y, np.cross(x, y)], axis=1)
    pose = head_pose(frontal)
    assert max(abs(pose.yaw), abs(pose.pitch), abs(pose.roll)) < 1e-6
    # Rotations about the camera's y (yaw: x gains +z), x (pitch: y gains +z) and z (roll) axes.
    for rotation, field in ((_rotation(1, -20).T, "yaw"), (_rotation(0, 15), "pitch"), (_rotation(2, 30), "roll")):
        pose = head_pose(frontal @ rotation.T)
        expected = {"yaw": 20.0, "pitch": 15.0, "roll": 30.0}[field]
        assert getattr(pose, field) == pytest.approx(expected, abs=1e-6)
        assert all(abs(getattr(pose, other)) < 1e-6 for other in ("yaw", "pitch", "roll") if other != field)


def test_head_pose_follows_the_image(landmarkers, ort_pipeline_ci, astronaut):
    """Mirroring flips yaw and roll and keeps pitch; turning the picture by 20 degrees adds 20 to roll."""
    ours = landmarkers[0]

    def mesh(image, refine=1):
        return ours.from_face(image, ort_pipeline_ci.detect(image)[0], refine=refine)

    base = mesh(astronaut).pose
    mirrored = mesh(np.ascontiguousarray(astronaut[:, ::-1])).pose
    assert abs(mirrored.yaw + base.yaw) < 2 and abs(mirrored.roll + base.roll) < 2
    assert abs(mirrored.pitch - base.pitch) < 2
    # PIL turns counter-clockwise on screen: the eye line's clockwise angle drops by 20 degrees.
    turned_image = np.asarray(Image.fromarray(astronaut).rotate(20, resample=Image.BILINEAR, center=(225, 118)))
    turned = mesh(turned_image).pose
    assert turned.roll == pytest.approx(base.roll - 20, abs=0.5)
    assert abs(turned.yaw - base.yaw) < 2 and abs(turned.pitch - base.pitch) < 2
    # Without the pass on the mesh's own crop, the detector's coarse eye line leaves roll short.
    assert abs(mesh(turned_image, refine=0).pose.roll - (base.roll - 20)) > 1

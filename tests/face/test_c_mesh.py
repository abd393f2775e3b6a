"""The board's landmark, iris and attribute stages (face/c/face_mesh.c, face_iris.c, face_attr.c), built
for the host and bound with ctypes, against edgetvm.face.landmarks and attributes on real faces."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from edgetvm.errors import InputError
from edgetvm.face.attributes import (AGE, AGE_CHIP, GENDER, GENDER_CHIP, LEFT_EYE, RIGHT_EYE, age_expectation,
                                     aspect_ratio, chip_input, dlib_chip, mouth_ratio)
from edgetvm.face.landmarks import (EYE_CORNERS, IRIS_POINTS, IRIS_SIZE, MESH_SIZE, FaceLandmarker, FaceRoi,
                                    decode_iris, decode_mesh, iris_input, mesh_input, roi_from_eye, roi_from_face,
                                    roi_from_mesh)

from .conftest import FaceDet, build_host_library


class Roi(ctypes.Structure):
    _fields_ = [("cx", ctypes.c_float), ("cy", ctypes.c_float), ("size", ctypes.c_float), ("angle", ctypes.c_float)]


class Pose(ctypes.Structure):
    _fields_ = [("yaw", ctypes.c_float), ("pitch", ctypes.c_float), ("roll", ctypes.c_float)]


def _f(a: np.ndarray):
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


@pytest.fixture(scope="module")
def mesh_lib(tmp_path_factory):
    lib = ctypes.CDLL(str(build_host_library(tmp_path_factory, "face_mesh", "face_proc.c", "face_mesh.c",
                                             "face_iris.c", "face_attr.c")))
    lib.face_mesh_decode.restype = ctypes.c_float
    lib.face_eye_aspect_ratio.restype = ctypes.c_float
    lib.face_mouth_aspect_ratio.restype = ctypes.c_float
    lib.face_age_expectation.restype = ctypes.c_float
    lib.face_iris_radius.restype = ctypes.c_float
    return lib


def test_c_landmark_stage_matches_python(mesh_lib, ort_pipeline_ci, astronaut, grace):
    reference = FaceLandmarker("litert", num_threads=1)
    for image in (astronaut, grace):
        face = ort_pipeline_ci.detect(image)[0]
        det = FaceDet()
        det.box[:] = [float(v) for v in face.box]
        det.landmarks[:] = [float(v) for v in face.landmarks.reshape(-1)]
        roi = Roi()
        assert mesh_lib.face_mesh_roi_from_det(ctypes.byref(det), ctypes.c_float(1.5), ctypes.byref(roi)) == 0
        py_roi = roi_from_face(face)
        np.testing.assert_allclose([roi.cx, roi.cy, roi.size, roi.angle],
                                   [py_roi.cx, py_roi.cy, py_roi.size, py_roi.angle], rtol=1e-6, atol=1e-6)
        rgb = np.ascontiguousarray(image)
        x = np.empty((1, MESH_SIZE, MESH_SIZE, 3), np.float32)
        assert mesh_lib.face_mesh_input(rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), rgb.shape[1],
                                        rgb.shape[0], ctypes.byref(roi), _f(x)) == 0
        # The same crop as Python's for the same (float32) crop numbers.
        same_roi = FaceRoi(float(roi.cx), float(roi.cy), float(roi.size), float(roi.angle))
        np.testing.assert_allclose(x, mesh_input(image, same_roi), atol=1e-6)
        outputs = reference.run_input(x)
        raw = np.ascontiguousarray(outputs[0].reshape(-1), dtype=np.float32)
        points = np.empty(468 * 3, np.float32)
        presence = mesh_lib.face_mesh_decode(_f(raw), ctypes.c_float(float(outputs[1].reshape(-1)[0])),
                                             ctypes.byref(roi), _f(points))
        py_mesh = decode_mesh(outputs, py_roi)
        assert presence == pytest.approx(py_mesh.presence, abs=1e-6)
        points = points.reshape(468, 3)
        np.testing.assert_allclose(points, py_mesh.points, atol=2e-3)
        again, py_again = Roi(), roi_from_mesh(py_mesh.points)
        mesh_lib.face_mesh_roi_from_points(_f(points.reshape(-1)), ctypes.c_float(1.5), ctypes.byref(again))
        np.testing.assert_allclose([again.cx, again.cy, again.size, again.angle],
                                   [py_again.cx, py_again.cy, py_again.size, py_again.angle], atol=2e-3)
        pose = Pose()
        assert mesh_lib.face_head_pose(_f(points.reshape(-1)), ctypes.byref(pose)) == 0
        expected = py_mesh.pose
        np.testing.assert_allclose([pose.yaw, pose.pitch, pose.roll], [expected.yaw, expected.pitch, expected.roll],
                                   atol=1e-3)
        for six, name in ((RIGHT_EYE, "FACE_MESH_RIGHT_EYE"), (LEFT_EYE, "FACE_MESH_LEFT_EYE")):
            indices = (ctypes.c_int * 6).in_dll(mesh_lib, name)
            assert tuple(indices) == six
            assert mesh_lib.face_eye_aspect_ratio(_f(points.reshape(-1)), indices) == pytest.approx(
                aspect_ratio(py_mesh.points, six), abs=1e-5)
        assert mesh_lib.face_mouth_aspect_ratio(_f(points.reshape(-1))) == pytest.approx(
            mouth_ratio(py_mesh.points), abs=1e-5)


def test_c_refuses_degenerate_input(mesh_lib):
    det, roi = FaceDet(), Roi()
    assert mesh_lib.face_mesh_roi_from_det(ctypes.byref(det), ctypes.c_float(1.5), ctypes.byref(roi)) == -1
    assert mesh_lib.face_head_pose(_f(np.zeros(468 * 3, np.float32)), ctypes.byref(Pose())) == -1


def test_c_attribute_chips_match_python(mesh_lib, ort_pipeline_ci, astronaut, grace):
    lib = mesh_lib
    reference = FaceLandmarker("litert", num_threads=1)
    for image in (astronaut, grace):
        mesh = reference.from_face(image, ort_pipeline_ci.detect(image)[0])
        rgb = np.ascontiguousarray(image)
        points = np.ascontiguousarray(mesh.points.reshape(-1), dtype=np.float32)
        for size, net in ((AGE_CHIP, AGE), (GENDER_CHIP, GENDER)):
            chip = np.empty((size, size, 3), np.uint8)
            assert lib.face_dlib_chip(rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), rgb.shape[1], rgb.shape[0],
                                      _f(points), size, chip.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))) == 0
            expected = dlib_chip(image, mesh, size).astype(int)
            # Truncation to uint8 turns float rounding into an occasional 1: nothing more.
            difference = np.abs(chip.astype(int) - expected)
            assert difference.max() <= 1 and (difference > 0).mean() < 0.01
            x = np.empty((1, 3, size, size), np.float32)
            lib.face_chip_input(chip.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), size, _f(x))
            np.testing.assert_array_equal(x, chip_input(net, chip))
    p = np.random.default_rng(0).dirichlet(np.ones(81)).astype(np.float32)
    assert lib.face_age_expectation(_f(p)) == np.float32(age_expectation(p))


def test_c_iris_stage_matches_python(mesh_lib, ort_pipeline_ci, astronaut, grace):
    """face_iris.c's eye crops (the person's left eye mirrored), and its decoding of LiteRT's Iris
    outputs, against FaceLandmarker.irises' on the same mesh."""
    reference = FaceLandmarker("litert", num_threads=1)
    for image in (astronaut, grace):
        mesh = reference.from_face(image, ort_pipeline_ci.detect(image)[0])
        rgb = np.ascontiguousarray(image)
        points = np.ascontiguousarray(mesh.points.reshape(-1), dtype=np.float32)
        expected = reference.irises(image, mesh)
        for eye, (name, (corners, mirrored)) in enumerate(EYE_CORNERS.items()):
            roi, py_roi = Roi(), roi_from_eye(mesh.points, corners)
            mesh_lib.face_iris_roi(_f(points), eye, ctypes.byref(roi))
            np.testing.assert_allclose([roi.cx, roi.cy, roi.size, roi.angle],
                                       [py_roi.cx, py_roi.cy, py_roi.size, py_roi.angle], rtol=1e-6, atol=1e-5)
            x = np.empty((1, IRIS_SIZE, IRIS_SIZE, 3), np.float32)
            assert mesh_lib.face_iris_input(rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), rgb.shape[1],
                                            rgb.shape[0], ctypes.byref(roi), eye, _f(x)) == 0
            same_roi = FaceRoi(float(roi.cx), float(roi.cy), float(roi.size), float(roi.angle))
            np.testing.assert_allclose(x, iris_input(image, same_roi, mirrored), atol=1e-6)
            outputs = reference.run_iris(x)
            by_size = {o.size: np.ascontiguousarray(o.reshape(-1), dtype=np.float32) for o in outputs}
            out = np.empty(IRIS_POINTS * 3, np.float32)
            mesh_lib.face_iris_decode(_f(by_size[15]), _f(by_size[213]), ctypes.byref(roi), eye, _f(out))
            py_iris = decode_iris(outputs, py_roi, mirrored)
            np.testing.assert_allclose(out.reshape(IRIS_POINTS, 3), np.concatenate([py_iris.iris, py_iris.contour]),
                                       atol=1e-3)
            assert mesh_lib.face_iris_radius(_f(out)) == pytest.approx(py_iris.radius, abs=1e-4)
            # The whole host stage, fed the C crop, lands on the same irises.
            np.testing.assert_allclose(py_iris.iris, expected[name].iris, atol=1e-3)
    assert mesh_lib.face_iris_input(rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), rgb.shape[1], rgb.shape[0],
                                    ctypes.byref(Roi(10.0, 10.0, 20.0, 0.0)), 2, _f(x)) == -1
    collapsed, roi = np.zeros(468 * 3, np.float32), Roi()
    mesh_lib.face_iris_roi(_f(collapsed), 0, ctypes.byref(roi))
    assert mesh_lib.face_iris_input(rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), rgb.shape[1], rgb.shape[0],
                                    ctypes.byref(roi), 0, _f(x)) == -1
    with pytest.raises(InputError, match="coincide: no crop for Iris"):
        roi_from_eye(collapsed.reshape(468, 3), EYE_CORNERS["right"][0])

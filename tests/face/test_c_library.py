"""The board-side C library (face/c/face_proc.c), built for the host, against the Python pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from edgetvm.face import FacePipeline, box_iou, letterbox, resize_bilinear, umeyama, warp_affine, write_ppm
from edgetvm.face.align import ARCFACE_TEMPLATE, alignment_matrix
from edgetvm.face.detect import RETINAFACE_MEAN_BGR, decode_retinaface, decode_yunet, select_faces
from edgetvm.face.networks import NETWORKS, recognizer_input


@pytest.mark.parametrize("size", [(17, 9), (64, 40), (300, 513)])
def test_resize_matches_python(face_clib, astronaut, size):
    img = astronaut[::3, ::2]
    ours = face_clib.resize(img, *size)
    ref = resize_bilinear(img, *size)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("in_size", [(320, 320), (160, 96)])
def test_letterbox_matches_python(face_clib, grace, in_size):
    ours, info = face_clib.letterbox(grace, *in_size, RETINAFACE_MEAN_BGR)
    ref, box = letterbox(grace, *in_size, mean_bgr=RETINAFACE_MEAN_BGR)
    assert (info.resized_w, info.resized_h) == (box.resized_w, box.resized_h)
    assert np.float32(info.scale_x) == np.float32(box.scale_x)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    # The padding is the mean colour, i.e. zero after the subtraction.
    assert not ours[:, :, box.resized_h:, :].any() and not ours[:, :, :, box.resized_w:].any()


def _as_arrays(faces):
    return (np.array([f[0] for f in faces]).reshape(-1, 4), np.array([f[1] for f in faces]),
            np.array([f[2] for f in faces]).reshape(-1, 5, 2))


def test_retinaface_decode_nms_matches_python(face_clib, ort_pipeline, astronaut):
    """Real RetinaFace outputs (onnxruntime) at a low threshold: many candidates, one face."""
    x, box = ort_pipeline.detector_input(astronaut)
    outputs = ort_pipeline._detector_engine()(x)
    w, h = ort_pipeline.detector_size
    det = decode_retinaface(outputs, w, h, 0.02)
    buf, n = face_clib.decode_retinaface(outputs, w, h, 0.02)
    assert n == len(det.scores) > 10
    boxes, scores, lms = _as_arrays(face_clib.faces(buf, n))
    np.testing.assert_allclose(boxes, det.boxes, atol=1e-3)
    np.testing.assert_array_equal(scores, det.scores)
    np.testing.assert_allclose(lms, det.landmarks, atol=1e-3)

    ref = select_faces(det, box, astronaut.shape[1], astronaut.shape[0], 0.4, 50)
    kept = face_clib.nms(buf, n, 0.4, 50)
    face_clib.to_image(buf, kept, face_clib_info(face_clib, astronaut, w, h), astronaut.shape[1], astronaut.shape[0])
    ours = face_clib.faces(buf, kept)
    assert kept == len(ref) >= 1
    for (b, s, lm), f in zip(ours, ref):
        assert s == pytest.approx(f.score)
        np.testing.assert_allclose(b, f.box, atol=1e-2)
        np.testing.assert_allclose(lm, f.landmarks, atol=1e-2)


def face_clib_info(face_clib, image, w, h):
    return face_clib.letterbox(image, w, h, RETINAFACE_MEAN_BGR)[1]


def test_yunet_decode_matches_python(face_clib, grace):
    pipe = FacePipeline("yunet", engine="onnxruntime", num_threads=1)
    x, _ = pipe.detector_input(grace)
    outputs = pipe._detector_engine()(x)
    det = decode_yunet(outputs, 640, 640, 0.3)
    buf, n = face_clib.decode_yunet(outputs, 640, 640, 0.3)
    assert n == len(det.scores) >= 1
    boxes, scores, lms = _as_arrays(face_clib.faces(buf, n))
    np.testing.assert_allclose(boxes, det.boxes, atol=1e-3)
    np.testing.assert_allclose(scores, det.scores, rtol=1e-6)
    np.testing.assert_allclose(lms, det.landmarks, atol=1e-3)


def test_nms_matches_python(face_clib, rng):
    from edgetvm.face import nms

    # Clusters of jittered boxes with tied scores: order and survivors must agree exactly.
    centres = rng.uniform(0, 300, (6, 2))
    boxes = []
    for c in centres:
        for _ in range(15):
            x1, y1 = c + rng.normal(0, 6, 2)
            size = rng.uniform(30, 60)
            boxes.append([x1, y1, x1 + size, y1 + size])
    boxes = np.array(boxes, np.float32)
    scores = np.round(rng.uniform(0.5, 1.0, len(boxes)), 2).astype(np.float32)
    for iou, max_keep in ((0.4, 100), (0.1, 100), (0.7, 5)):
        keep = nms(boxes, scores, iou, top_k=max_keep)
        buf = (face_clib.FaceDet * len(boxes))()
        for i, (b, s) in enumerate(zip(boxes, scores)):
            buf[i].box[:] = list(b)
            buf[i].score = float(s)
            buf[i].landmarks[:] = [float(i)] * 10
        kept = face_clib.nms(buf, len(boxes), iou, max_keep)
        assert kept == len(keep)
        assert [int(buf[k].landmarks[0]) for k in range(kept)] == keep.tolist()
    # Python NMS itself: a box overlapping a better one is dropped, disjoint ones stay.
    assert nms(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), np.array([0.9, 0.95, 0.5]),
               0.5).tolist() == [1, 2]


def test_alignment_matrix_is_umeyama(face_clib, rng):
    # Landmarks: the template under a random similarity plus noise, and a mirrored (reflected) set.
    for trial in range(20):
        angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(0.3, 4.0)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        lm = (ARCFACE_TEMPLATE @ rot.T + rng.uniform(-50, 300, 2) + rng.normal(0, 2, (5, 2))).astype(np.float32)
        if trial % 5 == 4:
            lm[:, 0] = -lm[:, 0] + 400
        rc, ours = face_clib.alignment_matrix(lm)
        assert rc == 0
        np.testing.assert_allclose(ours, umeyama(lm, ARCFACE_TEMPLATE)[:2], rtol=1e-5, atol=1e-4)


def test_warp_matches_python(face_clib, astronaut, ort_pipeline):
    face = ort_pipeline.detect(astronaut)[0]
    m = alignment_matrix(face.landmarks)
    rc, ours = face_clib.warp(astronaut, m, 112, 112)
    assert rc == 0
    ref = warp_affine(astronaut, m, 112, 112)
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    for net in ("sface", "mobilefacenet"):
        np.testing.assert_allclose(face_clib.recognizer_input(ref, net == "mobilefacenet"),
                                   recognizer_input(NETWORKS[net], ref), atol=1e-6)
    # A matrix past the image's edge samples zeros, not garbage.
    far = np.array([[1, 0, -5000], [0, 1, -5000]], np.float32)
    assert not face_clib.warp(astronaut, far, 8, 8)[1].any()
    assert face_clib.warp(astronaut, np.zeros((2, 3), np.float32), 8, 8)[0] == -1


def test_read_pnm(face_clib, tmp_path, astronaut):
    path = write_ppm(tmp_path / "a.ppm", astronaut[:37, :53])
    np.testing.assert_array_equal(face_clib.read_pnm(path), astronaut[:37, :53])
    grey = tmp_path / "g.pgm"
    grey.write_bytes(b"P5\n# a comment\n3 2\n255\n" + bytes([0, 10, 20, 30, 40, 250]))
    np.testing.assert_array_equal(face_clib.read_pnm(grey)[:, :, 1], [[0, 10, 20], [30, 40, 250]])
    (tmp_path / "bad.ppm").write_bytes(b"P6\n3 2\n65535\n")
    assert face_clib.read_pnm(tmp_path / "bad.ppm") is None
    (tmp_path / "short.ppm").write_bytes(b"P6\n30 20\n255\n" + bytes(10))
    assert face_clib.read_pnm(tmp_path / "short.ppm") is None


def test_cosine(face_clib, rng):
    a, b = rng.normal(size=128).astype(np.float32), rng.normal(size=128).astype(np.float32)
    assert face_clib.cosine(a, b) == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-6)
    assert float(box_iou([0, 0, 2, 2], [[1, 1, 3, 3]])[0]) == pytest.approx(1 / 7)

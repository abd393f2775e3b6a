"""The board's tracker bookkeeping (face/c/face_track.c), built for the host and bound with ctypes,
against edgetvm.face.tracking: the same greedy IoU pairs, ids, entries and exits. The whole tracker
with the networks (FaceMesh between detections) runs under qemu in test_bundle.py."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from edgetvm.face.detect import Face
from edgetvm.face.tracking import IOU_THRESHOLD, PRESENCE_THRESHOLD, FaceTracker, match_by_iou

from .conftest import FaceDet, build_host_library
from .test_c_mesh import Roi

TRACK_MAX = 64


class Track(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int), ("box", ctypes.c_float * 4), ("det", ctypes.c_int),
                ("first_frame", ctypes.c_int), ("last_frame", ctypes.c_int), ("roi", Roi)]


class Tracker(ctypes.Structure):
    _fields_ = [("tracks", Track * TRACK_MAX), ("n_tracks", ctypes.c_int), ("detect_every", ctypes.c_int),
                ("iou_threshold", ctypes.c_float), ("presence_threshold", ctypes.c_float),
                ("frame_index", ctypes.c_int), ("next_id", ctypes.c_int), ("entries", ctypes.c_int),
                ("exits", ctypes.c_int)]


@pytest.fixture(scope="module")
def track_lib(tmp_path_factory):
    return ctypes.CDLL(str(build_host_library(tmp_path_factory, "face_track", "face_proc.c", "face_track.c")))


def _tracker(lib, detect_every: int = 1) -> Tracker:
    t = Tracker()
    assert lib.face_tracker_init(ctypes.byref(t), detect_every, ctypes.c_float(IOU_THRESHOLD),
                                 ctypes.c_float(PRESENCE_THRESHOLD)) == 0
    return t


def _detect(lib, t: Tracker, boxes: np.ndarray) -> int:
    dets = (FaceDet * max(len(boxes), 1))()
    for d, box in zip(dets, boxes):
        d.box[:] = [float(v) for v in box]
    return lib.face_tracker_detect(ctypes.byref(t), dets, len(boxes))


def _random_boxes(rng, n: int) -> np.ndarray:
    xy = rng.integers(0, 60, (n, 2)).astype(np.float32)
    wh = rng.integers(8, 30, (n, 2)).astype(np.float32)
    return np.concatenate([xy, xy + wh], axis=1)


def test_greedy_pairs_match_python(track_lib):
    """One detection frame after another with tracks in place: the pairs are match_by_iou's, ties included."""
    rng = np.random.default_rng(0)
    for case in range(200):
        t = _tracker(track_lib)
        tracks = _random_boxes(rng, int(rng.integers(0, 7)))
        assert _detect(track_lib, t, tracks) == len(tracks)
        found = _random_boxes(rng, int(rng.integers(0, 7)))
        if case % 3 == 0 and len(tracks) and len(found):
            found[0] = tracks[-1]  # exact duplicates: equal IoUs, the tie order matters
            found[-1] = tracks[-1]
        expected = match_by_iou(list(tracks), found, IOU_THRESHOLD)
        assert _detect(track_lib, t, found) == len(found)
        got = {t.tracks[k].id - 1: t.tracks[k].det for k in range(t.n_tracks) if t.tracks[k].id <= len(tracks)}
        assert got == dict(expected), case
        assert t.entries == len(tracks) + len(found) - len(expected)
        assert t.exits == len(tracks) - len(expected)


class _ScriptedDetector:
    """Stands in for the networks: the detector returns the scripted boxes of each frame."""

    def __init__(self, script):
        self.frames = iter(script)

    def detect(self, frame):
        return [Face(np.asarray(b, np.float32), 0.9, np.zeros((5, 2), np.float32)) for b in next(self.frames)]


class _NoMesh:
    def from_face(self, frame, face):
        return None


def test_ids_and_counts_match_python_tracker(track_lib):
    """Faces appearing, moving, leaving and crossing, detected every frame: same ids, same counts."""
    rng = np.random.default_rng(1)
    script, live = [], {}
    for t in range(40):
        live = {k: b + rng.normal(0, 2, 4).astype(np.float32) for k, b in live.items() if rng.random() > 0.1}
        if rng.random() < 0.3:
            live[t] = _random_boxes(rng, 1)[0] * 3
        script.append([live[k] for k in rng.permutation(sorted(live))])
    python = FaceTracker(_ScriptedDetector(script), _NoMesh(), detect_every=1)
    c = _tracker(track_lib)
    for boxes in script:
        tracks = python.update(np.zeros((4, 4, 3), np.uint8))
        assert _detect(track_lib, c, np.array(boxes, np.float32).reshape(-1, 4)) == len(tracks)
        assert [c.tracks[k].id for k in range(c.n_tracks)] == [tr.track_id for tr in tracks]
        np.testing.assert_array_equal(np.array([list(c.tracks[k].box) for k in range(c.n_tracks)]).reshape(-1, 4),
                                      np.array([tr.box for tr in tracks], np.float32).reshape(-1, 4))
    assert python.counts() == {"entries": c.entries, "exits": c.exits, "in_view": c.n_tracks}
    assert c.entries > 5 and c.exits > 3


def test_follow_ends_faces_under_presence(track_lib):
    t = _tracker(track_lib, detect_every=3)
    assert track_lib.face_tracker_detection_frame(ctypes.byref(t)) == 1
    _detect(track_lib, t, _random_boxes(np.random.default_rng(2), 3))
    assert track_lib.face_tracker_detection_frame(ctypes.byref(t)) == 0
    boxes = np.arange(12, dtype=np.float32)
    presence = np.array([0.9, PRESENCE_THRESHOLD - 1e-3, PRESENCE_THRESHOLD], np.float32)
    fptr = ctypes.POINTER(ctypes.c_float)
    assert track_lib.face_tracker_follow(ctypes.byref(t), boxes.ctypes.data_as(fptr), presence.ctypes.data_as(fptr)) == 2
    assert [t.tracks[k].id for k in range(2)] == [1, 3] and list(t.tracks[1].box) == [8, 9, 10, 11]
    assert (t.entries, t.exits, t.frame_index) == (3, 1, 2)
    assert track_lib.face_tracker_init(ctypes.byref(Tracker()), 0, ctypes.c_float(0.3), ctypes.c_float(0.5)) == -1

"""Tracking and counting on a synthetic video made from real photos (sequences.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetvm.errors import InputError
from edgetvm.face.landmarks import FaceLandmarker
from edgetvm.face.tracking import FaceTracker, frame_paths, match_by_iou

from .sequences import NUM_FRAMES, SCRIPT, make_sequence, person_at


def test_match_by_iou_pairs_highest_first():
    tracks = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]], np.float32)
    found = np.array([[21, 0, 31, 10], [1, 0, 11, 10], [100, 100, 110, 110]], np.float32)
    assert sorted(match_by_iou(tracks, found, 0.3)) == [(0, 1), (1, 0)]
    assert match_by_iou(tracks, found[:0], 0.3) == []
    # One detection overlapping two tracks goes to the better one only.
    assert match_by_iou(tracks[:2], np.array([[2, 0, 12, 10]], np.float32), 0.1) == [(0, 0)]


@pytest.mark.parametrize("detect_every", [1, 3])
def test_ids_stay_stable_and_counts_are_exact(tvm_pipeline, detect_every):
    sequence = make_sequence()
    tracker = FaceTracker(tvm_pipeline, FaceLandmarker(num_threads=1), detect_every=detect_every)
    ids: dict[str, set[int]] = {name: set() for name in SCRIPT}
    for t, frame in enumerate(sequence.frames):
        tracks = tracker.update(frame)
        here = {name: boxes[t] for name, boxes in sequence.where.items() if t in boxes}
        seen = [person_at(track.box, here) for track in tracks]
        assert None not in seen and len(set(seen)) == len(seen), (t, seen)
        for name, track in zip(seen, tracks):
            ids[name].add(track.track_id)
        # A face is followed from the first detection frame it is in until it leaves.
        for name, (first, last, *_) in SCRIPT.items():
            detected_from = -(-first // detect_every) * detect_every
            assert (name in seen) == (detected_from <= t <= last), (t, name, seen)
    assert all(len(v) == 1 for v in ids.values()) and ids["astronaut"] != ids["grace"]
    leave_in_view = sum(last >= NUM_FRAMES - 1 for _, last, *_ in SCRIPT.values())
    assert tracker.counts() == {"entries": len(SCRIPT), "exits": len(SCRIPT) - leave_in_view,
                                "in_view": leave_in_view}


def test_frame_folder_errors(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        frame_paths(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no frames"):
        frame_paths(tmp_path)

"""benchmarks/bench_compression.py: every configuration is a valid compile, and the face agreement
(the issue's RetinaFace bar) is read off the detections as the issue states it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgetvm.backends.standalone import check_optimize
from edgetvm.compression.options import CompressOptions

_SPEC = importlib.util.spec_from_file_location(
    "bench_compression", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_compression.py")
bench_compression = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_compression)


def test_every_config_is_a_valid_compile():
    for name, options in bench_compression.CONFIGS.items():
        assert set(options) <= {"quantize", "compress", "calibrate", "prune", "optimize"}, name
        CompressOptions.coerce(options.get("compress"))
        check_optimize(options.get("optimize", "speed"))
    assert bench_compression.CONFIGS["size-k64"]["optimize"] == "size"


def face(x0, landmark_shift=0.0):
    return SimpleNamespace(box=np.array([x0, 10.0, x0 + 100.0, 110.0]),
                           landmarks=np.full((5, 2), 50.0) + landmark_shift)


def test_same_faces_needs_iou_and_landmarks_and_no_extra(monkeypatch):
    want = [[face(0.0)], [face(200.0)]]
    cases = {
        "same": ([[face(1.0)], [face(200.0, 1.5)]], True),
        "box moved": ([[face(6.0)], [face(200.0)]], False),  # IoU 94/106 < 0.9
        "landmark 2.5 px": ([[face(0.0)], [face(200.0, 2.5)]], False),
        "one extra": ([[face(0.0), face(400.0)], [face(200.0)]], False),
        "one missed": ([[face(0.0)], []], False),
    }
    for name, (got, same) in cases.items():
        answers = iter([want, got])
        monkeypatch.setattr(bench_compression, "detections", lambda runner, net, images: next(answers))
        found = bench_compression.accuracy("retinaface", None, None, {"net": None, "images": [None, None]})
        assert found["same_faces"] is same, (name, found)

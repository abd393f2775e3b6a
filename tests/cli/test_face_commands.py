"""``edgetvm face ...`` as a user runs it (a subprocess); onnxruntime runs the networks where compiling them would
only cost time."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from edgetvm.face.bundle import run_tracking
from edgetvm.face.image import score_label, write_ppm
from edgetvm.zoo import fetch, load_astronaut

from .conftest import edgetvm


def test_detect_lists_only_detector_options():
    detect = edgetvm("face", "detect", "--help").stdout
    verify = edgetvm("face", "verify", "--help").stdout
    for flag in ("--recognizer", "--threshold ", "--only"):
        assert flag not in detect and flag in verify
    assert "-o OUTPUT, --output OUTPUT, --out OUTPUT" in detect


@pytest.mark.parametrize("flags, says", [
    (["--score-threshold", "1.5"], "--score-threshold is a fraction in [0, 1]"),
    (["--nms-threshold", "-0.1"], "--nms-threshold is a fraction in [0, 1]"),
    (["--threshold", "2"], "a cosine similarity threshold lies in [-1, 1]"),
    (["--detector-size", "100x100"], "argument --detector-size: 100x100: width and height must be positive "
                                     "multiples of 32"),
    (["--quantize", "int4"], "argument --quantize: invalid choice: 'int4'"),
])
def test_bad_settings_are_refused_by_flag(flags, says):
    done = edgetvm("face", "verify", "a.png", "b.png", *flags)
    assert done.returncode == 2 and says in done.stderr, done.stderr


def test_verify_json_is_compact():
    done = edgetvm("face", "verify", fetch("astronaut"), fetch("grace_hopper"), "--json", "--engine", "onnxruntime")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["same_person"] is False


def test_detect_writes_with_o_and_prints_the_label_it_draws(tmp_path):
    for flag in ("-o", "--out"):
        out = tmp_path / f"faces{flag}.png"
        done = edgetvm("face", "detect", fetch("grace_hopper"), flag, out, "--json", "--engine", "onnxruntime")
        assert done.returncode == 0 and out.stat().st_size > 0, done.stderr
    score = json.loads(done.stdout)["faces"][0]["score"]
    done = edgetvm("face", "detect", fetch("grace_hopper"), "--engine", "onnxruntime")
    assert re.search(r"face 0: score (\S+)", done.stdout).group(1) == score_label(score)


@pytest.fixture(scope="module")
def host_bundle(tmp_path_factory):
    """A host bundle at a small detector size, without FaceMesh or a segmenter; and what `face build` printed."""
    out = tmp_path_factory.mktemp("host_bundle") / "bundle"
    done = edgetvm("face", "build", "--target", "host", "--detector-size", "64x64", "-o", out, timeout=240)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_build_makes_the_sface_recognizer_int8_by_default(host_bundle, tmp_path):
    # What is checked is the recognizer's precision, not the board.
    out, stdout = host_bundle
    assert "recognizer sface: int8" in stdout and "--fp32" in stdout
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["compile_options"] == {"recognizer": {"quantize": "int8"}}
    recognizer = json.loads((out / "recognizer.so.json").read_text())
    detector = json.loads((out / "detector.so.json").read_text())
    assert "Quantize(int8)" in recognizer["passes"] and "Quantize(int8)" not in detector["passes"]
    done = edgetvm("face", "build", "--fp32", "--quantize", "int8", "-o", tmp_path / "no")
    assert done.returncode == 2 and "--fp32 keeps both networks float" in done.stderr


def test_bundle_without_facemesh_tracks_by_iou_on_every_frame(host_bundle, tmp_path):
    """face_demo --track with no FaceMesh: the detector on every frame, ids continued by IoU; following
    faces between detections, --mesh, --iris and --segment are refused with what to rebuild."""
    out, _ = host_bundle
    face = np.ascontiguousarray(load_astronaut()[20:230, 140:310])  # the face fills the 64x64 detector
    frames = [face, np.ascontiguousarray(face[:, ::-1]), np.full_like(face, 128), face]
    run = run_tracking(out, frames)
    assert run.detected == [True] * 4
    assert [[track_id for track_id, _ in tracks] for tracks in run.tracks] == [[1], [1], [], [2]]
    assert run.counts == {"entries": 2, "exits": 1, "in_view": 1}
    ppm = str(write_ppm(tmp_path / "face.ppm", face))
    for args, message in ((["--track", ppm, ppm, "--detect-every", "3"], "edgetvm face build --landmarks"),
                          ([ppm, "--mesh", str(tmp_path / "points.bin")], "edgetvm face build --landmarks"),
                          ([ppm, "--iris", str(tmp_path / "irises.bin")], "edgetvm face build --landmarks"),
                          ([ppm, "--segment", str(tmp_path / "mask.pgm")], "edgetvm face build --segmenter general")):
        done = subprocess.run([str(out / "face_demo"), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr and not done.stdout

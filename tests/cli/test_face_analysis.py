"""``edgetvm face landmarks|attributes|track`` as a user runs them (a subprocess)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from edgetvm.zoo import fetch

from ..face.sequences import SCRIPT, make_sequence
from .conftest import edgetvm

# The detector size the face tests compile (tests/face/conftest.py: CI_DETECTOR_SIZE): one compile-cache entry.
SMALL = ["--detector-size", "160x160", "--threads", "1"]


def test_landmarks_json_and_picture(tmp_path):
    out = tmp_path / "mesh.png"
    done = edgetvm("face", "landmarks", fetch("astronaut"), "--json", "-o", out, *SMALL)
    assert done.returncode == 0, done.stderr
    faces = json.loads(done.stdout)["faces"]
    assert len(faces) == 1
    mesh = faces[0]["mesh"]
    assert len(mesh["points"]) == 468 and mesh["presence"] > 0.99 and set(mesh["pose"]) == {"yaw", "pitch", "roll"}
    assert set(faces[0]["iris"]) == {"right", "left"} and all(i["radius"] > 1 for i in faces[0]["iris"].values())
    with Image.open(out) as im:
        drawn = np.asarray(im.convert("RGB")).astype(int)
    original = np.asarray(Image.open(fetch("astronaut")).convert("RGB")).astype(int)
    # The points are drawn in cyan where the mesh says.
    x, y = (int(round(v)) for v in mesh["points"][1][:2])
    assert (drawn[y, x] == [0, 255, 255]).all() and (original[y, x] != [0, 255, 255]).any()
    text = edgetvm("face", "landmarks", fetch("astronaut"), *SMALL)
    assert "face 0: 468 points" in text.stdout and "yaw" in text.stdout and "left iris" in text.stdout


def test_attributes_edgetvm_agrees_with_the_reference_engines(tmp_path):
    out = tmp_path / "attributes.png"
    ours = edgetvm("face", "attributes", fetch("grace_hopper"), "--json", "-o", out, *SMALL)
    reference = edgetvm("face", "attributes", fetch("grace_hopper"), "--json", "--engine", "onnxruntime", *SMALL)
    assert ours.returncode == 0 and reference.returncode == 0, ours.stderr + reference.stderr
    a, b = (json.loads(done.stdout)["faces"][0]["attributes"] for done in (ours, reference))
    assert a["gender"] == b["gender"] and abs(a["age"] - b["age"]) <= 1
    assert a["eyes"]["right"]["open"] and a["eyes"]["left"]["open"] and not a["mouth"]["open"]
    assert out.stat().st_size > 0


def test_track_counts_a_folder_of_frames(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, frame in enumerate(make_sequence().frames):
        Image.fromarray(frame).save(frames / f"frame{t:03d}.png")
    annotated = tmp_path / "annotated"
    done = edgetvm("face", "track", frames, "--json", "-o", annotated, "--detect-every", "3", *SMALL)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["entries"] == len(SCRIPT) and result["exits"] == 1 and result["in_view"] == 1
    ids = [sorted(t["id"] for t in f["tracks"]) for f in result["frames"]]
    assert ids[0] == [1] and ids[6] == [1, 2] and ids[-1] == [2]
    assert sorted(p.name for p in annotated.iterdir()) == [f"frame{t:03d}.png" for t in range(len(ids))]


def test_track_errors_name_the_folder_and_the_flag(tmp_path):
    done = edgetvm("face", "track", tmp_path / "missing")
    assert done.returncode == 2 and "not a folder" in done.stderr, done.stderr
    done = edgetvm("face", "track", tmp_path, "--detect-every", "0")
    assert done.returncode == 2 and "--detect-every" in done.stderr and "give 1 or more" in done.stderr, done.stderr

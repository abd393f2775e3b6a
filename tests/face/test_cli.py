"""`edgetvm face detect|verify|embed|ppm`, run in-process (the compiled networks are shared with the
pipeline tests of the same session)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edgetvm.cli import main
from edgetvm.face import write_ppm
from edgetvm.face.evaluation import augment
from edgetvm.zoo import fetch

# The detector size of the session's compiled pipeline (conftest.CI_DETECTOR_SIZE): no extra compile.
CI_SIZE = ["--detector-size", "160x160", "--threads", "1"]


def test_detect_draws_and_prints(tmp_path, capsys, tvm_pipeline):
    out = tmp_path / "annotated.png"
    assert main(["face", "detect", str(fetch("grace_hopper")), "--out", str(out), "--json", *CI_SIZE]) == 0
    faces = json.loads(capsys.readouterr().out)["faces"]
    assert len(faces) == 1 and faces[0]["score"] > 0.95 and len(faces[0]["landmarks"]) == 5
    with Image.open(out) as im:
        drawn = np.asarray(im.convert("RGB"))
    x1, y1, x2, y2 = (int(round(v)) for v in faces[0]["box"])
    # The box outline is drawn in green on the picture.
    assert (drawn[y1, x1:x2] == [0, 255, 0]).all(axis=1).mean() > 0.9


def test_verify_same_and_different(tmp_path, capsys, tvm_pipeline, astronaut):
    variant = tmp_path / "variant.png"
    Image.fromarray(augment(astronaut, np.random.default_rng(5))[0]).save(variant)
    assert main(["face", "verify", str(fetch("astronaut")), str(variant), *CI_SIZE]) == 0
    assert "same person" in capsys.readouterr().out
    assert main(["face", "verify", str(fetch("astronaut")), str(fetch("grace_hopper")), "--json",
                 "--engine", "onnxruntime"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["same_person"] is False and result["similarity"] < result["threshold"]


def test_embed_saves_npy_and_ppm_roundtrip(tmp_path, capsys, tvm_pipeline, ort_pipeline_ci, astronaut):
    ppm = tmp_path / "astronaut.ppm"
    assert main(["face", "ppm", str(fetch("astronaut")), str(ppm)]) == 0
    npy = tmp_path / "emb.npy"
    assert main(["face", "embed", str(ppm), "-o", str(npy), *CI_SIZE]) == 0
    assert "embedding[128]" in capsys.readouterr().out
    emb = np.load(npy)
    assert emb.shape == (1, 128)
    assert float(emb[0] @ ort_pipeline_ci.embed(astronaut)) > 0.9999


def test_cli_errors(tmp_path, capsys):
    assert main(["face", "detect", str(tmp_path / "nope.jpg")]) == 2
    assert "no such image" in capsys.readouterr().err
    blank = tmp_path / "blank.ppm"
    write_ppm(blank, np.full((64, 64, 3), 200, np.uint8))
    assert main(["face", "embed", str(blank), "--engine", "onnxruntime"]) == 2
    assert "no face found" in capsys.readouterr().err


def test_enroll_identify_gallery(tmp_path, capsys, tvm_pipeline, astronaut):
    """enroll -> identify (text, --json, -o) -> gallery --export / --remove, with the compiled networks."""
    db, board = tmp_path / "people.db", tmp_path / "people.gal"
    variant = tmp_path / "variant.png"
    Image.fromarray(augment(astronaut, np.random.default_rng(3))[0]).save(variant)
    # --threshold skips the calibration (tests/face/test_identification.py covers it).
    assert main(["face", "enroll", str(db), "astronaut", str(fetch("astronaut")), "--threshold", "0.45", *CI_SIZE]) == 0
    assert main(["face", "enroll", str(db), "grace", str(fetch("grace_hopper")), "--json", *CI_SIZE]) == 0
    out = capsys.readouterr().out
    assert "enrolled 'astronaut' (1 sample(s))" in out and json.loads(out.splitlines()[-1])["threshold"] == pytest.approx(0.45)
    picture = tmp_path / "who.png"
    assert main(["face", "identify", str(db), str(variant), "--top", "2", "-o", str(picture), *CI_SIZE]) == 0
    assert "face 0: astronaut  (top 2: astronaut" in capsys.readouterr().out and picture.stat().st_size > 0
    assert main(["face", "gallery", str(db), "--export", str(board)]) == 0
    assert f"wrote {board}" in capsys.readouterr().out
    assert main(["face", "identify", str(board), str(fetch("grace_hopper")), "--json", *CI_SIZE]) == 0
    (face,) = json.loads(capsys.readouterr().out)["faces"]
    assert face["identity"] == "grace" and [m["name"] for m in face["matches"]] == ["grace", "astronaut"]
    assert main(["face", "gallery", str(board), "--remove", "grace", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identities"] == [{"name": "astronaut", "samples": 1}]
    assert main(["face", "identify", str(board), str(fetch("grace_hopper")), *CI_SIZE]) == 0
    assert "face 0: unknown" in capsys.readouterr().out


def test_enroll_refusal_says_how_to_override(tmp_path, capsys):
    blurred = tmp_path / "blurred.png"
    Image.open(fetch("astronaut")).filter(ImageFilter.GaussianBlur(2)).save(blurred)
    args = ["face", "enroll", str(tmp_path / "g.gal"), "astronaut", str(blurred), "--threshold", "0.45",
            "--engine", "onnxruntime"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "blurred" in err and "--min-quality 0" in err and not (tmp_path / "g.gal").exists()
    assert main([*args, "--min-quality", "0"]) == 0
    assert main(["face", "gallery", str(tmp_path / "missing.gal")]) == 2
    assert "no such gallery" in capsys.readouterr().err

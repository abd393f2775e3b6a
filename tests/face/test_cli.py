"""`edgetvm face detect|verify|embed|ppm`, run in-process (the compiled networks are shared with the
pipeline tests of the same session)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

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

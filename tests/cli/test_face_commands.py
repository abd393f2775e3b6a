"""``edgetvm face ...`` as a user runs it (a subprocess); onnxruntime runs the networks where compiling them would
only cost time."""

from __future__ import annotations

import json
import re

import pytest

from edgetvm.face.image import score_label
from edgetvm.zoo import fetch

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


def test_build_makes_the_sface_recognizer_int8_by_default(tmp_path):
    # A host bundle at a small detector size: what is checked is the recognizer's precision, not the board.
    out = tmp_path / "bundle"
    done = edgetvm("face", "build", "--target", "host", "--detector-size", "64x64", "-o", out, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "recognizer sface: int8" in done.stdout and "--fp32" in done.stdout
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["compile_options"] == {"recognizer": {"quantize": "int8"}}
    recognizer = json.loads((out / "recognizer.so.json").read_text())
    detector = json.loads((out / "detector.so.json").read_text())
    assert "Quantize(int8)" in recognizer["passes"] and "Quantize(int8)" not in detector["passes"]
    done = edgetvm("face", "build", "--fp32", "--quantize", "int8", "-o", tmp_path / "no")
    assert done.returncode == 2 and "--fp32 keeps both networks float" in done.stderr

"""The one sample reader (edgetvm/data.py): images become inputs as the model wants them.

The preprocessing is checked against an independent numpy reference (the channel order, mean,
scale and layout written out by hand; Pillow only resizes), and through the CLI: the flags of
``compile``/``prune``/``run``, a zoo model's own preprocessing, and the warning a folder of images
gets when nobody said how the model wants them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import edgetvm
from edgetvm.artifact import sidecar_path
from edgetvm.data import Preprocess, Preprocessed, UnknownPreprocessingWarning, read_samples
from edgetvm.errors import InputError
from edgetvm.specs import TensorSpec
from edgetvm.zoo import PREPROCESSING

EDGETVM = str(Path(sys.executable).with_name("edgetvm"))
RETINAFACE = PREPROCESSING["retinaface"]


def cli(*args, cwd):
    return subprocess.run([EDGETVM, *args], capture_output=True, text=True, cwd=cwd, timeout=150)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A folder of three small RGB photographs-like images (smooth gradients plus noise)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    pictures = []
    for i in range(3):
        yy, xx = np.mgrid[0:40, 0:50]
        base = np.stack([xx * 5, yy * 6, (xx + yy) * 3], axis=-1) + rng.integers(0, 40, (40, 50, 3))
        picture = np.clip(base + 20 * i, 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(folder / f"img{i}.png")
        pictures.append(picture)
    return folder, pictures


def resized(picture: np.ndarray, size: tuple[int, int], resample=Image.Resampling.BILINEAR) -> np.ndarray:
    return np.asarray(Image.fromarray(picture).resize(size, resample), dtype=np.float64)


def test_retinaface_preprocessing_matches_numpy_reference(images):
    folder, pictures = images
    spec = TensorSpec("input", (1, 3, 24, 32), "float32")
    samples = read_samples(Preprocessed(folder, Preprocess.coerce(RETINAFACE)), [spec])
    for (got,), picture in zip(samples, pictures):
        bgr = resized(picture, (32, 24))[:, :, [2, 1, 0]]
        expected = (bgr - np.array([104.0, 117.0, 123.0])).transpose(2, 0, 1)[None]
        assert got.dtype == np.float32 and got.shape == (1, 3, 24, 32)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_nhwc_scaled_preprocessing_and_std(images):
    folder, pictures = images
    spec = TensorSpec("x", (1, 16, 16, 3), "float32")
    blazeface = read_samples(folder, [spec], preprocess=Preprocess.coerce(PREPROCESSING["blazeface"]))
    expected = (resized(pictures[0], (16, 16)) - 127.5) / 127.5
    np.testing.assert_allclose(blazeface[0][0][0], expected, atol=1e-5)
    assert blazeface[0][0].min() >= -1 and blazeface[0][0].max() <= 1
    # std divides, scale multiplies: the two spellings of one preprocessing agree.
    by_std = read_samples(folder, [spec], preprocess=Preprocess.coerce({"mean": 127.5, "std": 127.5}))
    np.testing.assert_allclose(by_std[0][0], blazeface[0][0], atol=1e-6)
    per_channel = Preprocess.from_options(mean=(1, 2, 3), std=(2, 4, 8), channel_order="bgr", layout="nchw")
    assert per_channel.scale == (0.5, 0.25, 0.125) and per_channel.layout == "nchw"


def test_images_without_preprocessing_warn_and_arrays_do_not(images, tmp_path):
    folder, _ = images
    spec = TensorSpec("x", (1, 3, 8, 8), "float32")
    with pytest.warns(UnknownPreprocessingWarning, match="--mean.*--bgr"):
        read_samples(folder, [spec])
    np.save(tmp_path / "a.npy", np.zeros((1, 3, 8, 8), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_samples(tmp_path, [spec])
        read_samples(folder, [spec], preprocess=Preprocess())


@pytest.mark.parametrize("bad, match", [({"mean": (1, 2)}, "one number or three"), ({"scale": 0}, "zero scale"),
                                        ({"channel_order": "grb"}, "'rgb' or 'bgr'"), ({"layout": "chw"}, "nchw"),
                                        ({"scale": 1, "std": 2}, "not both"), ({"norm": 1}, "unknown keys")])
def test_bad_preprocessing_is_refused(bad, match):
    with pytest.raises(InputError, match=match):
        Preprocess.coerce(bad)


def affine_model() -> onnx.ModelProto:
    """y = 1x1 conv of x: its output shows exactly what the input was."""
    w = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.25, -1]], np.float32).reshape(4, 3, 1, 1)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "affine",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_run_on_an_image_uses_flags_then_the_compiled_preprocessing(images, tmp_path):
    folder, pictures = images
    model_path = tmp_path / "affine.onnx"
    onnx.save(affine_model(), model_path)
    expected_x = ((resized(pictures[1], (12, 12))[:, :, ::-1] - [104, 117, 123]) * 0.5).transpose(2, 0, 1)[None]
    expected = edgetvm.load(edgetvm.compile(model_path, "host").export(tmp_path / "plain.so"))(
        expected_x.astype(np.float32))

    # Flags on `run`.
    proc = cli("run", str(tmp_path / "plain.so"), "-i", str(folder / "img1.png"), "--bgr", "--mean", "104,117,123",
               "--scale", "0.5", "-o", str(tmp_path / "flags.npz"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "flags.npz")["y"], expected, rtol=1e-5, atol=1e-4)

    # The preprocessing given at compile time travels in the sidecar; `run` uses it without flags.
    proc = cli("compile", str(model_path), "--bgr", "--mean", "104,117,123", "--std", "2", "-o",
               str(tmp_path / "pre.so"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(sidecar_path(tmp_path / "pre.so").read_text())["preprocess"]["channel_order"] == "bgr"
    proc = cli("run", str(tmp_path / "pre.so"), "-i", str(folder / "img1.png"), "-o", str(tmp_path / "side.npz"),
               cwd=tmp_path)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "side.npz")["y"], expected, rtol=1e-5, atol=1e-4)

    # Neither: raw RGB, with the warning that names the flags.
    proc = cli("run", str(tmp_path / "plain.so"), "-i", str(folder / "img1.png"), cwd=tmp_path)
    assert proc.returncode == 0 and "edgetvm: warning:" in proc.stderr and "--mean" in proc.stderr, proc.stderr


def test_calibration_folder_of_images_warns_through_the_cli(images, tmp_path):
    folder, _ = images
    model_path = tmp_path / "affine.onnx"
    onnx.save(affine_model(), model_path)
    proc = cli("compile", str(model_path), "--quantize", "int8", "--calib", str(folder), "-o", str(tmp_path / "q.so"),
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("edgetvm: warning:")]
    assert len(warning) == 1 and "--bgr" in warning[0] and "--layout" in warning[0], proc.stderr
    # int8 and the clustering's refit both take the calibration: one read, one warning.
    proc = cli("compile", str(model_path), "--quantize", "int8", "--cluster", "4", "--calib", str(folder), "-o",
               str(tmp_path / "qc.so"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sum(line.startswith("edgetvm: warning:") for line in proc.stderr.splitlines()) == 1, proc.stderr
    proc = cli("compile", str(model_path), "--quantize", "int8", "--calib", str(folder), "--rgb", "-o",
               str(tmp_path / "q2.so"), cwd=tmp_path)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def test_bad_preprocessing_flag_is_one_line(tmp_path):
    model_path = tmp_path / "affine.onnx"
    onnx.save(affine_model(), model_path)
    proc = cli("compile", str(model_path), "--mean", "104,117", "-o", str(tmp_path / "m.so"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--mean '104,117'" in proc.stderr, proc.stderr

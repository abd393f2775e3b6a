"""Person segmentation (face/segmentation.py): the compiled selfie segmenters against LiteRT with the
numpy custom op on real photos, the background effects' arithmetic, `edgetvm face segment`, and the
board's C twin (face/c/face_seg.c) built for the host against the Python side."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgetvm.cli import main
from edgetvm.errors import InputError
from edgetvm.face import SelfieSegmenter, blur_background, replace_background
from edgetvm.face.segmentation import (MASK_THRESHOLD, SEGMENTERS, background_picture, composite, mask_to_image,
                                       segmenter_input)
from edgetvm.zoo import fetch
from tests.frontends.mediapipe_reference import litert_with_numpy_custom_ops

from .conftest import build_host_library


@pytest.fixture(scope="module")
def segmenters():
    """Each model compiled once for the module (one thread: the machine is shared)."""
    return {model: SelfieSegmenter(model, num_threads=1) for model in ("general", "landscape")}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("model, image_name", [("general", "astronaut"), ("general", "grace_hopper"),
                                               ("landscape", "grace_hopper")])
def test_mask_matches_litert_reference(segmenters, model, image_name, request):
    image = request.getfixturevalue("grace" if image_name == "grace_hopper" else image_name)
    seg = segmenters[model]
    result = seg.segment(image)
    x = seg.input_tensor(image)
    (reference,) = litert_with_numpy_custom_ops(fetch(seg.net.name), x).values()
    # The network's own output first: the compiled sigmoid map against LiteRT's.
    np.testing.assert_allclose(seg.probabilities(x), reference[0, :, :, 0], atol=1e-4, rtol=0)
    expected = mask_to_image(reference[0, :, :, 0], image.shape[1], image.shape[0])
    assert result.mask.shape == image.shape[:2] and result.mask.dtype == np.float32
    person = result.person()
    assert iou(person, expected >= MASK_THRESHOLD) >= 0.99
    # A portrait: the person covers a large part of the picture, but not all of it.
    assert 0.3 < person.mean() < 0.8
    assert result.to_json()["person_fraction"] == round(float(person.mean()), 5)


def test_mask_resize_is_bilinear_with_half_pixel_centres():
    small = np.array([[0.0, 1.0]], np.float32)
    # Output pixel centres 0.5, 1.5, 2.5, 3.5 map to source x = 0.25 * ... - 0.5: -0.25, 0.25, 0.75, 1.25.
    np.testing.assert_allclose(mask_to_image(small, 4, 1)[0], [0.0, 0.25, 0.75, 1.0])


def test_composite_blends_with_the_soft_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    mask = np.zeros((6, 8), np.float32)
    mask[:, :3] = 1.0
    mask[:, 3] = 0.25
    out = replace_background(image, mask, "#00b140")
    np.testing.assert_array_equal(out[:, :3], image[:, :3])
    np.testing.assert_array_equal(out[:, 4:], np.broadcast_to([0, 177, 64], (6, 4, 3)))
    expected = np.rint(0.25 * image[:, 3].astype(np.float64) + 0.75 * np.array([0, 177, 64]))
    np.testing.assert_array_equal(out[:, 3], expected)
    with pytest.raises(InputError, match="does not cover"):
        composite(image, mask[:, :4], image)


def test_blur_keeps_the_person_and_softens_the_background(astronaut):
    mask = np.zeros(astronaut.shape[:2], np.float32)
    mask[:, :256] = 1.0
    out = blur_background(astronaut, mask, radius=6.0)
    np.testing.assert_array_equal(out[:, :256], astronaut[:, :256])
    detail = np.abs(np.diff(astronaut[:, 300:].astype(np.float64), axis=1)).mean()
    blurred_detail = np.abs(np.diff(out[:, 300:].astype(np.float64), axis=1)).mean()
    assert blurred_detail < 0.5 * detail
    with pytest.raises(InputError, match="positive"):
        blur_background(astronaut, mask, radius=0)


def test_background_image_covers_the_picture_keeping_its_aspect(astronaut):
    # A 512x512 background for a 200x100 picture: scaled to 200x200, the middle 100 rows kept.
    picture = background_picture(astronaut, 200, 100)
    assert picture.shape == (100, 200, 3)
    scaled = np.asarray(Image.fromarray(astronaut).resize((200, 200), Image.Resampling.BILINEAR))
    assert np.abs(picture.astype(int) - scaled[50:150].astype(int)).mean() < 2.0
    with pytest.raises(InputError, match="neither an image file nor a colour"):
        background_picture("no-such-colour", 4, 4)
    with pytest.raises(InputError, match="in 0..255"):
        background_picture((0, 300, 0), 4, 4)


def test_cli_segment_writes_mask_and_replaced_background(tmp_path, segmenters, grace):
    mask_path, out_path = tmp_path / "mask.png", tmp_path / "replaced.png"
    background = str(fetch("astronaut"))
    run = subprocess.run([sys.executable, "-m", "edgetvm.cli.main", "face", "segment", str(fetch("grace_hopper")),
                          "-o", str(mask_path), "--background", background, "--composite", str(out_path),
                          "--json", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["mask"] == str(mask_path) and report["composite"] == str(out_path)
    result = segmenters["general"].segment(grace)
    with Image.open(mask_path) as im:
        assert im.mode == "L"
        written = np.asarray(im)
    np.testing.assert_array_equal(written, np.rint(result.mask * 255).astype(np.uint8))
    with Image.open(out_path) as im:
        replaced = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(replaced, replace_background(grace, result.mask, background))
    assert report["person_fraction"] == result.to_json()["person_fraction"]


@pytest.mark.parametrize("flags, message", [
    (["--blur"], "--composite PATH"),
    (["--composite", "x.png"], "add --blur or --background"),
    (["--blur-radius", "3"], "add --blur"),
    (["--background", "not-a-colour", "--composite", "x.png"], "neither an image file nor a colour"),
])
def test_cli_segment_flag_checks_fail_before_compiling(tmp_path, capsys, flags, message):
    assert main(["face", "segment", str(fetch("astronaut")), "-o", str(tmp_path / "m.png"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


@pytest.fixture(scope="module")
def seg_clib(tmp_path_factory):
    lib = ctypes.CDLL(str(build_host_library(tmp_path_factory, "face_seg", "face_seg.c", "face_proc.c")))
    lib.face_seg_person_fraction.restype = ctypes.c_float
    return lib


def _ptr(a: np.ndarray):
    assert a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.c_void_p)


@pytest.mark.parametrize("model", ["general", "landscape"])
def test_c_input_and_mask_match_python(seg_clib, grace, model):
    net = SEGMENTERS[model]
    w, h = net.size
    x = np.empty((1, h, w, 3), np.float32)
    seg_clib.face_seg_input(_ptr(grace), grace.shape[1], grace.shape[0], w, h, _ptr(x))
    np.testing.assert_array_equal(x, segmenter_input(net, grace))
    # A smooth probability map with values past both ends, as float rounding could leave them.
    prob = np.ascontiguousarray(np.linspace(-0.01, 1.01, w * h, dtype=np.float32).reshape(h, w))
    mask = np.empty(grace.shape[:2], np.float32)
    seg_clib.face_seg_mask(_ptr(prob), w, h, grace.shape[1], grace.shape[0], _ptr(mask))
    np.testing.assert_array_equal(mask, mask_to_image(prob, grace.shape[1], grace.shape[0]))
    fraction = seg_clib.face_seg_person_fraction(_ptr(mask), grace.shape[1], grace.shape[0], ctypes.c_float(0.5))
    assert fraction == pytest.approx(float((mask >= 0.5).mean()), abs=1e-6)


def test_c_composite_and_grey_match_python(seg_clib, astronaut, grace):
    image = np.ascontiguousarray(astronaut[:300, :200])
    h, w = image.shape[:2]
    mask = np.ascontiguousarray(np.random.default_rng(1).random((h, w), dtype=np.float32))
    background = np.ascontiguousarray(background_picture(grace, w, h))
    out = np.empty_like(image)
    seg_clib.face_seg_composite(_ptr(image), _ptr(mask), _ptr(background), w, h, _ptr(out))
    np.testing.assert_array_equal(out, composite(image, mask, background))
    color = (ctypes.c_uint8 * 3)(0, 177, 64)
    seg_clib.face_seg_composite_color(_ptr(image), _ptr(mask), color, w, h, _ptr(out))
    np.testing.assert_array_equal(out, replace_background(image, mask, "#00b140"))
    grey = np.empty((h, w), np.uint8)
    seg_clib.face_seg_mask_to_grey(_ptr(mask), w, h, _ptr(grey))
    np.testing.assert_array_equal(grey, np.rint(mask * 255).astype(np.uint8))

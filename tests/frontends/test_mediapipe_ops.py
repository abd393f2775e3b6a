"""MediaPipe's custom ops, each in a one-op TFLite model, against the independent numpy references."""

from __future__ import annotations

import numpy as np
import pytest

import edgetvm
from edgetvm.errors import UnsupportedModelError
from edgetvm.frontends import load_model
from edgetvm.frontends.mediapipe_ops import transpose_conv_padding

from . import mediapipe_reference as ref
from .checks import relative_error


def compile_and_run(model: bytes, *inputs: np.ndarray) -> np.ndarray:
    (out,) = edgetvm.compile(model, "host").run_dict(*inputs).values()
    return out


# (input HxW, kernel HxW, stride HxW, SAME): the segmenters' 2x2 stride-2 upsampling, a SAME case whose
# odd padding total crops unevenly, and a VALID stride-1 case.
@pytest.mark.parametrize("size, kernel, stride, same", [((8, 8), (2, 2), (2, 2), True),
                                                        ((5, 7), (3, 3), (2, 2), True),
                                                        ((4, 6), (3, 2), (1, 1), False)])
def test_transpose_conv_bias_matches_numpy(rng, size, kernel, stride, same):
    x = rng.standard_normal((1, *size, 6)).astype(np.float32)
    w = rng.standard_normal((4, *kernel, 6)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out_h = transpose_conv_padding(size[0], kernel[0], stride[0], same)[0]
    out_w = transpose_conv_padding(size[1], kernel[1], stride[1], same)[0]
    model = ref.custom_op("Convolution2DTransposeBias", 1, ref.transpose_conv_options(same, stride[1], stride[0]),
                          {"x": x}, {"w": w, "b": b}, ("y", (1, out_h, out_w, 4)))
    got = compile_and_run(model, x)
    expected = ref.transpose_conv_bias(x, w, b, stride, same)
    assert got.shape == expected.shape
    assert relative_error(got, expected) < 1e-5


def crop_matrix(angle: float, scale: tuple[float, float], centre: tuple[float, float], out: int) -> np.ndarray:
    """A FaceMesh-like crop: output pixel (x, y) -> centre + R(angle) diag(scale) ((x, y) - out / 2)."""
    m = np.eye(4, dtype=np.float32)
    m[:2, :2] = ref.rotation(angle) @ np.diag(scale)
    m[:2, 3] = np.asarray(centre) - m[:2, :2] @ np.array([out / 2, out / 2])
    return m[None]


# A crop inside the map, one that reaches past its corner (zeros there), and the identity.
@pytest.mark.parametrize("matrix", [crop_matrix(0.4, (0.6, 0.5), (6.0, 5.0), 8),
                                    crop_matrix(-1.1, (1.3, 1.7), (9.5, 1.0), 8),
                                    np.eye(4, dtype=np.float32)[None]])
def test_transform_tensor_bilinear_matches_numpy(rng, matrix):
    data = rng.standard_normal((1, 12, 10, 3)).astype(np.float32)
    model = ref.custom_op("TransformTensorBilinear", 2, ref.flex({"output_height": 8, "output_width": 8}),
                          {"data": data, "matrix": matrix}, {}, ("crop", (1, 8, 8, 3)))
    got = compile_and_run(model, data, matrix)
    expected = ref.transform_tensor_bilinear(data, matrix, 8, 8)
    assert relative_error(got, expected) < 1e-5
    if np.array_equal(matrix[0], np.eye(4)):
        # Pixel centres line up: the identity copies the top-left 8x8 block.
        np.testing.assert_allclose(got, data[:, :8, :8], atol=1e-6)


# FaceMesh's options (scale 1.5, 16x16, target 0, an odd subset count as in its eye crops) and a
# variant with a target rotation and unequal scales.
@pytest.mark.parametrize("options", [
    {"left_rotation_idx": 3, "right_rotation_idx": 17, "output_height": 16, "output_width": 16, "scale_x": 1.5,
     "scale_y": 1.5, "subset_idxs": [3, 5, 8, 13, 17, 21, 2], "target_rotation_radians": 0.0},
    {"left_rotation_idx": 20, "right_rotation_idx": 4, "output_height": 20, "output_width": 24, "scale_x": 1.2,
     "scale_y": 2.0, "subset_idxs": [0, 1, 4, 9, 20, 25], "target_rotation_radians": 0.3}])
def test_landmarks_to_transform_matrix_matches_numpy(rng, options):
    landmarks = (rng.random((1, 30, 3)) * 190).astype(np.float32)
    model = ref.custom_op("Landmarks2TransformMatrix", 2, ref.flex(options), {"landmarks": landmarks}, {},
                          ("matrix", (1, 4, 4)))
    got = compile_and_run(model, landmarks)
    expected = ref.landmarks_to_transform_matrix(landmarks, options)
    assert relative_error(got, expected) < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_transform_landmarks_matches_numpy(rng, dims):
    landmarks = rng.standard_normal((1, 11, dims)).astype(np.float32) * 8
    matrix = crop_matrix(0.7, (1.5, 0.8), (90.0, 70.0), 16)
    model = ref.custom_op("TransformLandmarks", 2, b"", {"landmarks": landmarks, "matrix": matrix}, {},
                          ("moved", (1, 11, dims)))
    got = compile_and_run(model, landmarks, matrix)
    assert relative_error(got, ref.transform_landmarks(landmarks, matrix)) < 1e-6
    if dims == 3:
        np.testing.assert_array_equal(got[..., 2], landmarks[..., 2])


def test_unsupported_version_and_bad_options_name_the_op():
    landmarks = np.zeros((1, 4, 2), np.float32)
    matrix = np.eye(4, dtype=np.float32)[None]
    v1 = ref.custom_op("TransformLandmarks", 1, ref.flex({"dimensions": 2, "scale": 1.0}),
                       {"landmarks": landmarks, "matrix": matrix}, {}, ("moved", (1, 4, 2)))
    with pytest.raises(UnsupportedModelError, match=r"TransformLandmarks producing 'moved': version 1") as info:
        load_model(v1)
    assert info.value.unsupported == {"CUSTOM:TransformLandmarks": ["moved"]}

    x = np.zeros((1, 4, 4, 2), np.float32)
    conv = ref.custom_op("Convolution2DTransposeBias", 1, ref.transpose_conv_options(True, 0, 2), {"x": x},
                         {"w": np.zeros((1, 2, 2, 2), np.float32), "b": np.zeros(1, np.float32)}, ("y", (1, 8, 8, 1)))
    with pytest.raises(UnsupportedModelError, match=r"Convolution2DTransposeBias producing 'y'.*stride_w=0"):
        load_model(conv)

    no_size = ref.custom_op("TransformTensorBilinear", 2, ref.flex({"output_height": 4}),
                            {"data": x, "matrix": matrix}, {}, ("crop", (1, 4, 4, 2)))
    with pytest.raises(UnsupportedModelError, match=r"TransformTensorBilinear producing 'crop'.*'output_width'"):
        load_model(no_size)

    # Custom ops with no converter are still refused together, by name.
    argmax = ref.custom_op("MaxPoolingWithArgmax2D", 1, b"", {"x": x}, {}, ("pooled", (1, 2, 2, 2)))
    with pytest.raises(UnsupportedModelError, match=r"CUSTOM:MaxPoolingWithArgmax2D: pooled") as info:
        load_model(argmax)
    assert "TransformTensorBilinear" in str(info.value)

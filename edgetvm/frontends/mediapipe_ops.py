"""MediaPipe's TFLite custom ops, converted to Relax at import.

MediaPipe registers four custom ops with its TFLite interpreter that its own models use and that
LiteRT cannot run (google/mediapipe, ``mediapipe/util/tflite/operations/``):

- ``Convolution2DTransposeBias`` (selfie segmentation): a transposed convolution with a bias,
  ``y = conv2d_transpose(x, w) + b``; its options are a raw ``TfLiteTransposeConvParams`` struct
  (int32 padding, stride_w, stride_h), not a flexbuffer.
- ``Landmarks2TransformMatrix`` v2, ``TransformTensorBilinear`` v2, ``TransformLandmarks`` v2
  (FaceMesh with attention): a face region of interest from landmarks, the feature map resampled
  into it, and landmarks found in the crop mapped back. Options are flexbuffer maps.

Each converter takes TVM's TFLite operator converter (``converter``) and the operator, and returns the
Relax expression of the op's single output. The three geometric ops are TE computations
(``bb.emit_te``), so they lower like any legalized Relax op on every target.
"""

from __future__ import annotations

import math
import struct
from typing import Callable

import numpy as np

from ..errors import UnsupportedModelError

# kTfLitePaddingSame / kTfLitePaddingValid of TFLite's C API (builtin_op_data.h).
TFLITE_PADDING_SAME = 1
TFLITE_PADDING_VALID = 2
# TensorType.FLOAT32 of the TFLite schema.
TFLITE_FLOAT32 = 0


def _output_name(converter, op) -> str:
    tensor = converter.get_output_tensors(op)[0].tensor
    return (tensor.Name() or b"?").decode("utf-8")


def _refuse(converter, op, code: str, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"custom op {code} producing {_output_name(converter, op)!r}: {why}. edgetvm follows the op as MediaPipe "
        f"0.10 defines it: check that the model comes from MediaPipe 0.10 and is not corrupt",
        {f"CUSTOM:{code}": [_output_name(converter, op)]})


def _flex_options(converter, op, code: str) -> dict:
    """The operator's flexbuffer-encoded custom options as a dict (empty when it has none)."""
    from flatbuffers import flexbuffers

    if not op.CustomOptionsLength():
        return {}
    try:
        options = flexbuffers.Loads(bytes(op.CustomOptionsAsNumpy()))
    except Exception as exc:  # noqa: BLE001 - the flexbuffer reader raises IndexError, ValueError, ...
        raise _refuse(converter, op, code, f"its custom options are not a readable flexbuffer ({exc})") from None
    if not isinstance(options, dict):
        raise _refuse(converter, op, code, "its custom options are not a flexbuffer map")
    return options


def _required(converter, op, code: str, options: dict, key: str, kind: type):
    if key not in options:
        raise _refuse(converter, op, code, f"its custom options lack {key!r}")
    try:
        return kind(options[key])
    except (TypeError, ValueError):
        raise _refuse(converter, op, code,
                      f"custom option {key!r} = {options[key]!r} is not a {kind.__name__}") from None


def _version(converter, op) -> int:
    return int(converter.model.OperatorCodes(op.OpcodeIndex()).Version())


def _operands(converter, op, code: str, version: int | None, names: tuple[str, ...]) -> list:
    """The op's input tensors, after checking its version (None: any) and their count against ``names``."""
    found = _version(converter, op)
    if version is not None and found != version:
        raise _refuse(converter, op, code, f"version {found} is not supported (only version {version}, "
                                           f"the one MediaPipe 0.10's models use)")
    inputs = converter.get_input_tensors(op)
    if len(inputs) != len(names):
        raise _refuse(converter, op, code, f"it has {len(inputs)} inputs, expected {len(names)} ({', '.join(names)})")
    for name, tensor in zip(names, inputs):
        if tensor.tensor.Type() != TFLITE_FLOAT32:
            raise _refuse(converter, op, code,
                          f"its {name} input is not float32 (MediaPipe defines the op on float32 only)")
    return inputs


def _shape(converter, tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in converter.get_tensor_shape(tensor))


def transpose_conv_padding(in_size: int, kernel: int, stride: int, same: bool) -> tuple[int, int, int]:
    """(output size, padding before, padding after) of one spatial axis of Convolution2DTransposeBias.

    out = stride * (in - 1) + kernel - pad_total, with pad_total = max(0, kernel - (in - 1) % stride - 1)
    for SAME and 0 for VALID; MediaPipe crops pad_total // 2 before and the rest after.
    """
    total = max(0, kernel - (in_size - 1) % stride - 1) if same else 0
    return stride * (in_size - 1) + kernel - total, total // 2, total - total // 2


def convert_transpose_conv_bias(converter, op):
    """``Convolution2DTransposeBias``: y = conv2d_transpose(x, w) + b with w in OHWI and b per output channel."""
    from tvm import relax

    code = "Convolution2DTransposeBias"
    data, weights, bias = _operands(converter, op, code, None, ("data", "weights", "bias"))
    raw = bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""
    if len(raw) < 12:
        raise _refuse(converter, op, code, f"its custom options hold {len(raw)} bytes, expected at least 12 "
                                           f"(padding, stride_w, stride_h as int32)")
    padding, stride_w, stride_h = struct.unpack("<3i", raw[:12])
    if padding not in (TFLITE_PADDING_SAME, TFLITE_PADDING_VALID) or stride_w < 1 or stride_h < 1:
        raise _refuse(converter, op, code, f"options padding={padding}, stride_w={stride_w}, stride_h={stride_h} "
                                           f"are invalid (padding 1=SAME or 2=VALID, strides >= 1)")
    x_shape, w_shape, b_shape = _shape(converter, data), _shape(converter, weights), _shape(converter, bias)
    if len(x_shape) != 4 or len(w_shape) != 4 or x_shape[3] != w_shape[3] or b_shape != (w_shape[0],):
        raise _refuse(converter, op, code, f"shapes data {list(x_shape)}, weights {list(w_shape)}, bias "
                                           f"{list(b_shape)} do not fit NHWC data, OHWI weights and an O bias")
    same = padding == TFLITE_PADDING_SAME
    _, top, bottom = transpose_conv_padding(x_shape[1], w_shape[1], stride_h, same)
    _, left, right = transpose_conv_padding(x_shape[2], w_shape[2], stride_w, same)
    # TVM 0.27 legalizes conv2d_transpose for NCHW data only (NHWC reaches the VM unlowered).
    w_iohw = relax.op.permute_dims(converter.get_tensor_expr(weights), axes=(3, 0, 1, 2))
    x_nchw = relax.op.permute_dims(converter.get_tensor_expr(data), axes=(0, 3, 1, 2))
    y = relax.op.nn.conv2d_transpose(x_nchw, w_iohw, strides=(stride_h, stride_w),
                                     padding=(top, left, bottom, right), out_dtype="float32")
    return relax.op.add(relax.op.permute_dims(y, axes=(0, 2, 3, 1)), converter.get_tensor_expr(bias))


def _matrix_input(converter, op, code: str, tensor) -> None:
    if _shape(converter, tensor) != (1, 4, 4):
        raise _refuse(converter, op, code, f"its transform matrix has shape {list(_shape(converter, tensor))}, "
                                           f"expected [1, 4, 4]")


def bilinear_sample_te(data, matrix, out_h: int, out_w: int):
    """TE of TransformTensorBilinear v2: out[0, y, x, c] = bilinear(data, T' (x, y, 0, 1)) over the
    two first rows of T' = S T A, where A and S shift by +0.5 and -0.5 pixel (pixel centres), so
    column 3 becomes t3 + (t0 + t1) / 2 - 1/2. A sample point outside [0, W-1] x [0, H-1] gives 0;
    inside, neighbours past the last row or column read as 0.
    """
    from tvm import te, tirx

    _, height, width, channels = (int(d) for d in data.shape)

    def sample(b, y, x, c):
        fx, fy = x.astype("float32"), y.astype("float32")

        def coordinate(row):
            m = [matrix[0, row, j] for j in range(4)]
            return m[0] * fx + m[1] * fy + m[3] + (m[0] + m[1]) * 0.5 - 0.5

        tx, ty = coordinate(0), coordinate(1)
        x0, y0 = te.floor(tx), te.floor(ty)
        ix, iy = x0.astype("int32"), y0.astype("int32")
        rx, ry = tx - x0, ty - y0

        def read(row, col):
            # Indices are clamped so that a NaN or huge coordinate never addresses memory outside
            # the tensor; the select then zeroes what lies past the edge.
            inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
            value = data[b, te.max(te.min(row, height - 1), 0), te.max(te.min(col, width - 1), 0), c]
            return tirx.Select(inside, value, tirx.const(0.0, "float32"))

        upper = (1.0 - rx) * read(iy, ix) + rx * read(iy, ix + 1)
        lower = (1.0 - rx) * read(iy + 1, ix) + rx * read(iy + 1, ix + 1)
        inside = tirx.all(tx >= 0.0, tx <= float(width - 1), ty >= 0.0, ty <= float(height - 1))
        return tirx.Select(inside, ry * lower + (1.0 - ry) * upper, tirx.const(0.0, "float32"))

    return te.compute((1, out_h, out_w, channels), sample, name="transform_tensor_bilinear")


def convert_transform_tensor_bilinear(converter, op):
    code = "TransformTensorBilinear"
    data, matrix = _operands(converter, op, code, 2, ("data", "matrix"))
    options = _flex_options(converter, op, code)
    out_h = _required(converter, op, code, options, "output_height", int)
    out_w = _required(converter, op, code, options, "output_width", int)
    shape = _shape(converter, data)
    if len(shape) != 4 or shape[0] != 1 or out_h < 1 or out_w < 1:
        raise _refuse(converter, op, code, f"data of shape {list(shape)} with output {out_h}x{out_w} is not "
                                           f"supported (batch 1 NHWC data, positive output size)")
    _matrix_input(converter, op, code, matrix)
    return converter.bb.emit_te(bilinear_sample_te, converter.get_tensor_expr(data), converter.get_tensor_expr(matrix),
                                out_h, out_w, primfunc_name_hint="transform_tensor_bilinear")


def landmarks_transform_te(subset, ends, output_h: int, output_w: int, scale_x: float, scale_y: float,
                           target_rotation: float):
    """TE of Landmarks2TransformMatrix v2: the 4x4 matrix mapping a pixel (x, y, 0, 1) of an
    ``output_w`` x ``output_h`` crop to landmark coordinates.

    With theta the angle of the line from the left to the right rotation landmark, the region turns
    by r = target - theta; its cos and sin come from (dx, dy) / |(dx, dy)| (no atan2; theta = 0 when
    the two points coincide). The subset landmarks rotated by r span [min, max]; the crop's centre is
    that box's centre rotated back by -r, its size (max - min) scaled by (scale_x, scale_y):

        T = shift(centre) rot(-r) scale(sx * w / output_w, sy * h / output_h) shift(-output_w/2, -output_h/2)

    ``subset`` is (1, K, 3) (the landmarks the option subset_idxs names), ``ends`` (1, 2, 3) the left and right
    rotation landmarks.
    """
    from tvm import te, tirx

    count = int(subset.shape[1])
    dx = ends[0, 1, 0] - ends[0, 0, 0]
    dy = ends[0, 1, 1] - ends[0, 0, 1]
    length = te.sqrt(dx * dx + dy * dy)
    nonzero = length > 0.0
    cos_theta = tirx.Select(nonzero, dx / tirx.Select(nonzero, length, 1.0), tirx.const(1.0, "float32"))
    sin_theta = tirx.Select(nonzero, dy / tirx.Select(nonzero, length, 1.0), tirx.const(0.0, "float32"))
    cos_target, sin_target = math.cos(target_rotation), math.sin(target_rotation)
    c = cos_theta * cos_target + sin_theta * sin_target
    s = sin_target * cos_theta - cos_target * sin_theta

    # rotated[0, k] = c x - s y and rotated[1, k] = s x + c y: the landmarks rotated by r.
    rotated = te.compute((2, count), lambda a, k: tirx.Select(
        a == 0, c * subset[0, k, 0] - s * subset[0, k, 1], s * subset[0, k, 0] + c * subset[0, k, 1]),
        name="rotated_landmarks")
    k_max = te.reduce_axis((0, count), name="k_max")
    k_min = te.reduce_axis((0, count), name="k_min")
    high = te.compute((2,), lambda a: te.max(rotated[a, k_max], axis=k_max), name="box_max")
    low = te.compute((2,), lambda a: te.min(rotated[a, k_min], axis=k_min), name="box_min")

    def entry(b, i, j):
        mid_x, mid_y = (high[0] + low[0]) * 0.5, (high[1] + low[1]) * 0.5
        sx = (high[0] - low[0]) * (scale_x / output_w)
        sy = (high[1] - low[1]) * (scale_y / output_h)
        m00, m01, m10, m11 = c * sx, s * sy, -s * sx, c * sy
        m03 = c * mid_x + s * mid_y - (m00 * output_w + m01 * output_h) * 0.5
        m13 = c * mid_y - s * mid_x - (m10 * output_w + m11 * output_h) * 0.5
        zero, one = tirx.const(0.0, "float32"), tirx.const(1.0, "float32")
        row0 = tirx.Select(j == 0, m00, tirx.Select(j == 1, m01, tirx.Select(j == 3, m03, zero)))
        row1 = tirx.Select(j == 0, m10, tirx.Select(j == 1, m11, tirx.Select(j == 3, m13, zero)))
        return tirx.Select(i == 0, row0, tirx.Select(i == 1, row1, tirx.Select(i == j, one, zero)))

    return te.compute((1, 4, 4), entry, name="landmarks_to_transform_matrix")


def convert_landmarks_to_transform_matrix(converter, op):
    from tvm import relax

    code = "Landmarks2TransformMatrix"
    (landmarks,) = _operands(converter, op, code, 2, ("landmarks",))
    options = _flex_options(converter, op, code)
    left = _required(converter, op, code, options, "left_rotation_idx", int)
    right = _required(converter, op, code, options, "right_rotation_idx", int)
    out_h = _required(converter, op, code, options, "output_height", int)
    out_w = _required(converter, op, code, options, "output_width", int)
    scale_x = _required(converter, op, code, options, "scale_x", float)
    scale_y = _required(converter, op, code, options, "scale_y", float)
    target = float(options.get("target_rotation_radians", 0.0))
    subset = np.asarray(_required(converter, op, code, options, "subset_idxs", list), dtype=np.int64).reshape(-1)
    shape = _shape(converter, landmarks)
    if len(shape) != 3 or shape[0] != 1 or shape[2] != 3:
        raise _refuse(converter, op, code, f"landmarks of shape {list(shape)} are not supported (expected [1, N, 3])")
    count = shape[1]
    indices = np.concatenate([subset, [left, right]])
    # MediaPipe reads subset_idxs as pairs and pairs an odd last index with itself; only the set of
    # indices matters to the box's min and max, so the flat list is gathered as it is.
    if subset.size == 0 or indices.min() < 0 or indices.max() >= count:
        raise _refuse(converter, op, code, f"subset_idxs ({subset.size} values) and rotation indices {left}, {right} "
                                           f"must be non-empty and within the {count} landmarks")
    if out_h < 1 or out_w < 1 or scale_x <= 0 or scale_y <= 0:
        raise _refuse(converter, op, code, f"output {out_h}x{out_w} and scale ({scale_x}, {scale_y}) must be positive")
    expr = converter.get_tensor_expr(landmarks)
    points = converter.bb.emit(relax.op.take(expr, relax.const(subset.astype(np.int32)), axis=1, mode="clip"))
    ends = converter.bb.emit(relax.op.take(expr, relax.const(np.array([left, right], np.int32)), axis=1, mode="clip"))
    return converter.bb.emit_te(landmarks_transform_te, points, ends, out_h, out_w, scale_x, scale_y, target,
                                primfunc_name_hint="landmarks_to_transform_matrix")


def transform_landmarks_te(landmarks, matrix):
    """TE of TransformLandmarks v2: (x, y) -> the first two rows of the matrix applied to (x, y, 0, 1);
    a third coordinate (z) passes through unchanged."""
    from tvm import te, tirx

    def transformed(b, n, d):
        x, y = landmarks[b, n, 0], landmarks[b, n, 1]
        new_x = matrix[0, 0, 0] * x + matrix[0, 0, 1] * y + matrix[0, 0, 3]
        new_y = matrix[0, 1, 0] * x + matrix[0, 1, 1] * y + matrix[0, 1, 3]
        return tirx.Select(d == 0, new_x, tirx.Select(d == 1, new_y, landmarks[b, n, d]))

    return te.compute(tuple(landmarks.shape), transformed, name="transform_landmarks")


def convert_transform_landmarks(converter, op):
    code = "TransformLandmarks"
    landmarks, matrix = _operands(converter, op, code, 2, ("landmarks", "matrix"))
    shape = _shape(converter, landmarks)
    # Version 2 reads its dimensions from the output's last axis and applies no scale.
    if len(shape) != 3 or shape[0] != 1 or shape[2] not in (2, 3):
        raise _refuse(converter, op, code, f"landmarks of shape {list(shape)} are not supported "
                                           f"(expected [1, N, 2] or [1, N, 3])")
    _matrix_input(converter, op, code, matrix)
    return converter.bb.emit_te(transform_landmarks_te, converter.get_tensor_expr(landmarks),
                                converter.get_tensor_expr(matrix), primfunc_name_hint="transform_landmarks")


MEDIAPIPE_CUSTOM_OPS: dict[str, Callable] = {
    "Convolution2DTransposeBias": convert_transpose_conv_bias,
    "Landmarks2TransformMatrix": convert_landmarks_to_transform_matrix,
    "TransformTensorBilinear": convert_transform_tensor_bilinear,
    "TransformLandmarks": convert_transform_landmarks,
}

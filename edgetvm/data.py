"""Sample inputs of a model: the one reader every consumer takes (pruning's recovery, int8 calibration).

As onnxruntime's ``CalibrationDataReader`` does for its calibrators, every source becomes the same
thing, a list of samples, each a :data:`Sample`: one array per model input, in the model's input
order, with that input's shape and dtype. Sources:

* a directory: its ``.npy`` files and images, by file name;
* a path to one ``.npy`` file or image;
* an array, a dict ``{input name: array}``, or a list of arrays, paths, dicts or per-input lists.

An array against a one-input model of shape ``(1, *S)``: shaped ``(1, *S)`` or ``S``, one sample;
``(N, *S)``, N samples; an ``(H, W, 3)`` or ``(H, W, 1)`` uint8 array, an image; any other array
with the input's number of values, that input reshaped. A top-level array that is none of these
lists its samples along its first axis.

An image becomes an input as a :class:`Preprocess` says, as ncnn2table's ``mean= norm= pixel=`` do:
resized to the input's H x W, its channels put in the model's order (RGB or BGR; grey for a
one-channel input), then ``(pixel - mean) * scale`` per channel in that order, laid out NCHW or
NHWC. Without one (``Preprocess()``) an image is fed RGB 0..255, NCHW (NHWC when axis 1 of the
input is not 1 or 3), as a model that normalises in its graph (SFace) wants; a source of images read
without a preprocessing the caller knows (``preprocess=None``) warns, naming the options to set.
A :class:`Preprocessed` source carries its preprocessing with it through any consumer.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .specs import TensorSpec

Sample = list[np.ndarray]  # one array per model input, in input order

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SAMPLE_SUFFIXES = (".npy",) + IMAGE_SUFFIXES
# Pillow's filters by name: pruning has resized with bilinear, int8 calibration with Pillow's default
# (bicubic); each keeps its own so that the numbers fed stay what they were.
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class UnknownPreprocessingWarning(UserWarning):
    """Images were fed to a model whose preprocessing nobody stated: raw RGB 0..255 may be wrong."""


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: ``x[c] = (pixel[c] - mean[c]) * scale[c]``.

    ``channel_order``: "rgb" or "bgr", the order of the input's channels, which ``mean`` and
    ``scale`` follow (RetinaFace: "bgr", mean (104, 117, 123)). ``layout``: "nchw", "nhwc", or None
    to take it from the input's shape. A one-channel input reads the image grey, with mean[0],
    scale[0].
    """

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "rgb"
    layout: str | None = None

    def __post_init__(self):
        for field_name in ("mean", "scale"):
            value = getattr(self, field_name)
            value = (float(value),) * 3 if isinstance(value, (int, float)) else tuple(float(v) for v in value)
            if len(value) == 1:
                value = value * 3
            if len(value) != 3 or not all(np.isfinite(value)):
                raise InputError(f"preprocess {field_name} {list(value)}: give one number or three (per channel, in "
                                 f"the model's channel order), all finite")
            object.__setattr__(self, field_name, value)
        if self.channel_order not in ("rgb", "bgr"):
            raise InputError(f"preprocess channel order {self.channel_order!r}: choose 'rgb' or 'bgr'")
        if self.layout not in (None, "nchw", "nhwc"):
            raise InputError(f"preprocess layout {self.layout!r}: choose 'nchw' or 'nhwc'")
        if any(v == 0.0 for v in self.scale):
            raise InputError(f"preprocess scale {list(self.scale)}: a zero scale erases the channel")

    @classmethod
    def from_options(cls, mean=None, scale=None, std=None, channel_order: str | None = None,
                     layout: str | None = None) -> "Preprocess":
        """From the user's words: ``std`` (torchvision's) is the reciprocal of ``scale`` (ncnn's norm)."""
        if scale is not None and std is not None:
            raise InputError("preprocess: give scale (--scale, multiplied) or std (--std, divided by), not both")
        if std is not None:
            std = (float(std),) * 3 if isinstance(std, (int, float)) else tuple(float(v) for v in std)
            if any(v == 0.0 for v in std):
                raise InputError(f"preprocess std {list(std)}: a zero std divides by zero")
            scale = tuple(1.0 / v for v in std)
        return cls(mean=(0.0, 0.0, 0.0) if mean is None else mean, scale=(1.0, 1.0, 1.0) if scale is None else scale,
                   channel_order=channel_order or "rgb", layout=layout)

    @classmethod
    def coerce(cls, value) -> "Preprocess | None":
        """A Preprocess, a dict of its fields (or of ``from_options``' keywords: std), or None."""
        if value is None or isinstance(value, Preprocess):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"mean", "scale", "std", "channel_order", "layout"}
            if unknown:
                raise InputError(f"preprocess: unknown keys {sorted(unknown)}; the keys are mean, scale (or std), "
                                 f"channel_order ('rgb'/'bgr') and layout ('nchw'/'nhwc')")
            return cls.from_options(**value)
        raise InputError(f"preprocess must be an edgetvm.data.Preprocess or a dict, not {type(value).__name__}")

    def to_json(self) -> dict:
        return {"mean": list(self.mean), "scale": list(self.scale), "channel_order": self.channel_order,
                "layout": self.layout}


# What an image is fed as when nobody said how: the model is assumed to normalise in its graph.
RAW_RGB = Preprocess()

UNKNOWN_PREPROCESSING = (
    "images are fed as RGB 0..255 because this model's preprocessing is unknown; if it expects another, set it: "
    "--mean, --scale or --std, --bgr/--rgb, --layout nchw|nhwc (Python: preprocess={'mean': ..., 'scale': ..., "
    "'channel_order': 'bgr', 'layout': 'nchw'}); for example RetinaFace: --bgr --mean 104,117,123")


@dataclass(frozen=True)
class Preprocessed:
    """A sample source (anything :func:`read_samples` takes) with the preprocessing of its images."""

    source: object
    preprocess: Preprocess


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read ``path`` (any format Pillow reads, including PPM/PGM) as an RGB uint8 array (H, W, 3)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    except FileNotFoundError:
        raise InputError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not an image Pillow can read ({exc}); give a JPEG, PNG, BMP or PPM file") from None


def is_image(arr: np.ndarray) -> bool:
    """An (H, W, 3) RGB or (H, W, 1) grey uint8 array."""
    return arr.ndim == 3 and arr.shape[-1] in (1, 3) and arr.dtype == np.uint8


def image_to_input(image: np.ndarray, spec: TensorSpec, resample: str = "bilinear",
                   preprocess: Preprocess | None = None) -> np.ndarray:
    """An (H, W, C) uint8 image as one sample of ``spec``, resized to the input's size with
    ``resample`` and preprocessed by ``preprocess`` (default: RGB or grey 0..255)."""
    preprocess = preprocess or RAW_RGB
    shape = tuple(spec.shape)
    if preprocess.layout is None:
        channels_first = len(shape) == 4 and shape[1] in (1, 3)
    else:
        channels_first = preprocess.layout == "nchw"
    channels = shape[1] if channels_first else shape[-1]
    if len(shape) != 4 or channels not in (1, 3):
        layout = f" as {preprocess.layout.upper()}" if preprocess.layout else ""
        raise InputError(f"an image cannot feed input {spec.name!r} of shape {list(shape)}{layout} (not NCHW or "
                         f"NHWC with 1 or 3 channels); give arrays instead, or the right --layout")
    height, width = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
    picture = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
    picture = picture.convert("RGB" if channels == 3 else "L").resize((width, height), RESAMPLE[resample])
    arr = np.asarray(picture, dtype=np.float32)
    arr = arr[..., None] if arr.ndim == 2 else arr
    if channels == 3 and preprocess.channel_order == "bgr":
        arr = arr[..., ::-1]
    mean = np.asarray(preprocess.mean[:channels], dtype=np.float32)
    scale = np.asarray(preprocess.scale[:channels], dtype=np.float32)
    arr = (arr - mean) * scale
    return np.ascontiguousarray((arr.transpose(2, 0, 1) if channels_first else arr)[None]).astype(spec.dtype)


def read_samples(source, inputs: list[TensorSpec], *, limit: int | None = None, notes: list[str] | None = None,
                 limit_reason: str = "", resample: str = "bilinear",
                 preprocess: Preprocess | None = None) -> list[Sample]:
    """``source`` (see the module docstring) as a list of samples of the model with ``inputs``.

    Images are preprocessed by ``preprocess``, or by the one a :class:`Preprocessed` source carries;
    with neither, fed RGB 0..255 with an :class:`UnknownPreprocessingWarning`. At most ``limit``
    samples are kept (a directory's first files by name); a note in ``notes`` says when some were
    left out, and why (``limit_reason``).
    """
    if isinstance(source, Preprocessed):
        source, preprocess = source.source, preprocess or source.preprocess
    reader = _ImageReader(resample, preprocess)
    samples = _read_samples(source, inputs, limit, notes, limit_reason, reader)
    if reader.seen and preprocess is None:
        warnings.warn(UNKNOWN_PREPROCESSING, UnknownPreprocessingWarning, stacklevel=2)
    return samples


@dataclass
class _ImageReader:
    """How images become inputs in one read, and whether any was met."""

    resample: str
    preprocess: Preprocess | None
    seen: int = 0

    def __call__(self, image: np.ndarray, spec: TensorSpec) -> np.ndarray:
        self.seen += 1
        return image_to_input(image, spec, self.resample, self.preprocess)


def _read_samples(source, inputs, limit, notes, limit_reason, images: _ImageReader) -> list[Sample]:
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        files = _directory_files(Path(source))
        if limit is not None and len(files) > limit:
            if notes is not None:
                notes.append(f"calibration: used the first {limit} of the {len(files)} files in {source} (by name)")
            files = files[:limit]
        items = files
    elif isinstance(source, (str, os.PathLike, dict)):
        items = [source]
    elif isinstance(source, np.ndarray):
        samples = _array_samples(source, inputs, images)
        if samples is None:  # its leading axis lists the samples
            items = list(source)
        else:
            items = samples
    else:
        items = list(source)
    samples = [s for item in items for s in _item_samples(item, inputs, images)]
    if not samples:
        raise InputError("calibration: no samples given")
    if limit is not None and len(samples) > limit:
        if notes is not None:
            why = f" ({limit_reason})" if limit_reason else ""
            notes.append(f"calibration: used the first {limit} of {len(samples)} samples{why}")
        samples = samples[:limit]
    return samples


def _directory_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)
    if not files:
        raise InputError(f"calibration {path}: no .npy or image files in it")
    return files


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"calibration {path}: no such file or directory")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"calibration {path}: cannot read ({exc})") from None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path)
    raise InputError(f"calibration {path}: give a directory, .npy files or images ({', '.join(IMAGE_SUFFIXES)})")


def _item_samples(item, inputs: list[TensorSpec], images: _ImageReader) -> list[Sample]:
    """One item of a source: a finished sample, a path, a dict, a per-input list or an array."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        arr = _load(path)
        if len(inputs) != 1:
            raise InputError(f"calibration {path}: a file holds samples of one-input models; this one has "
                             f"{len(inputs)} inputs (give dicts input name -> array)")
        item = arr
    if isinstance(item, dict):
        missing = [spec.name for spec in inputs if spec.name not in item]
        if missing:
            raise InputError(f"calibration sample has no array for input(s) {missing}; the inputs are "
                             f"{[spec.name for spec in inputs]}")
        return [[_one_input(np.asarray(item[spec.name]), spec, images) for spec in inputs]]
    if isinstance(item, (list, tuple)):
        if len(item) != len(inputs):
            raise InputError(f"calibration sample has {len(item)} arrays; the model has {len(inputs)} inputs")
        return [[_one_input(np.asarray(arr), spec, images) for spec, arr in zip(inputs, item)]]
    arr = np.asarray(item)
    if len(inputs) != 1:
        raise InputError(f"calibration sample has 1 array; the model has {len(inputs)} inputs (give dicts input "
                         f"name -> array, or one list of arrays per sample)")
    samples = _array_samples(arr, inputs, images)
    if samples is None:
        samples = [[_one_input(arr, inputs[0], images)]]
    return samples


def _array_samples(arr: np.ndarray, inputs: list[TensorSpec], images: _ImageReader) -> list[Sample] | None:
    """The samples one array holds for a one-input model, or None when it does not fit the input."""
    if len(inputs) != 1:
        return None
    spec = inputs[0]
    shape = tuple(spec.shape)
    one = _as_input(arr, spec, images)
    if one is not None:
        return [[one]]
    if shape and shape[0] == 1 and arr.ndim == len(shape) and tuple(arr.shape[1:]) == shape[1:]:
        return [[np.asarray(a[None], dtype=spec.dtype)] for a in arr]
    return None


def _as_input(arr: np.ndarray, spec: TensorSpec, images: _ImageReader) -> np.ndarray | None:
    shape = tuple(spec.shape)
    if tuple(arr.shape) == shape:
        return np.asarray(arr, dtype=spec.dtype)
    if tuple(arr.shape) == shape[1:]:
        return np.asarray(arr[None], dtype=spec.dtype)
    if is_image(arr):
        return images(arr, spec)
    return None


def _one_input(arr: np.ndarray, spec: TensorSpec, images: _ImageReader) -> np.ndarray:
    one = _as_input(arr, spec, images)
    if one is not None:
        return one
    if arr.size == int(np.prod(spec.shape)):
        return np.asarray(arr, dtype=spec.dtype).reshape(spec.shape)
    raise InputError(f"calibration input {spec.name!r}: shape {list(arr.shape)}, the model wants {list(spec.shape)}")

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

An image is fed as it is read: RGB (grey for a one-channel input), 0..255 as float, resized to the
input's H x W, laid out NCHW (NHWC when axis 1 of the input is not 1 or 3). The model normalises
it itself, as SFace does.
"""

from __future__ import annotations

import os
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


def image_to_input(image: np.ndarray, spec: TensorSpec, resample: str = "bilinear") -> np.ndarray:
    """An (H, W, C) uint8 image as one sample of ``spec``: RGB or grey as the input has 3 or 1
    channels, 0..255, resized to the input's size with ``resample``, NCHW or NHWC like the input."""
    shape = tuple(spec.shape)
    channels_first = len(shape) == 4 and shape[1] in (1, 3)
    channels = shape[1] if channels_first else shape[-1]
    if len(shape) != 4 or channels not in (1, 3):
        raise InputError(f"an image cannot feed input {spec.name!r} of shape {list(shape)} (not NCHW or NHWC with "
                         f"1 or 3 channels); give arrays instead")
    height, width = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
    picture = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
    picture = picture.convert("RGB" if channels == 3 else "L").resize((width, height), RESAMPLE[resample])
    arr = np.asarray(picture, dtype=np.float32)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return (arr.transpose(2, 0, 1) if channels_first else arr)[None].astype(spec.dtype)


def read_samples(source, inputs: list[TensorSpec], *, limit: int | None = None, notes: list[str] | None = None,
                 limit_reason: str = "", resample: str = "bilinear") -> list[Sample]:
    """``source`` (see the module docstring) as a list of samples of the model with ``inputs``.

    At most ``limit`` samples are kept (a directory's first files by name); a note in ``notes``
    says when some were left out, and why (``limit_reason``).
    """
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
        samples = _array_samples(source, inputs, resample)
        if samples is None:  # its leading axis lists the samples
            items = list(source)
        else:
            items = samples
    else:
        items = list(source)
    samples = [s for item in items for s in _item_samples(item, inputs, resample)]
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


def _item_samples(item, inputs: list[TensorSpec], resample: str) -> list[Sample]:
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
        return [[_one_input(np.asarray(item[spec.name]), spec, resample) for spec in inputs]]
    if isinstance(item, (list, tuple)):
        if len(item) != len(inputs):
            raise InputError(f"calibration sample has {len(item)} arrays; the model has {len(inputs)} inputs")
        return [[_one_input(np.asarray(arr), spec, resample) for spec, arr in zip(inputs, item)]]
    arr = np.asarray(item)
    if len(inputs) != 1:
        raise InputError(f"calibration sample has 1 array; the model has {len(inputs)} inputs (give dicts input "
                         f"name -> array, or one list of arrays per sample)")
    samples = _array_samples(arr, inputs, resample)
    if samples is None:
        samples = [[_one_input(arr, inputs[0], resample)]]
    return samples


def _array_samples(arr: np.ndarray, inputs: list[TensorSpec], resample: str) -> list[Sample] | None:
    """The samples one array holds for a one-input model, or None when it does not fit the input."""
    if len(inputs) != 1:
        return None
    spec = inputs[0]
    shape = tuple(spec.shape)
    one = _as_input(arr, spec, resample)
    if one is not None:
        return [[one]]
    if shape and shape[0] == 1 and arr.ndim == len(shape) and tuple(arr.shape[1:]) == shape[1:]:
        return [[np.asarray(a[None], dtype=spec.dtype)] for a in arr]
    return None


def _as_input(arr: np.ndarray, spec: TensorSpec, resample: str) -> np.ndarray | None:
    shape = tuple(spec.shape)
    if tuple(arr.shape) == shape:
        return np.asarray(arr, dtype=spec.dtype)
    if tuple(arr.shape) == shape[1:]:
        return np.asarray(arr[None], dtype=spec.dtype)
    if is_image(arr):
        return image_to_input(arr, spec, resample)
    return None


def _one_input(arr: np.ndarray, spec: TensorSpec, resample: str) -> np.ndarray:
    one = _as_input(arr, spec, resample)
    if one is not None:
        return one
    if arr.size == int(np.prod(spec.shape)):
        return np.asarray(arr, dtype=spec.dtype).reshape(spec.shape)
    raise InputError(f"calibration input {spec.name!r}: shape {list(arr.shape)}, the model wants {list(spec.shape)}")

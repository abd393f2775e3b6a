"""Person/background segmentation: MediaPipe's selfie segmenter compiled by edgetvm, its mask resized
back to the image, and the background blurred or replaced.

    seg = SelfieSegmenter()                      # the general 256x256 model, compiled for the host
    result = seg.segment(image)                  # result.mask: (H, W) float32, P(person) per pixel
    out = blur_background(image, result.mask)    # or replace_background(image, result.mask, "green")

The two models (``mediapipe`` 0.10.21, Apache-2.0) differ only in their input: ``general`` takes
256x256, ``landscape`` 256 wide by 144 high (16:9 video, about 40% fewer operations). MediaPipe feeds
both the same way (``selfie_segmentation_cpu.pbtxt``): the whole image resized to the input without
keeping its aspect ratio, RGB scaled to [0, 1], NHWC; the network ends in a sigmoid, so its output is
the probability of "person" per input pixel, and the mask is that map resized back to the image with
bilinear taps (``TensorsToSegmentationCalculator``). Both resizes here are ``image.resize_bilinear``
(half-pixel centres, no antialiasing: OpenCV's ``INTER_LINEAR``, which MediaPipe's CPU path uses).
The default is ``general``: the images a face SDK sees (portraits, a door camera's frame) are closer
to square than to 16:9, and squeezing a portrait into 256x144 halves its vertical resolution;
``landscape`` is there for wide video frames, where it distorts least and runs faster.

Background effects blend with the soft mask, ``out = m * image + (1 - m) * background``, so the
person's outline stays anti-aliased instead of stair-stepped at a hard threshold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageFilter, ImageOps

from ..errors import InputError
from ..zoo import PREPROCESSING
from .image import as_rgb, read_image, resize_bilinear, save_image
from .networks import Network, edgetvm_engine, options_for

# The mask value above which a pixel counts as the person (MediaPipe's own examples use 0.5 too).
MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class Segmenter(Network):
    """A selfie segmenter: NHWC input of ``size`` (W, H), one sigmoid channel out."""

    size: tuple[int, int] = (256, 256)

    def input_shape(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        width, height = size
        return (1, height, width, 3)


SEGMENTERS: dict[str, Segmenter] = {
    "general": Segmenter("selfie_segmentation", "segmenter", "input_1", False,
                         "MediaPipe selfie segmentation, general (256x256)",
                         PREPROCESSING["selfie_segmentation"], (256, 256)),
    "landscape": Segmenter("selfie_segmentation_landscape", "segmenter", "input_1", False,
                           "MediaPipe selfie segmentation, landscape (256x144)",
                           PREPROCESSING["selfie_segmentation_landscape"], (256, 144)),
}


def segmenter(model: str) -> Segmenter:
    net = SEGMENTERS.get(model)
    if net is None:
        raise InputError(f"unknown segmentation model {model!r}; choose one of {sorted(SEGMENTERS)}")
    return net


def segmenter_input(net: Segmenter, image: np.ndarray) -> np.ndarray:
    """RGB uint8 image -> the segmenter's (1, H, W, 3) float32 input: resized to ``net.size`` without
    keeping the aspect ratio, scaled to [0, 1] (``x * scale - mean * scale`` of its preprocess)."""
    w, h = net.size
    x = resize_bilinear(as_rgb(image), w, h)
    x = (x - np.float32(net.preprocess["mean"])) * np.float32(net.preprocess["scale"])
    return np.ascontiguousarray(x[None], dtype=np.float32)


def mask_to_image(small: np.ndarray, width: int, height: int) -> np.ndarray:
    """The network's (h, w) probability map resized to the image's (height, width), clipped to [0, 1]
    (bilinear weights keep it in range; the clip guards the float rounding at exactly 0 and 1)."""
    small = np.asarray(small, dtype=np.float32)
    return np.clip(resize_bilinear(small[:, :, None], width, height)[:, :, 0], 0.0, 1.0)


@dataclass
class Segmentation:
    """``mask``: (H, W) float32, the probability that each image pixel shows the person."""

    mask: np.ndarray
    model: str

    def person(self, threshold: float = MASK_THRESHOLD) -> np.ndarray:
        """The binary person mask: ``mask >= threshold``."""
        return self.mask >= np.float32(threshold)

    def to_json(self, threshold: float = MASK_THRESHOLD) -> dict:
        h, w = self.mask.shape
        return {"model": self.model, "width": w, "height": h, "threshold": threshold,
                "person_fraction": round(float(self.person(threshold).mean()), 5)}


class SelfieSegmenter:
    """MediaPipe's selfie segmenter compiled by edgetvm for the host (through the compile cache shared
    by processes, ``compile_cache.py``). ``compile_options`` go to ``edgetvm.compile`` unchanged."""

    def __init__(self, model: str = "general", *, compile_options: dict | None = None,
                 num_threads: int | None = None):
        self.net = segmenter(model)
        self.model = model
        self.compile_options = options_for(compile_options, self.net.role)
        self.num_threads = num_threads
        self._run = None

    def input_tensor(self, image: np.ndarray) -> np.ndarray:
        return segmenter_input(self.net, image)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The network's (h, w) output on an input tensor of ``input_tensor``'s shape."""
        expected = self.net.input_shape(self.net.size)
        if tuple(x.shape) != expected:
            raise InputError(f"segmenter {self.model}: input of shape {tuple(x.shape)}, expected {expected}")
        if self._run is None:
            self._run = edgetvm_engine(self.net, self.net.size, "host", self.compile_options, self.num_threads)
        return self._run(np.ascontiguousarray(x, dtype=np.float32))[0][0, :, :, 0]

    def segment(self, image) -> Segmentation:
        """The person mask of ``image`` (path or RGB array) at the image's size."""
        image = read_image(image) if not isinstance(image, np.ndarray) else as_rgb(image)
        small = self.probabilities(self.input_tensor(image))
        return Segmentation(mask_to_image(small, image.shape[1], image.shape[0]), self.model)


def composite(image: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``m * image + (1 - m) * background`` per pixel, rounded to RGB uint8."""
    image = as_rgb(image)
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape != image.shape[:2]:
        raise InputError(f"mask of shape {mask.shape} does not cover the image of shape {image.shape[:2]}")
    m = mask[:, :, None]
    out = m * image.astype(np.float32) + (np.float32(1) - m) * np.asarray(background, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def default_blur_radius(image: np.ndarray) -> float:
    """A Gaussian sigma of 2% of the image's longer side: the background's detail is gone, its colours
    and light stay (the look of a video call's background blur)."""
    return max(image.shape[:2]) / 50.0


def blur_background(image: np.ndarray, mask: np.ndarray, radius: float | None = None) -> np.ndarray:
    """The image with its background Gaussian-blurred (sigma ``radius`` pixels, Pillow's GaussianBlur)."""
    image = as_rgb(image)
    radius = default_blur_radius(image) if radius is None else float(radius)
    if not radius > 0:
        raise InputError(f"blur radius {radius}: give a positive number of pixels")
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
    return composite(image, mask, blurred)


def background_picture(background, width: int, height: int) -> np.ndarray:
    """A background of (height, width): a colour (name, ``#rrggbb`` or an RGB triple) filled, or an
    image (path or RGB array) scaled to cover the picture and centre-cropped (its aspect kept)."""
    if isinstance(background, str) and not Path(background).exists():
        try:
            background = ImageColor.getrgb(background)[:3]
        except ValueError:
            raise InputError(f"background {background!r}: neither an image file nor a colour (a name such as "
                             f"'green', or '#00b140')") from None
    if isinstance(background, tuple):
        if len(background) != 3 or not all(0 <= int(v) <= 255 for v in background):
            raise InputError(f"background colour {background}: give three values (red, green, blue) in 0..255")
        return np.broadcast_to(np.asarray(background, dtype=np.uint8), (height, width, 3))
    picture = read_image(background) if isinstance(background, (str, os.PathLike)) else as_rgb(background)
    fitted = ImageOps.fit(Image.fromarray(picture), (width, height), method=Image.Resampling.BILINEAR)
    return np.asarray(fitted)


def replace_background(image: np.ndarray, mask: np.ndarray, background) -> np.ndarray:
    """The image with its background replaced by ``background`` (see ``background_picture``)."""
    image = as_rgb(image)
    return composite(image, mask, background_picture(background, image.shape[1], image.shape[0]))


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """The mask as an 8-bit grey picture, 255 for the person (``round(255 * m)``)."""
    grey = np.clip(np.rint(np.asarray(mask, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return save_image(Image.fromarray(grey), path)


__all__ = ["MASK_THRESHOLD", "SEGMENTERS", "Segmentation", "SelfieSegmenter", "Segmenter", "background_picture",
           "blur_background", "composite", "mask_to_image", "replace_background", "segmenter", "segmenter_input",
           "write_mask"]

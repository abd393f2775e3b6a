"""Real inputs for the real face models: the astronaut portrait, prepared as each model expects."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgetvm.zoo import load_astronaut


def resized(size_wh: tuple[int, int], crop: tuple[slice, slice] | None = None) -> np.ndarray:
    img = load_astronaut()
    if crop is not None:
        img = img[crop]
    return np.asarray(Image.fromarray(img).resize(size_wh, Image.BILINEAR)).astype(np.float32)


@pytest.fixture(scope="session")
def retinaface_input() -> np.ndarray:
    """BGR minus the ImageNet-Caffe means (104, 117, 123), NCHW."""
    bgr = resized((640, 480))[..., ::-1] - np.array([104, 117, 123], np.float32)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])


@pytest.fixture(scope="session")
def yunet_input() -> np.ndarray:
    """BGR 0..255, NCHW, 640x640."""
    return np.ascontiguousarray(resized((640, 640))[..., ::-1].transpose(2, 0, 1)[None])


@pytest.fixture(scope="session")
def sface_input() -> np.ndarray:
    """RGB 0..255, NCHW, 112x112: a square crop around the astronaut's face (not ArcFace-aligned;
    alignment matters for accuracy, not for comparing two runtimes)."""
    face = (slice(30, 254), slice(130, 354))
    return np.ascontiguousarray(resized((112, 112), face).transpose(2, 0, 1)[None])


@pytest.fixture(scope="session")
def blazeface_input() -> np.ndarray:
    """RGB scaled to [-1, 1], NHWC, 128x128."""
    return np.ascontiguousarray((resized((128, 128)) / 127.5 - 1.0)[None])


@pytest.fixture(scope="session")
def mediapipe_custom_op_inputs() -> dict[str, np.ndarray]:
    """RGB in [0, 1], NHWC: the whole portrait for the segmenters (256x256, landscape 256x144) and
    the face crop for FaceMesh with attention (192x192)."""
    face = (slice(30, 254), slice(130, 354))
    images = {"selfie_segmentation": resized((256, 256)), "selfie_segmentation_landscape": resized((256, 144)),
              "facemesh_attention": resized((192, 192), face)}
    return {name: np.ascontiguousarray((img / 255.0)[None].astype(np.float32)) for name, img in images.items()}

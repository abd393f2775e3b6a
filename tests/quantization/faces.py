"""Real face crops for the int8 accuracy tests: the astronaut portrait's face and LFW faces.

Augmentations (flip, shifts, brightness/contrast, small rotation) stand in for "same person"
variation; no labelled face-pair set ships in any package (see /work/shared/models.md).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

from edgetvm.zoo import load_astronaut, load_lfw_subset

# The astronaut's face in the 512x512 portrait (square around eyes, nose and mouth).
ASTRONAUT_FACE = (172, 55, 322, 205)  # left, top, right, bottom


def astronaut_crops(count: int, seed: int, size: int = 112) -> list[np.ndarray]:
    """``count`` augmented 112x112 RGB uint8 crops of the astronaut's face."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(load_astronaut())
    left, top, right, bottom = ASTRONAUT_FACE
    crops = []
    for i in range(count):
        dx, dy = rng.integers(-10, 11, 2) if i else (0, 0)
        scale = rng.uniform(0.92, 1.08) if i else 1.0
        cx, cy, half = (left + right) / 2 + dx, (top + bottom) / 2 + dy, (right - left) / 2 * scale
        crop = image.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
        if i:
            crop = crop.rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR)
            crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.8, 1.2)))
            crop = ImageEnhance.Contrast(crop).enhance(float(rng.uniform(0.8, 1.2)))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append(np.asarray(crop.resize((size, size), Image.BILINEAR)))
    return crops


def lfw_crops(indices, size: int = 112) -> list[np.ndarray]:
    """LFW faces (25x25 grey, the first 100 of lfw_subset) upscaled to ``size`` RGB uint8."""
    faces = load_lfw_subset()
    out = []
    for i in indices:
        grey = np.clip(np.asarray(faces[i], dtype=np.float64) * (255.0 if faces[i].max() <= 1.0 else 1.0), 0, 255)
        img = Image.fromarray(grey.astype(np.uint8)).resize((size, size), Image.BICUBIC).convert("RGB")
        out.append(np.asarray(img))
    return out


def to_nchw(images: list[np.ndarray]) -> list[np.ndarray]:
    """RGB uint8 HxWx3 -> float32 1x3xHxW, 0..255 (SFace normalises in its graph)."""
    return [np.ascontiguousarray(im.transpose(2, 0, 1)[None].astype(np.float32)) for im in images]


def detection_images(size: int = 320) -> dict[str, np.ndarray]:
    """RGB uint8 scenes for the detector tests: the astronaut portrait, and a 2x2 grid of upscaled
    LFW faces."""
    astronaut = np.asarray(Image.fromarray(load_astronaut()).resize((size, size), Image.BILINEAR))
    tiles = lfw_crops(range(4), size // 2)
    grid = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    return {"astronaut": astronaut, "lfw_grid": grid}


def calibration_scenes(count: int, seed: int, size: int = 320) -> list[np.ndarray]:
    """Detector calibration scenes, distinct from ``detection_images``: shifted/zoomed astronaut
    crops and grids of other LFW faces."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(load_astronaut())
    scenes = []
    for i in range(count):
        if i % 2 == 0:
            half = int(rng.integers(180, 256))
            cx, cy = (int(v) for v in rng.integers(half, 512 - half + 1, 2))
            crop = image.crop((cx - half, cy - half, cx + half, cy + half)).resize((size, size), Image.BILINEAR)
            scenes.append(np.asarray(ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.8, 1.2)))))
        else:
            tiles = lfw_crops(rng.choice(np.arange(10, 100), 4, replace=False), size // 2)
            scenes.append(np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)],
                                         axis=0))
    return scenes

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
# Grace Hopper's face in matplotlib's 512x600 portrait.
GRACE_HOPPER_FACE = (160, 135, 370, 345)


def astronaut_crops(count: int, seed: int, size: int = 112) -> list[np.ndarray]:
    """``count`` augmented 112x112 RGB uint8 crops of the astronaut's face (the first one plain)."""
    return _augmented_crops(Image.fromarray(load_astronaut()), ASTRONAUT_FACE, count, seed, size)


def grace_hopper_crops(count: int, seed: int, size: int = 112) -> list[np.ndarray]:
    """``count`` crops of Grace Hopper's face, a second portrait (calibration and evaluation sets
    are then different photographs, not only different augmentations), all augmented with a
    wider photometric range (contrast 0.6..1.6, saturation 0.5..1.6) than the evaluation crops:
    minmax calibration clips whatever the calibration set did not reach."""
    from edgetvm.zoo import fetch

    with Image.open(fetch("grace_hopper")) as im:
        image = im.convert("RGB")
    return _augmented_crops(image, GRACE_HOPPER_FACE, count, seed, size, strong=True)


def _augmented_crops(image: Image.Image, box, count: int, seed: int, size: int,
                     strong: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    left, top, right, bottom = box
    crops = []
    for i in range(count):
        augment = strong or i > 0
        shift, zoom = (15, 0.15) if strong else (10, 0.08)
        dx, dy = rng.integers(-shift, shift + 1, 2) if augment else (0, 0)
        scale = rng.uniform(1 - zoom, 1 + zoom) if augment else 1.0
        cx, cy, half = (left + right) / 2 + dx, (top + bottom) / 2 + dy, (right - left) / 2 * scale
        crop = image.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
        if augment:
            crop = crop.rotate(float(rng.uniform(-10, 10) if strong else rng.uniform(-8, 8)), resample=Image.BILINEAR)
            brightness, contrast = ((0.7, 1.3), (0.6, 1.6)) if strong else ((0.8, 1.2), (0.8, 1.2))
            crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(*brightness)))
            crop = ImageEnhance.Contrast(crop).enhance(float(rng.uniform(*contrast)))
            if strong:
                crop = ImageEnhance.Color(crop).enhance(float(rng.uniform(0.5, 1.6)))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append(np.asarray(crop.resize((size, size), Image.BILINEAR)))
    return crops


def embedding_calibration_faces() -> list[np.ndarray]:
    """Calibration faces of the embedding models (92): Grace Hopper crops and LFW faces 40..99."""
    return grace_hopper_crops(32, seed=1) + lfw_crops(range(40, 100))


def embedding_evaluation_faces() -> list[np.ndarray]:
    """Evaluation faces (24), none of them in the calibration set: another photograph (the
    astronaut) and other LFW faces (0..15)."""
    return astronaut_crops(8, seed=2) + lfw_crops(range(0, 16))


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

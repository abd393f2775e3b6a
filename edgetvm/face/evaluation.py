"""Verification pairs built from the images models.md ships, since no labelled pair set ships in
any package.

* "Same person" pairs: a face image against augmented copies of itself (horizontal flip, rotation
  up to +-12 degrees, scale 0.85..1.15, brightness +-30, contrast 0.75..1.25). They measure the
  pipeline's stability under pose and photometric change, not true intra-person variation (age,
  expression, lighting of a different photo), so they are easier than a labelled LFW pair set.
* "Different person" pairs: the astronaut, Grace Hopper and LFW faces (upscaled from 25x25) against
  each other. The scikit-image LFW subset carries no identities; two of its faces may show the same
  person, which would only make the different-pair distribution look worse than it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..zoo import fetch, load_astronaut, load_lfw_subset
from .image import as_rgb, read_image


def lfw_face(index: int, size: int = 128, pad: int = 64) -> np.ndarray:
    """LFW face ``index`` (0..99) of scikit-image's 25x25 grey subset, upscaled (bicubic), edge
    padded so the detector sees the whole head, as RGB uint8."""
    faces = load_lfw_subset()
    grey = np.clip(np.rint(faces[index] * 255.0), 0, 255).astype(np.uint8)
    big = np.asarray(Image.fromarray(grey).resize((size, size), Image.BICUBIC))
    return as_rgb(np.pad(big, pad, mode="edge"))


def grace_hopper() -> np.ndarray:
    return read_image(fetch("grace_hopper"))


def augment(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One random geometric + photometric variant of ``image`` and a description of it."""
    image = as_rgb(image)
    h, w = image.shape[:2]
    flip = bool(rng.integers(2))
    angle = float(rng.uniform(-12, 12))
    scale = float(rng.uniform(0.85, 1.15))
    brightness = float(rng.uniform(-30, 30))
    contrast = float(rng.uniform(0.75, 1.25))
    im = Image.fromarray(image[:, ::-1] if flip else image)
    im = im.resize((max(2, round(w * scale)), max(2, round(h * scale))), Image.BILINEAR)
    im = im.rotate(angle, resample=Image.BILINEAR, expand=False, fillcolor=(0, 0, 0))
    x = np.asarray(im, dtype=np.float32)
    x = (x - 128.0) * contrast + 128.0 + brightness
    desc = f"flip={int(flip)} rot={angle:+.1f} scale={scale:.2f} bright={brightness:+.0f} contrast={contrast:.2f}"
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), desc


@dataclass
class PairStats:
    same: np.ndarray
    different: np.ndarray
    threshold: float

    def summary(self) -> dict:
        def dist(v):
            return {"n": int(v.size), "min": round(float(v.min()), 4), "p5": round(float(np.percentile(v, 5)), 4),
                    "median": round(float(np.median(v)), 4), "p95": round(float(np.percentile(v, 95)), 4),
                    "max": round(float(v.max()), 4)}

        return {
            "pairs": "augmentation-based same pairs and different-person pairs (no labelled pair set ships)",
            "threshold": self.threshold,
            "same": dist(self.same),
            "different": dist(self.different),
            "true_accept_rate": round(float((self.same >= self.threshold).mean()), 4),
            "false_accept_rate": round(float((self.different >= self.threshold).mean()), 4),
            "separated": bool(self.same.min() > self.different.max()),
        }


def identity_images(num_lfw: int) -> dict[str, np.ndarray]:
    images = {"astronaut": load_astronaut(), "grace_hopper": grace_hopper()}
    for i in range(num_lfw):
        images[f"lfw_{i:02d}"] = lfw_face(i)
    return images


def verification_pairs(pipeline, num_lfw: int = 6, augmentations: int = 3, seed: int = 0) -> PairStats:
    """Similarities of same pairs (each identity image vs ``augmentations`` variants) and of all
    different pairs among the identity images."""
    rng = np.random.default_rng(seed)
    images = identity_images(num_lfw)
    embeddings = {name: pipeline.embed(img) for name, img in images.items()}
    same = []
    for name, img in images.items():
        for _ in range(augmentations):
            variant, _desc = augment(img, rng)
            same.append(float(embeddings[name] @ pipeline.embed(variant)))
    names = list(embeddings)
    different = [float(embeddings[a] @ embeddings[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    return PairStats(np.array(same), np.array(different), pipeline.threshold)

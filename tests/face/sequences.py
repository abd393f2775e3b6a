"""A synthetic video made from real photos: the astronaut's and Grace Hopper's faces pasted onto a
textured background, moving, entering and leaving, with where each face is in each frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgetvm.face.evaluation import grace_hopper
from edgetvm.zoo import load_astronaut

FRAME_W, FRAME_H = 400, 240
FACE_W, FACE_H = 120, 150
# (first frame, last frame, x at the first frame, x step per frame, y) of each person.
SCRIPT = {
    "astronaut": (0, 7, 30, 12, 40),
    "grace": (4, 11, 250, -8, 60),
}
NUM_FRAMES = 12


@dataclass
class Sequence:
    frames: list[np.ndarray]
    # person -> {frame index: (x1, y1, x2, y2) of the pasted face picture}
    where: dict[str, dict[int, tuple[int, int, int, int]]]


def _face_pictures() -> dict[str, np.ndarray]:
    # Head-and-shoulders crops around the faces the detector finds in the full photos.
    crops = {"astronaut": (load_astronaut(), (140, 20, 310, 230)), "grace": (grace_hopper(), (120, 40, 410, 390))}
    return {name: np.asarray(Image.fromarray(image[y1:y2, x1:x2]).resize((FACE_W, FACE_H), Image.BILINEAR))
            for name, (image, (x1, y1, x2, y2)) in crops.items()}


def make_sequence() -> Sequence:
    rng = np.random.default_rng(3)
    ramp = np.linspace(70, 170, FRAME_W, dtype=np.float32)[None, :, None]
    background = np.clip(ramp + rng.normal(0, 6, (FRAME_H, FRAME_W, 3)), 0, 255).astype(np.uint8)
    pictures = _face_pictures()
    frames, where = [], {name: {} for name in SCRIPT}
    for t in range(NUM_FRAMES):
        frame = background.copy()
        for name, (first, last, x0, step, y) in SCRIPT.items():
            if first <= t <= last:
                x = x0 + step * (t - first)
                frame[y:y + FACE_H, x:x + FACE_W] = pictures[name]
                where[name][t] = (x, y, x + FACE_W, y + FACE_H)
        frames.append(frame)
    return Sequence(frames, where)


def person_at(box, where_now: dict[str, tuple[int, int, int, int]]) -> str | None:
    """The person whose pasted picture holds the centre of ``box`` in this frame."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for name, (x1, y1, x2, y2) in where_now.items():
        if x1 <= cx <= x2 and y1 <= cy <= y2:
            return name
    return None

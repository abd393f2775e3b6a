"""Enrolment and identification with a FacePipeline and a Gallery, and the decision threshold.

The threshold comes from a target false-accept rate ``far`` (per comparison of two different
people) and the *impostor* score distribution: the cosine similarities of every pair of different
people among the faces that ship in packages (the astronaut, Grace Hopper and scikit-image's 100
LFW faces: 102 faces, 5151 pairs; see ``face.evaluation``)::

    t_empirical = just above the (m + 1)-th largest impostor score, m = floor(far * pairs), so that
                  at most m of them (a fraction <= far) reach it
    t_gaussian  = mean + std * Phi^-1(1 - far)                        (a normal fit of their tail)
    threshold   = max(t_empirical, t_gaussian)

The Gaussian fit extrapolates below the 1 / 5151 the pairs can resolve (there t_empirical is just
above the highest impostor score); taking the larger of the two keeps the threshold on the safe
side of both. A search of a gallery of ``N`` identities makes
``N`` comparisons, so its chance of accepting an unknown face is at most ``N * far`` (union bound):
choose ``far`` as the per-search rate you accept divided by the gallery's size.

Caveats, said plainly: the LFW faces are 25x25 pixels upscaled (blurred), scikit-image's subset
carries no identities (two of its faces may be the same person, which only raises the threshold),
and no labelled pair set ships, so the true-accept rate is measured on augmented copies of the two
portraits (flip, rotation, scale, brightness, contrast; ``evaluation.augment``), not on other photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ..errors import InputError
from .detect import Face
from .evaluation import identity_images
from .gallery import Gallery, Identification
from .image import as_rgb, read_image
from .pipeline import FacePipeline
from .quality import DEFAULT_MIN_QUALITY, Quality, assess_quality

DEFAULT_FAR = 1e-3
IMPOSTOR_LFW_FACES = 100


def impostor_scores(pipeline: FacePipeline, num_lfw: int = IMPOSTOR_LFW_FACES) -> np.ndarray:
    """Cosine similarities of every pair of different packaged faces (astronaut, Grace Hopper, LFW)."""
    embeddings = []
    for image in identity_images(num_lfw).values():
        faces = pipeline.detect(image)
        if faces:
            embeddings.append(pipeline.embed(image, faces[0]))
    e = np.stack(embeddings).astype(np.float64)
    return (e @ e.T)[np.triu_indices(len(e), k=1)]


def threshold_for_far(impostor: np.ndarray, far: float) -> float:
    """The cosine threshold at which a fraction ``far`` of ``impostor`` scores would be accepted
    (the larger of the empirical quantile and a Gaussian tail fit; see the module docstring)."""
    impostor = np.asarray(impostor, np.float64)
    if not 0.0 < far < 1.0:
        raise InputError(f"--far {far}: a false-accept rate is a fraction in (0, 1), for example 0.001")
    if impostor.size < 2:
        raise InputError("threshold calibration needs at least two impostor scores")
    gaussian = impostor.mean() + impostor.std(ddof=1) * NormalDist().inv_cdf(1.0 - far)
    allowed = int(np.floor(far * impostor.size))
    empirical = np.nextafter(np.sort(impostor)[::-1][allowed], np.inf)
    return float(max(empirical, gaussian))


def new_gallery(pipeline: FacePipeline, far: float = DEFAULT_FAR, threshold: float | None = None) -> Gallery:
    """An empty gallery for ``pipeline``'s recognizer; ``threshold`` (cosine) or calibrated for ``far``."""
    if threshold is None:
        threshold = threshold_for_far(impostor_scores(pipeline), far)
    dim = pipeline.embed_aligned(np.zeros((112, 112, 3), np.float32)).size
    # Rounded to float32 as the board file stores it, so both stores decide alike.
    return Gallery(pipeline.recognizer.name, int(dim), float(np.float32(threshold)))


@dataclass
class Sample:
    """One enrolment image: its most confident face, that face's quality and embedding."""

    source: str
    face: Face
    quality: Quality
    embedding: np.ndarray


def _check_recognizer(pipeline: FacePipeline, gallery: Gallery) -> None:
    if gallery.recognizer != pipeline.recognizer.name:
        raise InputError(f"the gallery holds {gallery.recognizer} embeddings; run with --recognizer "
                         f"{gallery.recognizer} (embeddings of different recognizers do not compare)")


def enrollment_samples(pipeline: FacePipeline, images: list, sources: list[str],
                       min_quality: float = DEFAULT_MIN_QUALITY) -> list[Sample]:
    """Detect, quality-check and embed each image's most confident face; refuse the lot when one
    face's quality is under ``min_quality`` (nothing is enrolled from a batch that fails)."""
    samples = []
    for image, source in zip(images, sources):
        image = as_rgb(image, source) if isinstance(image, np.ndarray) else read_image(image)
        face = pipeline.main_face(image, source)
        crop = pipeline.align(image, face)
        quality = assess_quality(image, face, crop)
        if not quality.acceptable(min_quality):
            raise InputError(f"{source}: face quality {quality.score:.2f} is under --min-quality {min_quality}: "
                             f"{'; '.join(quality.reasons)}. Enroll a sharper, larger, frontal, evenly lit photo, "
                             f"or pass --min-quality 0 to enroll this one anyway")
        samples.append(Sample(source, face, quality, pipeline.embed_aligned(crop)))
    return samples


def enroll(pipeline: FacePipeline, gallery: Gallery, name: str, images: list, sources: list[str] | None = None,
           min_quality: float = DEFAULT_MIN_QUALITY) -> list[Sample]:
    """Add the faces of ``images`` (paths or RGB arrays) to identity ``name`` of ``gallery`` (in memory;
    ``gallery.save_gallery`` writes it)."""
    _check_recognizer(pipeline, gallery)
    if not images:
        raise InputError(f"enrolling {name!r} needs at least one image")
    sources = sources or [str(im) if not isinstance(im, np.ndarray) else f"image {i}" for i, im in enumerate(images)]
    samples = enrollment_samples(pipeline, images, sources, min_quality)
    gallery.enroll(name, np.stack([s.embedding for s in samples]), [s.source for s in samples],
                   [s.quality.score for s in samples])
    return samples


def identify(pipeline: FacePipeline, gallery: Gallery, image, k: int = 5) -> list[tuple[Face, Identification]]:
    """Every face of ``image`` with its ``k`` best gallery matches, most confident face first."""
    _check_recognizer(pipeline, gallery)
    return [(face, gallery.identify(face.embedding, k)) for face in pipeline.analyze(image)]


__all__ = ["DEFAULT_FAR", "Sample", "enroll", "enrollment_samples", "identify", "impostor_scores", "new_gallery",
           "threshold_for_far"]

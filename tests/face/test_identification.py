"""Identification end to end with the packaged people: the astronaut and Grace Hopper enrolled from
their photo plus augmented copies (flip, rotation, scale, brightness, contrast: no second photo of
either ships), identified from fresh augmented copies; LFW faces that were not enrolled are unknown
at the threshold calibrated for a false-accept rate of 1e-3 on the packaged faces' impostor pairs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edgetvm.errors import InputError
from edgetvm.face.evaluation import augment, lfw_face
from edgetvm.face.identification import enroll, identify, impostor_scores, new_gallery, threshold_for_far


@pytest.fixture(scope="module")
def impostors(ort_pipeline):
    return impostor_scores(ort_pipeline)


def test_threshold_for_far(rng):
    scores = rng.normal(0.1, 0.1, 200_000)
    # Enough scores: the empirical quantile and the Gaussian fit agree on normal data.
    assert threshold_for_far(scores, 1e-2) == pytest.approx(0.1 + 0.1 * 2.3263, abs=4e-3)
    # Below 1 / n only the Gaussian tail answers.
    assert threshold_for_far(scores[:50], 1e-4) == pytest.approx(
        scores[:50].mean() + scores[:50].std(ddof=1) * 3.7190164854556804, abs=1e-9)
    with pytest.raises(InputError, match="--far"):
        threshold_for_far(scores, 1.5)


def test_identify_packaged_people(ort_pipeline, impostors, astronaut, grace):
    assert impostors.size == 102 * 101 // 2  # every packaged face is detected at 320x320
    threshold = threshold_for_far(impostors, 1e-3)
    assert (impostors >= threshold).mean() <= 1e-3
    gallery = new_gallery(ort_pipeline, threshold=threshold)
    rng = np.random.default_rng(7)
    people = {"astronaut": astronaut, "grace hopper": grace}
    for name, photo in people.items():
        enroll(ort_pipeline, gallery, name, [photo, augment(photo, rng)[0]], min_quality=0.3)
    assert gallery.identities() == [("astronaut", 2), ("grace hopper", 2)]
    for name, photo in people.items():
        for _ in range(3):
            (face, result), = identify(ort_pipeline, gallery, augment(photo, rng)[0], k=2)
            assert result.identity == name and result.matches[0].score >= threshold + 0.2
            assert result.matches[1].score < threshold
    # Unknown people: LFW faces (not enrolled) stay under the threshold.
    for i in range(10, 20):
        (face, result), = identify(ort_pipeline, gallery, lfw_face(i), k=1)
        assert result.identity is None, (i, result.matches)


def test_enrollment_refuses_bad_quality(ort_pipeline, astronaut):
    gallery = new_gallery(ort_pipeline, threshold=0.5)
    blurred = np.asarray(Image.fromarray(astronaut).filter(ImageFilter.GaussianBlur(2)))
    with pytest.raises(InputError, match=r"blurred.*--min-quality 0 to enroll"):
        enroll(ort_pipeline, gallery, "astronaut", [astronaut, blurred], ["sharp.png", "blurred.png"])
    assert len(gallery) == 0  # nothing from a refused batch
    enroll(ort_pipeline, gallery, "astronaut", [blurred], min_quality=0.0)
    assert gallery.identities() == [("astronaut", 1)] and gallery.qualities[0] < 0.5
    with pytest.raises(InputError, match="--recognizer mobilefacenet"):
        gallery.recognizer = "mobilefacenet"
        identify(ort_pipeline, gallery, astronaut)

"""The Python face pipeline on the real images of models.md, networks compiled by edgetvm, checked
against the same pipeline running the networks in onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgetvm.errors import InputError
from edgetvm.face import FacePipeline, align_face, box_iou, retinaface_priors, umeyama
from edgetvm.face.align import ARCFACE_TEMPLATE, alignment_matrix
from edgetvm.face.evaluation import augment, lfw_face, verification_pairs


def _one_face(faces):
    assert len(faces) == 1, [f.to_json() for f in faces]
    return faces[0]


def test_detects_the_one_face_and_matches_onnxruntime(tvm_pipeline, ort_pipeline_ci, astronaut, grace):
    for image, (cx_lo, cx_hi) in ((astronaut, (190, 260)), (grace, (230, 300))):
        ours = _one_face(tvm_pipeline.detect(image))
        ref = _one_face(ort_pipeline_ci.detect(image))
        assert ours.score > 0.95
        cx = (ours.box[0] + ours.box[2]) / 2
        assert cx_lo < cx < cx_hi
        assert float(box_iou(ours.box, ref.box[None])[0]) > 0.99
        np.testing.assert_allclose(ours.landmarks, ref.landmarks, atol=0.5)
        # Landmarks are inside the box, eyes above the mouth, right eye left of the left eye.
        lm = ours.landmarks
        assert (lm[:, 0] > ours.box[0]).all() and (lm[:, 0] < ours.box[2]).all()
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0] and max(lm[0, 1], lm[1, 1]) < min(lm[3, 1], lm[4, 1])


def test_finds_lfw_faces_and_not_non_faces(tvm_pipeline):
    from edgetvm.zoo import load_lfw_subset

    found = sum(bool(tvm_pipeline.detect(lfw_face(i))) for i in range(0, 100, 20))
    assert found == 5
    # The last 100 of the subset are non-faces (scikit-image's face/non-face split).
    subset = load_lfw_subset()
    false = 0
    for i in range(100, 200, 20):
        grey = np.clip(np.rint(subset[i] * 255), 0, 255).astype(np.uint8)
        false += bool(tvm_pipeline.detect(np.kron(grey, np.ones((5, 5), np.uint8))))
    assert false <= 1


def test_embeddings_match_onnxruntime(tvm_pipeline, ort_pipeline, astronaut, grace):
    for image in (astronaut, grace):
        face = ort_pipeline.detect(image)[0]
        crop = align_face(image, face.landmarks)
        ours, ref = tvm_pipeline.embed_aligned(crop), ort_pipeline.embed_aligned(crop)
        assert ours.shape == (128,) and abs(np.linalg.norm(ours) - 1) < 1e-5
        assert float(ours @ ref) > 0.9999


def test_verification_separates_same_and_different(tvm_pipeline):
    """Augmentation-based same pairs vs different people (see face/evaluation.py for what that
    means), with the networks compiled by edgetvm."""
    stats = verification_pairs(tvm_pipeline, num_lfw=4, augmentations=2, seed=1)
    print(json.dumps(stats.summary()))
    assert stats.same.size == 12 and stats.different.size == 15
    assert stats.same.min() > tvm_pipeline.threshold > stats.different.max()


def test_verification_distribution_reference(ort_pipeline):
    """The larger pair set with onnxruntime running the same networks (whose embeddings the
    compiled ones match to cosine > 0.9999, test_embeddings_match_onnxruntime)."""
    stats = verification_pairs(ort_pipeline, num_lfw=6, augmentations=3, seed=2)
    summary = stats.summary()
    print(json.dumps(summary))
    assert summary["same"]["n"] == 24 and summary["different"]["n"] == 28
    assert summary["separated"] and summary["true_accept_rate"] == 1.0 and summary["false_accept_rate"] == 0.0


@pytest.mark.slow
def test_default_pipeline_full_size(ort_pipeline, astronaut, grace):
    """The default 320x320 detector, compiled, on the larger pair set."""
    pipe = FacePipeline(num_threads=1)
    for image in (astronaut, grace):
        ours, ref = _one_face(pipe.detect(image)), _one_face(ort_pipeline.detect(image))
        assert float(box_iou(ours.box, ref.box[None])[0]) > 0.99
    stats = verification_pairs(pipe, num_lfw=6, augmentations=3, seed=2)
    assert stats.summary()["separated"]


def test_verify_api(ort_pipeline, astronaut, grace):
    rng = np.random.default_rng(3)
    variant, desc = augment(astronaut, rng)
    same = ort_pipeline.verify(astronaut, variant)
    assert same.same and same.similarity > 0.6, desc
    diff = ort_pipeline.verify(astronaut, grace)
    assert not diff.same and diff.similarity < 0.363
    assert json.loads(json.dumps(diff.to_json()))["same_person"] is False


def test_alignment_puts_landmarks_on_the_template(astronaut, ort_pipeline):
    face = ort_pipeline.detect(astronaut)[0]
    m = alignment_matrix(face.landmarks)
    mapped = face.landmarks @ m[:, :2].T + m[:, 2]
    # Five points, four parameters: a real face fits the template to a few pixels.
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 5
    # A pure similarity is recovered exactly.
    rot = 1.7 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    src = ARCFACE_TEMPLATE @ rot.T + [40, -7]
    back = umeyama(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(back[:2, :2], np.linalg.inv(rot), atol=1e-9)
    crop = align_face(astronaut, face.landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.float32 and crop.std() > 20


def test_priors_follow_the_feature_maps():
    p = retinaface_priors(320, 320)
    assert p.shape == (2 * (40 * 40 + 20 * 20 + 10 * 10), 4)
    # First cell: both sizes 16 and 32 at the centre of the first stride-8 cell.
    np.testing.assert_allclose(p[:2], [[4 / 320, 4 / 320, 16 / 320, 16 / 320], [4 / 320, 4 / 320, 32 / 320, 32 / 320]])
    assert p[-1, 2] == pytest.approx(512 / 320)


def test_yunet_pipeline_finds_the_face(astronaut):
    ref = FacePipeline("retinaface", engine="onnxruntime", num_threads=1).detect(astronaut)[0]
    face = _one_face(FacePipeline("yunet", engine="onnxruntime", num_threads=1).detect(astronaut))
    assert float(box_iou(face.box, ref.box[None])[0]) > 0.7
    assert np.abs(face.landmarks - ref.landmarks).max() < 8


def test_errors_are_clear(tmp_path, ort_pipeline):
    with pytest.raises(InputError, match="no such image"):
        ort_pipeline.detect(tmp_path / "missing.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="not an image"):
        ort_pipeline.detect(tmp_path / "junk.jpg")
    with pytest.raises(InputError, match="no face found"):
        ort_pipeline.embed(np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(InputError, match="multiples of 32"):
        FacePipeline(detector_size=(300, 300))
    with pytest.raises(InputError, match="unknown detector"):
        FacePipeline("sface")
    with pytest.raises(InputError, match="five"):
        alignment_matrix(np.zeros((4, 2)))


def test_compile_options_reach_edgetvm_compile():
    from edgetvm.errors import EdgeTVMError

    with pytest.raises(EdgeTVMError, match="does not take the options"):
        FacePipeline(compile_options={"no_such_option": 1}).detect(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.slow
def test_int8_recognizer_close_to_fp32(ort_pipeline, astronaut, grace):
    """SFace quantized to int8 (calibrated on the bundled faces): embeddings still verify."""
    pipe = FacePipeline(compile_options={"recognizer": {"quantize": "int8"}}, num_threads=1)
    e_a = pipe.embed(astronaut)
    assert float(e_a @ ort_pipeline.embed(astronaut)) > 0.98
    assert float(e_a @ pipe.embed(grace)) < pipe.threshold
    stats = verification_pairs(pipe, num_lfw=4, augmentations=2, seed=1)
    assert stats.summary()["separated"]


def test_per_network_compile_options():
    from edgetvm.cli.main import build_parser
    from edgetvm.cli.face import compile_options
    from edgetvm.face.networks import options_for

    # verify: the command that runs both networks (detect lists only the detector's options).
    args = build_parser().parse_args(["face", "verify", "a.jpg", "b.jpg", "--quantize", "int8", "--only",
                                      "recognizer", "--no-fuse"])
    options = compile_options(args)
    assert options_for(options, "recognizer") == {"fuse": False, "quantize": "int8"}
    assert options_for(options, "detector") == {"fuse": False}
    args = build_parser().parse_args(["face", "build", "-o", "b", "--prune", "0.25"])
    assert options_for(compile_options(args), "detector") == {"prune": 0.25}
    with pytest.raises(InputError, match="--prune"):
        compile_options(build_parser().parse_args(["face", "embed", "x.jpg", "--prune", "lots"]))


def test_mobilefacenet_recognizer_option(astronaut):
    """The paper-architecture recognizer (random weights: a speed/compiler option, no identities)."""
    pipe = FacePipeline(recognizer="mobilefacenet", engine="onnxruntime", num_threads=1)
    emb = pipe.embed(astronaut)
    assert emb.shape == (128,) and abs(float(np.linalg.norm(emb)) - 1) < 1e-5

"""FacePipeline: detect -> align -> embed -> verify, with the networks compiled by edgetvm.

    pipe = FacePipeline()                       # RetinaFace 320x320 + SFace, compiled for the host
    faces = pipe.detect(image)                  # [Face(box, score, landmarks)], best first
    emb = pipe.embed(image)                     # 128-d, L2-normalised, of the most confident face
    result = pipe.verify(image_a, image_b)      # cosine similarity, same person or not

Verification compares L2-normalised embeddings by cosine similarity ``s = <e_a, e_b>`` and calls a
pair the same person when ``s >= threshold``. SFace's default threshold 0.363 is the one OpenCV's
model zoo publishes for it (cosine, LFW); ``tests/face`` and ``benchmarks/bench_face.py`` report the
similarity distributions of augmentation-based same pairs and different-person pairs around it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .align import align_face
from .calibration import face_calibration
from .detect import Face, decode_retinaface, decode_yunet, select_faces
from .image import as_rgb, read_image
from .networks import RECOGNIZER_SIZE, YUNET_SIZE, detector_input, make_engine, network, recognizer_input

DEFAULT_THRESHOLDS = {"sface": 0.363, "mobilefacenet": 0.5}


@dataclass
class Verification:
    similarity: float
    threshold: float
    same: bool
    faces: tuple[Face, Face]

    def to_json(self) -> dict:
        return {"similarity": round(self.similarity, 5), "threshold": self.threshold, "same_person": self.same,
                "faces": [f.to_json() for f in self.faces]}


@dataclass
class StageTimes:
    """Seconds spent per stage by the last call of each stage (read by the benchmark)."""

    seconds: dict[str, float] = field(default_factory=dict)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def l2_normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class FacePipeline:
    """Detector + 5-point alignment + recognizer.

    ``detector``: "retinaface" (default) or "yunet" (fixed 640x640). ``detector_size``: (W, H) of the
    RetinaFace input the image is letterboxed into. ``engine``: "edgetvm" (compiled for the host) or
    "onnxruntime" (the reference). ``compile_options`` go to ``edgetvm.compile`` unchanged
    (``quantize``, ``calibration``, ``prune``, ``fuse``, ...); keys ``"detector"`` / ``"recognizer"``
    holding dicts apply to that network only. Quantizing or pruning without ``calibration``
    calibrates on real faces (``calibration.face_calibration``).
    """

    def __init__(self, detector: str = "retinaface", recognizer: str = "sface", *,
                 detector_size: tuple[int, int] = (320, 320), engine: str = "edgetvm",
                 score_threshold: float = 0.6, nms_threshold: float = 0.4, max_faces: int = 50,
                 threshold: float | None = None, compile_options: dict | None = None,
                 num_threads: int | None = None):
        self.detector = network(detector, "detector")
        self.recognizer = network(recognizer, "recognizer")
        if detector == "yunet":
            detector_size = YUNET_SIZE
        w, h = (int(v) for v in detector_size)
        if w % 32 or h % 32 or w <= 0 or h <= 0:
            raise InputError(f"detector_size {detector_size}: width and height must be positive multiples of 32 "
                             f"(the detector's coarsest stride)")
        self.detector_size = (w, h)
        self.engine = engine
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_faces = int(max_faces)
        self.threshold = float(DEFAULT_THRESHOLDS[recognizer] if threshold is None else threshold)
        self.compile_options = dict(compile_options or {})
        self.num_threads = num_threads
        self.times = StageTimes()
        self._detect_fn = None
        self._embed_fn = None

    # Networks are compiled on first use, so a pipeline that only detects never builds SFace.
    def _detector_engine(self):
        if self._detect_fn is None:
            self._detect_fn = make_engine(self.engine, self.detector, self.detector_size, self.compile_options,
                                          self.num_threads, calibrate=face_calibration)
        return self._detect_fn

    def _recognizer_engine(self):
        if self._embed_fn is None:
            self._embed_fn = make_engine(self.engine, self.recognizer, RECOGNIZER_SIZE, self.compile_options,
                                         self.num_threads, calibrate=face_calibration)
        return self._embed_fn

    def detector_input(self, image: np.ndarray):
        """The detector's input tensor for ``image`` and the letterbox geometry."""
        return detector_input(self.detector, self.detector_size, image)

    def decode(self, outputs: list[np.ndarray], box, image_shape) -> list[Face]:
        w, h = self.detector_size
        decode = decode_retinaface if self.detector.name == "retinaface" else decode_yunet
        det = decode(outputs, w, h, self.score_threshold)
        return select_faces(det, box, image_shape[1], image_shape[0], self.nms_threshold, self.max_faces)

    def detect(self, image) -> list[Face]:
        """Faces in ``image`` (path or RGB array), most confident first, in image pixels."""
        image = self._image(image)
        started = time.perf_counter()
        x, box = self.detector_input(image)
        outputs = self._detector_engine()(x)
        faces = self.decode(outputs, box, image.shape)
        self.times.seconds["detect"] = time.perf_counter() - started
        return faces

    def align(self, image, face: Face) -> np.ndarray:
        """The 112x112 RGB crop (float32 0..255) aligned to the ArcFace template."""
        started = time.perf_counter()
        crop = align_face(self._image(image), face.landmarks)
        self.times.seconds["align"] = time.perf_counter() - started
        return crop

    def embed_aligned(self, crop: np.ndarray) -> np.ndarray:
        """L2-normalised embedding of an aligned 112x112 RGB crop."""
        crop = np.asarray(crop)
        if crop.shape != (112, 112, 3):
            raise InputError(f"embed_aligned takes an aligned (112, 112, 3) RGB crop, got shape {crop.shape}")
        started = time.perf_counter()
        out = self._recognizer_engine()(recognizer_input(self.recognizer, crop))[0]
        self.times.seconds["embed"] = time.perf_counter() - started
        return l2_normalize(out)

    def embed(self, image, face: Face | None = None) -> np.ndarray:
        """Embedding of ``face`` in ``image`` (default: the most confident detected face)."""
        name = str(image) if not isinstance(image, np.ndarray) else "image"
        image = self._image(image)
        if face is None:
            face = self.main_face(image, name)
        return self.embed_aligned(self.align(image, face))

    def analyze(self, image) -> list[Face]:
        """Detect every face and attach its embedding (``face.embedding``)."""
        image = self._image(image)
        faces = self.detect(image)
        for face in faces:
            face.embedding = self.embed_aligned(self.align(image, face))
        return faces

    def verify(self, image_a, image_b) -> Verification:
        """Is the most confident face of ``image_a`` the same person as that of ``image_b``?"""
        pair = []
        for label, image in (("first image", image_a), ("second image", image_b)):
            name = label if isinstance(image, np.ndarray) else str(image)
            image = self._image(image)
            face = self.main_face(image, name)
            face.embedding = self.embed_aligned(self.align(image, face))
            pair.append(face)
        similarity = cosine_similarity(pair[0].embedding, pair[1].embedding)
        return Verification(similarity, self.threshold, similarity >= self.threshold, (pair[0], pair[1]))

    def main_face(self, image: np.ndarray, name: str = "image") -> Face:
        """The most confident face of ``image``; InputError naming ``name`` when there is none."""
        faces = self.detect(image)
        if not faces:
            raise InputError(f"{name}: no face found (score threshold {self.score_threshold}); give an image with a "
                             f"visible frontal face, or lower the score threshold")
        return faces[0]

    @staticmethod
    def _image(image) -> np.ndarray:
        if isinstance(image, np.ndarray):
            return as_rgb(image)
        return read_image(image)


__all__ = ["FacePipeline", "Verification", "cosine_similarity", "l2_normalize"]

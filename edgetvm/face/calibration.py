"""Calibration inputs of the face networks: real faces, as each network sees them.

A face network quantized or pruned without calibration data calibrates on the images models.md
ships: the astronaut, Grace Hopper, LFW faces and augmented copies of the first two. A detector
sees them letterboxed into its input; a recognizer sees the aligned 112x112 crop of the most
confident face the float RetinaFace finds in each (images where it finds none are left out).
"""

from __future__ import annotations

import numpy as np

from .align import align_face
from .detect import Face, decode_retinaface, select_faces
from .evaluation import augment, identity_images
from .image import as_rgb
from .networks import Network, detector_input, edgetvm_engine, network, recognizer_input

# The float detector that finds the recognizers' calibration faces: FacePipeline's defaults.
FINDER_DETECTOR = "retinaface"
FINDER_SIZE = (320, 320)
FINDER_SCORE_THRESHOLD = 0.6
FINDER_NMS_THRESHOLD = 0.4
FINDER_MAX_FACES = 50


def calibration_images(num_lfw: int = 6) -> list[np.ndarray]:
    """The identity images of ``evaluation`` (RGB uint8) and augmented copies of the first two."""
    images = list(identity_images(num_lfw).values())
    rng = np.random.default_rng(0)
    images += [augment(img, rng)[0] for img in images[:2]]
    return images


def find_faces(image: np.ndarray) -> list[Face]:
    """Faces in ``image``, most confident first, found by the float RetinaFace compiled for the host."""
    net = network(FINDER_DETECTOR, "detector")
    # One thread: calibration is a short host job, and TVM's spinning pool is slow on a busy machine.
    detector = edgetvm_engine(net, FINDER_SIZE, "host", {}, num_threads=1)
    x, box = detector_input(net, FINDER_SIZE, image)
    detections = decode_retinaface(detector(x), *FINDER_SIZE, FINDER_SCORE_THRESHOLD)
    return select_faces(detections, box, image.shape[1], image.shape[0], FINDER_NMS_THRESHOLD, FINDER_MAX_FACES)


def face_calibration(net: Network, size: tuple[int, int], num_lfw: int = 6) -> list[np.ndarray]:
    """Calibration inputs of ``net`` at input ``size`` (W, H): letterboxed detector inputs, or the
    recognizer inputs of aligned face crops."""
    images = [as_rgb(img) for img in calibration_images(num_lfw)]
    if net.role == "detector":
        return [detector_input(net, size, img)[0] for img in images]
    samples = []
    for img in images:
        faces = find_faces(img)
        if faces:
            samples.append(recognizer_input(net, align_face(img, faces[0].landmarks)))
    return samples

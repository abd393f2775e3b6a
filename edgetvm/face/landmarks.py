"""Dense face landmarks (MediaPipe FaceMesh, 468 points) and head pose from them.

The crop is MediaPipe's (``face_landmark_front_cpu``: ``DetectionsToRectsCalculator`` then
``RectTransformationCalculator``): a square of side ``s = 1.5 * max(w, h)`` of the detected box,
centred on the box and rotated by the eye line ``theta = atan2(y_le - y_re, x_le - x_re)`` (right
eye to left eye: the detector's first two landmarks), resampled to 192x192 (bilinear, zero outside
the image, ``image.warp_affine``) and scaled to [0, 1]. With ``k = 192 / s`` and ``R(theta)`` the
rotation, an image point ``p`` (pixel centres at integers) lands at crop pixel
``q = k R(-theta) (p - c) + (95.5, 95.5)``.

FaceMesh returns (x, y, z) per point in crop units, the crop's left edge at x = 0 (a pixel centre
is at i + 0.5) and z in roughly the scale of x, smaller nearer the camera; they go back to the
image with ``p = c + R(theta) (q - 96) / k``, ``z / k``. Its second output is a face-presence logit
(sigmoid: the probability the crop holds a face), which the tracker uses to drop a lost face.
MediaPipe's next-frame crop from a mesh (``face_landmarks_to_roi``) is ``roi_from_mesh``: the mesh's
bounding box, rotated by the outer eye corners 33 -> 263, scaled 1.5; ``FaceLandmarker.from_face``
runs FaceMesh once more on that crop of its own first mesh.

Iris (MediaPipe's ``iris_landmark_cpu``) runs per eye on a square of ``2.3x`` the distance between
the eye's corners (33 -> 133 for the person's right eye, 362 -> 263 for the left), turned by that
line, resampled to 64x64 in [0, 1]. The model was trained on one side's eyes: the crop of the
person's left eye (MediaPipe's "right" eye) is mirrored before the network and its points mirrored
back (``x -> 64 - x``). It gives 5 iris points (centre, then four on the rim) and 71 eye-contour points.
MediaPipe pads crops that leave the image by replicating the border; here they are zero.

Head pose is read from the mesh's own geometry (no canonical face model ships in a package we
fetch): ``x = unit(P263 - P33)`` (right eye outer corner to left eye outer corner),
``y = unit(v - (v . x) x)`` with ``v = P152 - P10`` (forehead top to chin), in camera axes (x right,
y down, z away from the camera). Then::

    roll  = atan2(x_y, x_x)   in-plane tilt of the eye line; positive: the image-right eye lower
    yaw   = asin(x_z)         positive: the face turned toward the image's right
    pitch = asin(y_z)         positive: the chin farther than the forehead (looking up)

Roll does not change z, so yaw and pitch do not depend on roll. The angles are as good as
FaceMesh's z scale. Zero pitch means the forehead-chin line is parallel to the image plane; a face
looking into the camera reads a few degrees of pitch (the astronaut 10, Grace Hopper 5: the
forehead leans back), which a rigid fit to MediaPipe's canonical face would remove, had a package
we fetch shipped that model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..zoo import PREPROCESSING
from .detect import Face
from .image import as_rgb, save_image, warp_affine
from .networks import Network, make_engine

FACEMESH = Network("facemesh", "landmarks", "input_1", False,
                   "MediaPipe FaceMesh (face_landmark.tflite): 468 (x, y, z) points and a face-presence logit",
                   PREPROCESSING["facemesh"])
IRIS = Network("iris", "iris", "input_1", False,
               "MediaPipe Iris (iris_landmark.tflite): 71 eye-contour and 5 iris (x, y, z) points of one eye",
               PREPROCESSING["iris"])
MESH_SIZE = 192
IRIS_SIZE = 64
IRIS_ROI_SCALE = 2.3
# Iris's points per eye: 5 on the iris (centre, then the rim) and 71 on the eye's contour.
IRIS_POINTS = 5 + 71
# Eye corners (outer, inner) the iris crop is cut between, and whether the crop is mirrored.
EYE_CORNERS = {"right": ((33, 133), False), "left": ((362, 263), True)}
MESH_POINTS = 468
ROI_SCALE = 1.5
# Mesh indices: outer eye corners (person's right, left), forehead top, chin.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER, FOREHEAD, CHIN = 33, 263, 10, 152


@dataclass(frozen=True)
class FaceRoi:
    """A rotated square in image pixels: centre (cx, cy), side, rotation (radians, clockwise on screen)."""

    cx: float
    cy: float
    size: float
    angle: float

    def matrix(self, out_size: int = MESH_SIZE) -> np.ndarray:
        """2x3 map image pixel -> crop pixel (pixel centres at integers on both sides)."""
        k = out_size / self.size
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        rot = k * np.array([[cos, sin], [-sin, cos]])  # k R(-angle)
        half = (out_size - 1) / 2
        t = np.array([half, half]) - rot @ np.array([self.cx, self.cy])
        return np.concatenate([rot, t[:, None]], axis=1).astype(np.float32)

    def to_image(self, points: np.ndarray, out_size: int = MESH_SIZE) -> np.ndarray:
        """Network points (N, 3) in crop units (left edge at 0) -> image pixels; z scaled alike."""
        k = out_size / self.size
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        q = np.asarray(points, dtype=np.float64)
        local = (q[:, :2] - out_size / 2) / k
        xy = local @ np.array([[cos, sin], [-sin, cos]]) + np.array([self.cx, self.cy])
        return np.concatenate([xy, q[:, 2:3] / k], axis=1)

    def corners(self) -> np.ndarray:
        """The four corners (4, 2) in image pixels, clockwise from the top left of the crop."""
        half = self.size / 2
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        return local @ np.array([[cos, sin], [-sin, cos]]) + np.array([self.cx, self.cy])

    def to_json(self) -> dict:
        return {"center": [round(self.cx, 2), round(self.cy, 2)], "size": round(self.size, 2),
                "angle_degrees": round(math.degrees(self.angle), 3)}


def roi_from_face(face: Face, scale: float = ROI_SCALE) -> FaceRoi:
    """MediaPipe's crop of a detected face: box centre, ``scale * max(w, h)``, eye-line rotation."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    side = scale * max(x2 - x1, y2 - y1)
    if side <= 1:
        raise InputError(f"face box {[x1, y1, x2, y2]} is empty: no crop for the landmarks")
    (rx, ry), (lx, ly) = (np.asarray(face.landmarks[i], dtype=np.float64) for i in (0, 1))
    return FaceRoi((x1 + x2) / 2, (y1 + y2) / 2, side, math.atan2(ly - ry, lx - rx))


def roi_from_mesh(points: np.ndarray, scale: float = ROI_SCALE) -> FaceRoi:
    """MediaPipe's next-frame crop from a mesh in image pixels: the bounding box of the points in the
    frame rotated by the outer eye corners, scaled by ``scale`` (square)."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    d = xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]
    angle = math.atan2(d[1], d[0])
    cos, sin = math.cos(angle), math.sin(angle)
    local = xy @ np.array([[cos, -sin], [sin, cos]])  # R(-angle) applied to each row
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre = ((lo + hi) / 2) @ np.array([[cos, sin], [-sin, cos]])
    return FaceRoi(float(centre[0]), float(centre[1]), float(scale * max(hi - lo)), angle)


def roi_from_eye(points: np.ndarray, corners: tuple[int, int], scale: float = IRIS_ROI_SCALE) -> FaceRoi:
    """MediaPipe's iris crop: centred between the two eye corners, turned by the line joining them,
    ``scale`` times the longer side of their bounding box."""
    a, b = (np.asarray(points, dtype=np.float64)[i, :2] for i in corners)
    d = b - a
    if not np.abs(d).max() * scale >= 1e-3:
        raise InputError(f"mesh points {corners[0]} and {corners[1]} (an eye's corners) coincide: no crop for Iris")
    return FaceRoi(float((a[0] + b[0]) / 2), float((a[1] + b[1]) / 2), float(scale * max(abs(d[0]), abs(d[1]))),
                   math.atan2(d[1], d[0]))


@dataclass
class Iris:
    """One eye: ``iris`` (5, 3) (centre, then four rim points) and ``contour`` (71, 3), image pixels."""

    iris: np.ndarray
    contour: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return self.iris[0, :2]

    @property
    def radius(self) -> float:
        """Mean distance of the four rim points from the centre, in image pixels."""
        return float(np.linalg.norm(self.iris[1:, :2] - self.iris[0, :2], axis=1).mean())

    def to_json(self) -> dict:
        return {"center": [round(float(v), 2) for v in self.center], "radius": round(self.radius, 2),
                "iris": [[round(float(v), 2) for v in p] for p in self.iris]}


def iris_input(image: np.ndarray, roi: FaceRoi, mirrored: bool) -> np.ndarray:
    """Iris's (1, 64, 64, 3) float32 input: the eye crop in RGB scaled to [0, 1], mirrored if asked."""
    crop = warp_affine(as_rgb(image), roi.matrix(IRIS_SIZE), IRIS_SIZE, IRIS_SIZE)
    if mirrored:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop[None] * np.float32(IRIS.preprocess["scale"]), dtype=np.float32)


def decode_iris(outputs: list[np.ndarray], roi: FaceRoi, mirrored: bool) -> Iris:
    """Iris outputs (213 contour and 15 iris coordinates; either order) -> an Iris in image pixels."""
    by_size = {int(np.asarray(o).size): np.asarray(o, dtype=np.float64).reshape(-1, 3) for o in outputs}
    if set(by_size) != {213, 15}:
        raise InputError(f"Iris outputs of sizes {sorted(3 * len(v) for v in by_size.values())}: expected 213 and 15")
    parts = []
    for points in (by_size[15], by_size[213]):
        points = points.copy()
        if mirrored:
            points[:, 0] = IRIS_SIZE - points[:, 0]
        parts.append(roi.to_image(points, IRIS_SIZE).astype(np.float32))
    return Iris(*parts)


@dataclass
class HeadPose:
    """Yaw, pitch, roll in degrees (module docstring: axes and signs)."""

    yaw: float
    pitch: float
    roll: float

    def to_json(self) -> dict:
        return {"yaw": round(self.yaw, 2), "pitch": round(self.pitch, 2), "roll": round(self.roll, 2)}


def head_pose(points: np.ndarray) -> HeadPose:
    """Yaw, pitch and roll of a mesh (468, 3) in image pixels, from its eye line and forehead-chin line."""
    p = np.asarray(points, dtype=np.float64)
    x = p[LEFT_EYE_OUTER] - p[RIGHT_EYE_OUTER]
    v = p[CHIN] - p[FOREHEAD]
    if np.linalg.norm(x) < 1e-9 or np.linalg.norm(v) < 1e-9:
        raise InputError("head pose: the mesh's eye corners or forehead and chin coincide")
    x /= np.linalg.norm(x)
    y = v - (v @ x) * x
    y /= np.linalg.norm(y)
    return HeadPose(yaw=math.degrees(math.asin(np.clip(x[2], -1, 1))),
                    pitch=math.degrees(math.asin(np.clip(y[2], -1, 1))),
                    roll=math.degrees(math.atan2(x[1], x[0])))


@dataclass
class FaceMesh:
    """The mesh of one face: ``points`` (468, 3) in image pixels, face presence in [0, 1], the crop."""

    points: np.ndarray
    presence: float
    roi: FaceRoi

    @property
    def pose(self) -> HeadPose:
        return head_pose(self.points)

    def box(self) -> np.ndarray:
        """The axis-aligned bounding box (x1, y1, x2, y2) of the mesh in image pixels."""
        xy = self.points[:, :2]
        return np.concatenate([xy.min(axis=0), xy.max(axis=0)]).astype(np.float32)

    def to_json(self, points: bool = True) -> dict:
        out = {"presence": round(self.presence, 5), "roi": self.roi.to_json(), "pose": self.pose.to_json()}
        if points:
            out["points"] = [[round(float(v), 2) for v in p] for p in self.points]
        return out


def mesh_input(image: np.ndarray, roi: FaceRoi) -> np.ndarray:
    """FaceMesh's (1, 192, 192, 3) float32 input: the crop of ``roi`` in RGB scaled to [0, 1]."""
    crop = warp_affine(as_rgb(image), roi.matrix(), MESH_SIZE, MESH_SIZE)
    scale = np.float32(FACEMESH.preprocess["scale"])
    return np.ascontiguousarray(crop[None] * scale, dtype=np.float32)


def decode_mesh(outputs: list[np.ndarray], roi: FaceRoi) -> FaceMesh:
    """FaceMesh outputs (the 1404 coordinates, the presence logit; either order) -> a FaceMesh."""
    by_size = {int(np.asarray(o).size): np.asarray(o, dtype=np.float32).reshape(-1) for o in outputs}
    if set(by_size) != {MESH_POINTS * 3, 1}:
        raise InputError(f"FaceMesh outputs of sizes {sorted(by_size)}: expected {MESH_POINTS * 3} and 1")
    logit = float(by_size[1][0])
    presence = 1.0 / (1.0 + math.exp(-logit)) if logit > -60 else 0.0
    return FaceMesh(roi.to_image(by_size[MESH_POINTS * 3].reshape(MESH_POINTS, 3)).astype(np.float32), presence, roi)


class FaceLandmarker:
    """FaceMesh on the crop of a detected face (or of a previous mesh), and Iris on the crops of its
    eyes, compiled by edgetvm.

    ``engine``: "edgetvm" (compiled for the host through the compile cache) or "litert" (the
    reference: the same crops, the .tflite run by LiteRT).
    """

    def __init__(self, engine: str = "edgetvm", *, compile_options: dict | None = None,
                 num_threads: int | None = None):
        self.engine = engine
        self.compile_options = dict(compile_options or {})
        self.num_threads = num_threads
        self._run = None
        self._iris = None

    def run_input(self, x: np.ndarray) -> list[np.ndarray]:
        """The network's raw outputs for a prepared (1, 192, 192, 3) input."""
        if self._run is None:
            self._run = make_engine(self.engine, FACEMESH, (MESH_SIZE, MESH_SIZE), self.compile_options,
                                    self.num_threads)
        return self._run(x)

    def mesh(self, image: np.ndarray, roi: FaceRoi) -> FaceMesh:
        return decode_mesh(self.run_input(mesh_input(image, roi)), roi)

    def run_iris(self, x: np.ndarray) -> list[np.ndarray]:
        """Iris's raw outputs for a prepared (1, 64, 64, 3) input."""
        if self._iris is None:
            self._iris = make_engine(self.engine, IRIS, (IRIS_SIZE, IRIS_SIZE), self.compile_options,
                                     self.num_threads)
        return self._iris(x)

    def irises(self, image: np.ndarray, mesh: FaceMesh) -> dict[str, Iris]:
        """Both eyes of a mesh: {"right": Iris, "left": Iris} (the person's)."""
        out = {}
        for eye, (corners, mirrored) in EYE_CORNERS.items():
            roi = roi_from_eye(mesh.points, corners)
            out[eye] = decode_iris(self.run_iris(iris_input(image, roi, mirrored)), roi, mirrored)
        return out

    def from_face(self, image: np.ndarray, face: Face, refine: int = 1) -> FaceMesh:
        """The mesh of a detected face: on MediaPipe's crop of its box and eye line, then ``refine``
        times on the crop of the mesh itself (``roi_from_mesh``, as MediaPipe's video graph does).

        The detector's five points are coarse: at a 160x160 RetinaFace input, turning the astronaut by
        20 degrees turns its eye line by 5, and a mesh on a crop rotated that far off reads the roll
        3 degrees short. One pass on the mesh's own crop reads it within 0.2 degrees
        (tests/face/test_landmarks.py).
        """
        mesh = self.mesh(image, roi_from_face(face))
        for _ in range(refine):
            mesh = self.mesh(image, roi_from_mesh(mesh.points))
        return mesh


def draw_meshes(image: np.ndarray, meshes: list[FaceMesh], path: str | os.PathLike,
                labels: list[str] | None = None, irises: list[dict[str, Iris]] | None = None) -> Path:
    """Draw each mesh's points, its crop square, its irises (circles) and an optional label onto a
    copy of ``image``."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(as_rgb(image))
    draw = ImageDraw.Draw(canvas)
    for i, mesh in enumerate(meshes):
        r = max(0.8, mesh.roi.size / 400)
        for x, y in mesh.points[:, :2]:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 255))
        corners = [tuple(c) for c in mesh.roi.corners()]
        draw.line(corners + corners[:1], fill=(0, 255, 0), width=max(1, int(mesh.roi.size / 150)))
        text = labels[i] if labels else "yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}".format(
            **mesh.pose.to_json())
        for eye in (irises[i] if irises else {}).values():
            (cx, cy), radius = eye.center, eye.radius
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=(255, 0, 0))
        x0, y0 = mesh.box()[:2]
        draw.text((float(x0), max(0.0, float(y0) - 14)), text, fill=(255, 255, 255))
    return save_image(canvas, path)


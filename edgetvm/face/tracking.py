"""Face tracking and counting over a sequence of frames: the detector every N frames, FaceMesh
following each face in between (MediaPipe's face_landmark_front scheme), stable ids.

* **Detection frames** (0, N, 2N, ...): detections are matched to the live tracks greedily by
  intersection over union, highest first, a pair counting only at ``IoU >= iou_threshold``. A
  track's box is the bounding box of its mesh and a detection's is the detector's box; for the
  same face they overlap at IoU ~0.9 (the astronaut: 0.88), for two faces side by side at 0. A matched track takes the
  detection's box and a fresh mesh from it; an unmatched detection starts a new track (an
  *entry*); an unmatched track ends (an *exit*).
* **Frames in between**: each track's mesh is run again on the crop MediaPipe derives from its
  previous mesh (``landmarks.roi_from_mesh``); the track ends (an exit) when FaceMesh's presence
  falls under ``presence_threshold``, i.e. the face left its crop.

A face that enters between detection frames is picked up at the next one (at most N - 1 frames
late). Ids are not re-identified: a person who leaves and comes back is a new entry. A face that
replaces another inside the same crop between detection frames keeps the old id (the mesh cannot
tell people apart; the recognizer could). Two tracks whose meshes slide onto one face between
detection frames (faces crossing) stay two until the next detection frame, where the one the
detection does not continue ends and counts as an exit.

The board bundle runs the same algorithm in C (``face/c/face_track.c``, ``face_demo --track``), with
these defaults written into its ``face_config.h``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .detect import Face
from .image import as_rgb, save_image
from .landmarks import FaceLandmarker, FaceMesh, roi_from_mesh
from .nms import box_iou
from .pipeline import FacePipeline

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp")
# The defaults of FaceTracker, and of face_demo --track in the board bundle (face_config.h).
DETECT_EVERY = 5
IOU_THRESHOLD = 0.3
PRESENCE_THRESHOLD = 0.5


@dataclass
class Track:
    """One followed face: its id, box (x1, y1, x2, y2) in the current frame, mesh, and frame span."""

    track_id: int
    box: np.ndarray
    mesh: FaceMesh
    first_frame: int
    last_frame: int

    def to_json(self) -> dict:
        return {"id": self.track_id, "box": [round(float(v), 2) for v in self.box],
                "presence": round(self.mesh.presence, 4), "since_frame": self.first_frame}


def match_by_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (i, j) of ``boxes_a`` and ``boxes_b``, highest IoU first, IoU >= threshold."""
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return []
    iou = np.stack([box_iou(np.asarray(a, np.float32), np.asarray(boxes_b, np.float32)) for a in boxes_a])
    pairs = []
    used_a, used_b = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < threshold:
            break
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


class FaceTracker:
    """Follows faces frame after frame (module docstring); ``update(frame)`` returns the live tracks."""

    def __init__(self, pipeline: FacePipeline, landmarker: FaceLandmarker, *, detect_every: int = DETECT_EVERY,
                 iou_threshold: float = IOU_THRESHOLD, presence_threshold: float = PRESENCE_THRESHOLD):
        if detect_every < 1:
            raise InputError(f"detect_every {detect_every}: run the detector every 1 or more frames")
        self.pipeline = pipeline
        self.landmarker = landmarker
        self.detect_every = int(detect_every)
        self.iou_threshold = float(iou_threshold)
        self.presence_threshold = float(presence_threshold)
        self.tracks: list[Track] = []
        self.frame_index = 0
        self.last_detected = False
        self.entries = 0
        self.exits = 0
        self._next_id = 1

    def update(self, frame: np.ndarray) -> list[Track]:
        frame = as_rgb(frame, f"frame {self.frame_index}")
        self.last_detected = self.frame_index % self.detect_every == 0
        if self.last_detected:
            self._detect(frame)
        else:
            self._follow(frame)
        self.frame_index += 1
        return list(self.tracks)

    def _detect(self, frame: np.ndarray) -> None:
        faces: list[Face] = self.pipeline.detect(frame)
        pairs = match_by_iou([t.box for t in self.tracks], [f.box for f in faces], self.iou_threshold)
        kept = []
        for i, j in pairs:
            track = self.tracks[i]
            track.box = np.asarray(faces[j].box, np.float32)
            track.mesh = self.landmarker.from_face(frame, faces[j])
            track.last_frame = self.frame_index
            kept.append(track)
        self.exits += len(self.tracks) - len(kept)
        matched = {j for _, j in pairs}
        for j, face in enumerate(faces):
            if j not in matched:
                kept.append(Track(self._next_id, np.asarray(face.box, np.float32),
                                  self.landmarker.from_face(frame, face), self.frame_index, self.frame_index))
                self._next_id += 1
                self.entries += 1
        self.tracks = sorted(kept, key=lambda t: t.track_id)

    def _follow(self, frame: np.ndarray) -> None:
        kept = []
        for track in self.tracks:
            mesh = self.landmarker.mesh(frame, roi_from_mesh(track.mesh.points))
            if mesh.presence < self.presence_threshold:
                self.exits += 1
                continue
            track.mesh, track.box, track.last_frame = mesh, mesh.box(), self.frame_index
            kept.append(track)
        self.tracks = kept

    def counts(self) -> dict:
        """Entries (tracks started), exits (tracks ended) and faces in view now."""
        return {"entries": self.entries, "exits": self.exits, "in_view": len(self.tracks)}


def frame_paths(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give a folder of frames (png, jpg, ppm)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not paths:
        raise InputError(f"{folder}: no frames ({', '.join(FRAME_SUFFIXES)}) in this folder")
    return paths


def track_color(track_id: int) -> tuple[int, int, int]:
    """A distinct, bright colour per id (golden-ratio hue steps)."""
    hue = (track_id * 0.618033988749895) % 1.0
    rgb = np.clip(np.abs((hue * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)
    return tuple(int(55 + 200 * v) for v in rgb)


def draw_tracks(frame: np.ndarray, tracks: list[Track], path: str | os.PathLike) -> Path:
    """Draw each track's box and id onto a copy of ``frame``; write it."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(as_rgb(frame))
    draw = ImageDraw.Draw(canvas)
    for track in tracks:
        x1, y1, x2, y2 = (float(v) for v in track.box)
        color = track_color(track.track_id)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=max(1, int(round((x2 - x1) / 60))))
        draw.text((x1 + 2, max(0.0, y1 - 12)), f"#{track.track_id}", fill=color)
    return save_image(canvas, path)

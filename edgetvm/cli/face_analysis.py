"""``edgetvm face landmarks|attributes|track``: dense landmarks and head pose, age/gender/eyes/mouth,
and tracking with counting over a folder of frames.

``--engine onnxruntime`` runs every network in its reference runtime: onnxruntime for the ONNX
networks (detector, age, gender), LiteRT for FaceMesh (a TFLite model).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable

from ..face.attributes import AttributeEstimator
from ..face.image import read_image
from ..face.landmarks import FaceLandmarker, draw_meshes
from ..face.tracking import DETECT_EVERY, IOU_THRESHOLD, FaceTracker, draw_tracks, frame_paths
from .options import number_in

JSON_HELP = "print one line of JSON instead of text"


def _mesh_engine(args: argparse.Namespace) -> str:
    return "edgetvm" if args.engine == "edgetvm" else "litert"


def _meshes(args: argparse.Namespace, pipeline: Callable):
    image = read_image(args.image)  # before the networks compile: a bad path fails at once
    pipe = pipeline(args)
    landmarker = FaceLandmarker(_mesh_engine(args), num_threads=args.threads)
    faces = pipe.detect(image)
    return image, faces, [landmarker.from_face(image, face) for face in faces], landmarker


def cmd_face_landmarks(args: argparse.Namespace, pipeline: Callable) -> int:
    image, faces, meshes, landmarker = _meshes(args, pipeline)
    irises = [landmarker.irises(image, mesh) for mesh in meshes]
    if args.json:
        print(json.dumps({"image": str(args.image), "faces": [
            {**face.to_json(), "mesh": mesh.to_json(), "iris": {eye: i.to_json() for eye, i in eyes.items()}}
            for face, mesh, eyes in zip(faces, meshes, irises)]}))
    else:
        print(f"{args.image}: {len(faces)} face(s)")
        for i, (mesh, eyes) in enumerate(zip(meshes, irises)):
            pose = mesh.pose
            centers = "  ".join(f"{eye} iris ({e.center[0]:.1f},{e.center[1]:.1f}) r {e.radius:.1f}"
                                for eye, e in eyes.items())
            print(f"face {i}: {len(mesh.points)} points, presence {mesh.presence:.3f}, yaw {pose.yaw:+.1f} "
                  f"pitch {pose.pitch:+.1f} roll {pose.roll:+.1f} degrees; {centers}")
    if args.output:
        out = draw_meshes(image, meshes, args.output, irises=irises)
        if not args.json:
            print(f"wrote {out}")
    return 0


def cmd_face_attributes(args: argparse.Namespace, pipeline: Callable) -> int:
    image, faces, meshes, _ = _meshes(args, pipeline)
    estimator = AttributeEstimator(args.engine, num_threads=args.threads)
    attributes = [estimator.estimate(image, mesh) for mesh in meshes]
    if args.json:
        print(json.dumps({"image": str(args.image), "faces": [
            {**face.to_json(), "attributes": attr.to_json(), "pose": mesh.pose.to_json()}
            for face, mesh, attr in zip(faces, meshes, attributes)]}))
    else:
        print(f"{args.image}: {len(faces)} face(s)")
        for i, attr in enumerate(attributes):
            print(f"face {i}: {attr.label()} (gender p {attr.gender_probability:.3f}, eye ratios "
                  f"{attr.eye_ratios[0]:.3f}/{attr.eye_ratios[1]:.3f}, mouth ratio {attr.mouth_ratio:.3f})")
    if args.output:
        out = draw_meshes(image, meshes, args.output, labels=[a.label() for a in attributes])
        if not args.json:
            print(f"wrote {out}")
    return 0


def cmd_face_track(args: argparse.Namespace, pipeline: Callable) -> int:
    paths = frame_paths(args.frames)
    pipe = pipeline(args)
    tracker = FaceTracker(pipe, FaceLandmarker(_mesh_engine(args), num_threads=args.threads),
                          detect_every=args.detect_every, iou_threshold=args.iou)
    out_dir = Path(args.output) if args.output else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for path in paths:
        image = read_image(path)
        tracks = tracker.update(image)
        frames.append({"frame": path.name, "detected": tracker.last_detected,
                       "tracks": [t.to_json() for t in tracks]})
        if out_dir is not None:
            draw_tracks(image, tracks, out_dir / (path.stem + ".png"))
        if not args.json:
            ids = ", ".join(f"#{t.track_id}" for t in tracks) or "-"
            print(f"{path.name}: {len(tracks)} face(s) {ids}{'  (detected)' if tracker.last_detected else ''}")
    counts = tracker.counts()
    if args.json:
        print(json.dumps({"frames": frames, **counts}))
    else:
        print(f"entries {counts['entries']}, exits {counts['exits']}, distinct faces {counts['entries']}, "
              f"in view at the end {counts['in_view']}")
        if out_dir is not None:
            print(f"wrote {len(paths)} annotated frames to {out_dir}/")
    return 0


def add_analysis_commands(command: Callable[[str, str], argparse.ArgumentParser],
                          add_network_options: Callable, pipeline: Callable) -> None:
    """Register landmarks, attributes and track with ``face``'s ``command`` factory; ``pipeline(args)``
    builds the detector pipeline from the shared network options."""
    def image_command(name: str, help_text: str, drawn: str, handler: Callable) -> None:
        p = command(name, help_text)
        p.add_argument("image", help="the image (png, jpg, ppm, ...)")
        p.add_argument("-o", "--output", "--out", dest="output",
                       help=f"write the image with {drawn} drawn (png/jpg)")
        p.add_argument("--json", action="store_true", help=JSON_HELP)
        add_network_options(p, recognizer=False)
        p.set_defaults(func=lambda args: handler(args, pipeline))

    image_command("landmarks", "dense landmarks (FaceMesh, 468 points), irises and head pose of every face", "the meshes",
                  cmd_face_landmarks)
    image_command("attributes", "age, gender, eyes open or closed, mouth open, of every face", "the attributes",
                  cmd_face_attributes)

    p = command("track", "track faces over a folder of frames (sorted by name) and count entries and exits")
    p.add_argument("frames", help="folder of frames (png, jpg, ppm), in name order")
    p.add_argument("-o", "--output", "--out", dest="output", help="folder to write the annotated frames to")
    p.add_argument("--detect-every", type=number_in(1, math.inf, "give 1 or more", whole=True), default=DETECT_EVERY,
                   metavar="N",
                   help="run the detector every N frames; FaceMesh follows the faces in between (default %(default)s)")
    p.add_argument("--iou", type=number_in(0.0, 1.0, "--iou is a fraction in (0, 1)", low_open=True, high_open=True),
                   default=IOU_THRESHOLD,
                   help="overlap in (0, 1) above which a detection continues a track (default %(default)s)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    add_network_options(p, recognizer=False)
    p.set_defaults(func=lambda args: cmd_face_track(args, pipeline))


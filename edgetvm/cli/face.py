"""``edgetvm face ...``: detect, verify, embed, build (the board bundle), ppm (image conversion)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..face.bundle import BundleSpec, build_bundle
from ..face.image import draw_faces, read_image, write_ppm
from ..face.pipeline import FacePipeline
from ..io import atomic_path


def _size(text: str) -> tuple[int, int]:
    try:
        w, _, h = text.lower().partition("x")
        return int(w), int(h or w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write WIDTHxHEIGHT, for example 320x320") from None


def _add_network_options(p: argparse.ArgumentParser, engine: bool = True) -> None:
    p.add_argument("--detector", default="retinaface", choices=["retinaface", "yunet"])
    p.add_argument("--recognizer", default="sface", choices=["sface", "mobilefacenet"],
                   help="mobilefacenet has random weights: for speed and compiler checks, not for identities")
    p.add_argument("--detector-size", type=_size, default=(320, 320), metavar="WxH",
                   help="RetinaFace input the image is letterboxed into (multiples of 32; YuNet is fixed 640x640)")
    p.add_argument("--score-threshold", type=float, default=0.6, help="minimum detection score")
    p.add_argument("--nms-threshold", type=float, default=0.4, help="IoU above which NMS drops the weaker box")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine similarity at or above which two faces are the same person (default: the recognizer's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-fuse", action="store_true", help="compile without edgetvm's exact graph rewrites")
    p.add_argument("--quantize", default=None, metavar="MODE",
                   help="compile the networks quantized (e.g. int8; calibrated on the bundled face images)")
    p.add_argument("--prune", default=None, metavar="SPEC",
                   help="compile the networks pruned: a fraction of channels (0.25) or JSON {layer pattern: fraction}")
    p.add_argument("--only", default=None, choices=["detector", "recognizer"],
                   help="apply --quantize/--prune to this network only")
    if engine:
        p.add_argument("--engine", default="edgetvm", choices=["edgetvm", "onnxruntime"],
                       help="run the networks compiled by edgetvm (default) or in onnxruntime (reference)")


def compile_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.no_fuse:
        options["fuse"] = False
    if args.quantize:
        options["quantize"] = args.quantize
    if args.prune:
        try:
            options["prune"] = float(args.prune)
        except ValueError:
            try:
                options["prune"] = json.loads(args.prune)
            except json.JSONDecodeError:
                raise InputError(f"--prune {args.prune!r}: give a fraction of channels (0.25) or a JSON object "
                                 f"{{layer pattern: fraction}}") from None
    if args.only:
        lossy = {k: options.pop(k) for k in ("quantize", "prune") if k in options}
        if not lossy:
            raise InputError("--only names the network --quantize or --prune applies to; give one of them")
        options[args.only] = lossy
    return options


def _pipeline(args: argparse.Namespace) -> FacePipeline:
    return FacePipeline(args.detector, args.recognizer, detector_size=args.detector_size, engine=args.engine,
                        score_threshold=args.score_threshold, nms_threshold=args.nms_threshold,
                        threshold=args.threshold, compile_options=compile_options(args), num_threads=args.threads)


def _print_face(i: int, face) -> None:
    x1, y1, x2, y2 = face.box
    marks = " ".join(f"({x:.1f},{y:.1f})" for x, y in face.landmarks)
    print(f"face {i}: score {face.score:.4f}  box ({x1:.1f},{y1:.1f})-({x2:.1f},{y2:.1f})  landmarks {marks}")


def cmd_face_detect(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)
    image = read_image(args.image)
    faces = pipe.detect(image)
    if args.json:
        print(json.dumps({"image": str(args.image), "faces": [f.to_json() for f in faces]}, indent=2))
    else:
        print(f"{args.image}: {len(faces)} face(s)")
        for i, face in enumerate(faces):
            _print_face(i, face)
    if args.out:
        out = draw_faces(image, faces, args.out)
        if not args.json:
            print(f"wrote {out}")
    return 0


def cmd_face_verify(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)
    result = pipe.verify(args.image_a, args.image_b)
    if args.json:
        print(json.dumps({"a": str(args.image_a), "b": str(args.image_b), **result.to_json()}, indent=2))
    else:
        verdict = "same person" if result.same else "different people"
        print(f"similarity {result.similarity:.4f} (cosine; threshold {result.threshold:.3f}): {verdict}")
    return 0


def cmd_face_embed(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)
    image = read_image(args.image)
    if args.all:
        faces = pipe.analyze(image)
        if not faces:
            raise InputError(f"{args.image}: no face found (score threshold {pipe.score_threshold})")
    else:
        face = pipe.main_face(image, str(args.image))
        face.embedding = pipe.embed(image, face)
        faces = [face]
    embeddings = np.stack([f.embedding for f in faces]).astype(np.float32)
    if args.output:
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, embeddings)
    if args.json:
        print(json.dumps({"image": str(args.image), "faces": [f.to_json() for f in faces]}))
        return 0
    for i, face in enumerate(faces):
        _print_face(i, face)
        head = " ".join(f"{v:+.4f}" for v in face.embedding[:8])
        print(f"  embedding[{face.embedding.size}] (L2-normalised): {head} ...")
    if args.output:
        print(f"wrote {args.output} ({embeddings.shape[0]} x {embeddings.shape[1]} float32)")
    return 0


def cmd_face_build(args: argparse.Namespace) -> int:
    spec = BundleSpec(args.target, args.detector, args.recognizer, args.detector_size, args.score_threshold,
                      args.nms_threshold, args.max_faces, args.threshold, compile_options(args), args.threads)
    out = build_bundle(args.output, spec)
    size = sum(p.stat().st_size for p in Path(out).iterdir()) / 2**20
    print(f"wrote {out}/ ({size:.1f} MiB) for {args.target}: detector.so, recognizer.so, face_demo "
          f"(see {out}/README.txt)")
    return 0


def cmd_face_ppm(args: argparse.Namespace) -> int:
    out = write_ppm(args.output, read_image(args.image))
    print(f"wrote {out}")
    return 0


def add_face_commands(sub) -> None:
    """Register ``edgetvm face <command>`` on the top-level subparsers."""
    face = sub.add_parser("face", help="face detection, verification and embeddings; the board bundle")
    fsub = face.add_subparsers(dest="face_command", required=True)

    p = fsub.add_parser("detect", help="find faces: boxes, scores, five landmarks")
    p.add_argument("image")
    p.add_argument("--out", help="write the image with the faces drawn (png/jpg)")
    p.add_argument("--json", action="store_true")
    _add_network_options(p)
    p.set_defaults(func=cmd_face_detect)

    p = fsub.add_parser("verify", help="are the main faces of two images the same person?")
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("--json", action="store_true")
    _add_network_options(p)
    p.set_defaults(func=cmd_face_verify)

    p = fsub.add_parser("embed", help="the face embedding (L2-normalised) of the main face, or of all faces")
    p.add_argument("image")
    p.add_argument("-o", "--output", help="save the embeddings as .npy (faces x dims float32)")
    p.add_argument("--all", action="store_true", help="every detected face, not only the most confident")
    p.add_argument("--json", action="store_true")
    _add_network_options(p)
    p.set_defaults(func=cmd_face_embed)

    p = fsub.add_parser("build", help="the board bundle: standalone networks + C pipeline + face_demo")
    p.add_argument("--target", "-t", default="armv7-neon", help="target preset (see `edgetvm targets`)")
    p.add_argument("-o", "--output", required=True, help="bundle directory")
    p.add_argument("--max-faces", type=int, default=50)
    _add_network_options(p, engine=False)
    p.set_defaults(func=cmd_face_build)

    p = fsub.add_parser("ppm", help="convert an image to binary PPM, the format face_demo reads")
    p.add_argument("image")
    p.add_argument("output")
    p.set_defaults(func=cmd_face_ppm)

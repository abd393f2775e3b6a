"""``edgetvm face ...``: detect, verify, embed, segment, build (the board bundle), ppm (image
conversion); enroll, identify and gallery (1:N identification, ``cli/face_gallery.py``); landmarks,
attributes and track (``cli/face_analysis.py``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..face import compile_cache
from ..face.bundle import BundleSpec, build_bundle
from ..face.image import draw_faces, read_image, save_image, score_label, write_ppm
from ..face.pipeline import FacePipeline
from ..face.segmentation import (SEGMENTERS, SelfieSegmenter, background_picture, blur_background, composite,
                                 write_mask)
from ..io import atomic_path
from .face_analysis import add_analysis_commands
from .face_gallery import add_gallery_commands
from .options import number_in


def _size(text: str) -> tuple[int, int]:
    try:
        w, _, h = text.lower().partition("x")
        size = int(w), int(h or w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write WIDTHxHEIGHT, for example 320x320") from None
    if any(v <= 0 or v % 32 for v in size):
        raise argparse.ArgumentTypeError(f"{text}: width and height must be positive multiples of 32 (the "
                                         f"detector's coarsest stride), for example 320x320")
    return size


def _unit_interval(flag: str):
    """An argparse type for a score or overlap threshold, which only means something in [0, 1]."""
    return number_in(0.0, 1.0, f"{flag} is a fraction in [0, 1]")


_cosine = number_in(-1.0, 1.0, "a cosine similarity threshold lies in [-1, 1]")


def _add_network_options(p: argparse.ArgumentParser, engine: bool = True, recognizer: bool = True) -> None:
    """The networks' options; ``recognizer=False`` for the commands that only detect (``face detect``)."""
    p.add_argument("--detector", default="retinaface", choices=["retinaface", "yunet"],
                   help="face detector network (default retinaface)")
    if recognizer:
        p.add_argument("--recognizer", default="sface", choices=["sface", "mobilefacenet"],
                       help="face recognizer network (default sface); mobilefacenet has random weights: for speed "
                            "and compiler checks, not for identities")
    p.add_argument("--detector-size", type=_size, default=(320, 320), metavar="WxH",
                   help="RetinaFace input the image is letterboxed into (multiples of 32; YuNet is fixed 640x640)")
    p.add_argument("--score-threshold", type=_unit_interval("--score-threshold"), default=0.6,
                   help="minimum detection score, in [0, 1] (default 0.6)")
    p.add_argument("--nms-threshold", type=_unit_interval("--nms-threshold"), default=0.4,
                   help="IoU in [0, 1] above which NMS drops the weaker box (default 0.4)")
    if recognizer:
        p.add_argument("--threshold", type=_cosine, default=None,
                       help="cosine similarity at or above which two faces are the same person (default: the "
                            "recognizer's)")
    p.add_argument("--threads", type=int, default=None, help="threads the networks run with")
    p.add_argument("--no-fuse", action="store_true", help="compile without edgetvm's exact graph rewrites")
    p.add_argument("--quantize", default=None, choices=["int8"],
                   help="compile the networks quantized (int8; calibrated on the bundled face images)")
    p.add_argument("--prune", default=None, metavar="SPEC",
                   help="compile the networks pruned: a fraction of channels (0.25) or JSON {layer pattern: fraction}")
    if recognizer:
        p.add_argument("--only", default=None, choices=["detector", "recognizer"],
                       help="apply --quantize/--prune to this network only")
    if engine:
        p.add_argument("--engine", default="edgetvm", choices=["edgetvm", "onnxruntime"],
                       help="run the networks compiled by edgetvm (default) or in onnxruntime (reference)")
        p.add_argument("--no-cache", action="store_true",
                       help="compile the networks again instead of loading them from the compile cache "
                            "($EDGETVM_CACHE/compiled, kept to 2 GB; EDGETVM_COMPILE_CACHE=0 turns it off)")


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
    if getattr(args, "only", None):
        lossy = {k: options.pop(k) for k in ("quantize", "prune") if k in options}
        if not lossy:
            raise InputError("--only names the network --quantize or --prune applies to; give one of them")
        options[args.only] = lossy
    return options


def _pipeline(args: argparse.Namespace) -> FacePipeline:
    compile_cache.set_enabled(not args.no_cache)
    return FacePipeline(args.detector, getattr(args, "recognizer", "sface"), detector_size=args.detector_size,
                        engine=args.engine, score_threshold=args.score_threshold, nms_threshold=args.nms_threshold,
                        threshold=getattr(args, "threshold", None), compile_options=compile_options(args),
                        num_threads=args.threads)


def _print_face(i: int, face) -> None:
    x1, y1, x2, y2 = face.box
    marks = " ".join(f"({x:.1f},{y:.1f})" for x, y in face.landmarks)
    print(f"face {i}: score {score_label(face.score)}  box ({x1:.1f},{y1:.1f})-({x2:.1f},{y2:.1f})  landmarks {marks}")


def cmd_face_detect(args: argparse.Namespace) -> int:
    image = read_image(args.image)  # before the networks compile: a bad path fails at once
    pipe = _pipeline(args)
    faces = pipe.detect(image)
    if args.json:
        print(json.dumps({"image": str(args.image), "faces": [f.to_json() for f in faces]}))
    else:
        print(f"{args.image}: {len(faces)} face(s)")
        for i, face in enumerate(faces):
            _print_face(i, face)
    if args.output:
        out = draw_faces(image, faces, args.output)
        if not args.json:
            print(f"wrote {out}")
    return 0


def cmd_face_verify(args: argparse.Namespace) -> int:
    for path in (args.image_a, args.image_b):
        read_image(path)  # before the networks compile: a bad path fails at once
    pipe = _pipeline(args)
    result = pipe.verify(args.image_a, args.image_b)
    if args.json:
        print(json.dumps({"a": str(args.image_a), "b": str(args.image_b), **result.to_json()}))
    else:
        verdict = "same person" if result.same else "different people"
        print(f"similarity {result.similarity:.4f} (cosine; threshold {result.threshold:.3f}): {verdict}")
    return 0


def cmd_face_embed(args: argparse.Namespace) -> int:
    image = read_image(args.image)  # before the networks compile: a bad path fails at once
    pipe = _pipeline(args)
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


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: give a positive number of pixels")
    return value


def cmd_face_segment(args: argparse.Namespace) -> int:
    effect = "--blur" if args.blur else "--background" if args.background else None
    if args.composite and not effect:
        raise InputError("--composite writes the picture with its background changed: add --blur or --background")
    if effect and not args.composite:
        raise InputError(f"{effect} changes the background of a picture: say where to write it with --composite PATH")
    if args.blur_radius is not None and not args.blur:
        raise InputError("--blur-radius sets the blur of --blur; add --blur")
    image = read_image(args.image)  # before the network compiles: bad inputs fail at once
    h, w = image.shape[:2]
    background = background_picture(args.background, w, h) if args.background else None
    compile_cache.set_enabled(not args.no_cache)
    result = SelfieSegmenter(args.model, num_threads=args.threads).segment(image)
    written = {"mask": str(write_mask(args.output, result.mask))}
    if args.composite:
        picture = (blur_background(image, result.mask, args.blur_radius) if args.blur
                   else composite(image, result.mask, background))
        written["composite"] = str(save_image(Image.fromarray(picture), args.composite))
    summary = result.to_json(args.threshold)
    if args.json:
        print(json.dumps({"image": str(args.image), **summary, **written}))
        return 0
    print(f"{args.image}: {w}x{h}, person {100 * summary['person_fraction']:.1f}% of the pixels (mask >= "
          f"{args.threshold}; {args.model} model)")
    for what, path in written.items():
        print(f"wrote {path} ({what})")
    return 0


# Recognizers whose int8 build keeps its accuracy: SFace's int8 embeddings keep cosine >= 0.99 to its fp32 ones
# (tests/quantization/test_face_models.py). MobileFaceNet's weights are random: nothing to keep.
INT8_BY_DEFAULT = {"sface"}


def bundle_options(args: argparse.Namespace) -> tuple[dict, str]:
    """The bundle's compile options and a line saying what precision each network has, and how to change it."""
    options = compile_options(args)
    if args.fp32 and options:
        raise InputError("--fp32 keeps both networks float; drop --quantize/--prune or --fp32")
    if options or args.fp32:
        return options, ""
    if args.recognizer in INT8_BY_DEFAULT:
        return ({"recognizer": {"quantize": "int8"}},
                f"recognizer {args.recognizer}: int8 (embeddings keep cosine >= 0.99 to fp32; --fp32 builds the "
                f"float one, about 3.8x the size)")
    return options, (f"recognizer {args.recognizer}: fp32 (`--quantize int8 --only recognizer` builds it int8, a "
                     f"quarter of the size)")


def cmd_face_build(args: argparse.Namespace) -> int:
    options, precision = bundle_options(args)
    spec = BundleSpec(args.target, args.detector, args.recognizer, args.detector_size, args.score_threshold,
                      args.nms_threshold, args.max_faces, args.threshold, options, args.threads,
                      landmarks=args.landmarks, attributes=args.attributes, segmenter=args.segmenter)
    out = build_bundle(args.output, spec)
    size = sum(p.stat().st_size for p in Path(out).iterdir()) / 2**20
    stages = ", facemesh.so, iris.so" if args.landmarks or args.attributes else ""
    stages += ", age.so, gender.so" if args.attributes else ""
    stages += ", segmenter.so (face_demo --segment)" if args.segmenter else ""
    print(f"wrote {out}/ ({size:.1f} MiB) for {args.target}: detector.so, recognizer.so, face_demo{stages} "
          f"(see {out}/README.txt)")
    if precision:
        print(precision)
    return 0


def cmd_face_ppm(args: argparse.Namespace) -> int:
    output = args.output or args.output_option
    if not output:
        raise InputError("face ppm: give the output .ppm path (positional or -o)")
    out = write_ppm(output, read_image(args.image))
    print(f"wrote {out}")
    return 0


def add_face_commands(sub) -> None:
    """Register ``edgetvm face <command>`` on the top-level subparsers."""
    face = sub.add_parser("face", help="face detection, verification and embeddings; the board bundle",
                          description="Find faces, compare them and compute their embeddings with networks "
                                      "compiled by edgetvm, or build the standalone bundle that does it on a board.")
    fsub = face.add_subparsers(dest="face_command", required=True, metavar="COMMAND", title="commands")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return fsub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")

    image_help = "the image (png, jpg, ppm, ...)"
    json_help = "print one line of JSON instead of text"
    p = command("detect", "find faces: boxes, scores, five landmarks")
    p.add_argument("image", help=image_help)
    p.add_argument("-o", "--output", "--out", dest="output", help="write the image with the faces drawn (png/jpg)")
    p.add_argument("--json", action="store_true", help=json_help)
    _add_network_options(p, recognizer=False)
    p.set_defaults(func=cmd_face_detect)

    p = command("verify", "are the main faces of two images the same person?")
    p.add_argument("image_a", help="the first image")
    p.add_argument("image_b", help="the second image")
    p.add_argument("--json", action="store_true", help=json_help)
    _add_network_options(p)
    p.set_defaults(func=cmd_face_verify)

    p = command("embed", "the face embedding (L2-normalised) of the main face, or of all faces")
    p.add_argument("image", help=image_help)
    p.add_argument("-o", "--output", "--out", dest="output", help="save the embeddings as .npy (faces x dims float32)")
    p.add_argument("--all", action="store_true", help="every detected face, not only the most confident")
    p.add_argument("--json", action="store_true", help=json_help)
    _add_network_options(p)
    p.set_defaults(func=cmd_face_embed)

    p = command("segment", "the person/background mask (MediaPipe selfie segmentation); blur or replace the "
                           "background")
    p.add_argument("image", help=image_help)
    p.add_argument("-o", "--output", "--out", dest="output", required=True,
                   help="write the mask: an 8-bit grey picture, 255 where the person is (png)")
    effect = p.add_mutually_exclusive_group()
    effect.add_argument("--blur", action="store_true", help="blur the background (writes --composite)")
    effect.add_argument("--background", metavar="COLOR|IMAGE",
                        help="replace the background by a colour ('green', '#00b140') or an image scaled to cover "
                             "the picture (writes --composite)")
    p.add_argument("--composite", metavar="PICTURE", help="where --blur/--background write their picture (png/jpg)")
    p.add_argument("--blur-radius", type=_positive, default=None, metavar="PIXELS",
                   help="Gaussian sigma of --blur (default 2%% of the picture's longer side)")
    p.add_argument("--model", default="general", choices=sorted(SEGMENTERS),
                   help="general: 256x256 input (default; portraits and square frames); landscape: 256x144, "
                        "for 16:9 video frames, faster")
    p.add_argument("--threshold", type=_unit_interval("--threshold"), default=0.5,
                   help="mask value at or above which a pixel counts as the person in the reported fraction")
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--threads", type=int, default=None, help="threads the network runs with")
    p.add_argument("--no-cache", action="store_true",
                   help="compile the network again instead of loading it from the compile cache")
    p.set_defaults(func=cmd_face_segment)

    p = command("build", "the board bundle: standalone networks + C pipeline + face_demo")
    p.add_argument("--target", "-t", default="armv7-neon", help="target preset (see `edgetvm targets`)")
    p.add_argument("-o", "--output", "--out", dest="output", required=True, help="bundle directory")
    p.add_argument("--max-faces", type=int, default=50, help="most faces face_demo reports per image (default 50)")
    p.add_argument("--landmarks", action="store_true", help="add FaceMesh and Iris (float32), face_mesh.c "
                   "and face_iris.c: face_demo prints each face's head pose, eye and mouth ratios and iris centres "
                   "and radii; --mesh writes its 468 points, --iris each eye's 76 Iris points")
    p.add_argument("--attributes", action="store_true", help="add the age and gender networks (float32) and "
                   "face_attr.c (implies --landmarks): face_demo prints each face's age and gender")
    p.add_argument("--fp32", action="store_true", help="keep both networks float (default: the sface recognizer "
                   "is int8, which keeps its embeddings at cosine >= 0.99 to fp32 at a quarter of the size)")
    p.add_argument("--segmenter", default=None, choices=sorted(SEGMENTERS),
                   help="add the person segmentation stage: segmenter.so (float), face_demo --segment")
    _add_network_options(p, engine=False)
    p.set_defaults(func=cmd_face_build)

    p = command("ppm", "convert an image to binary PPM, the format face_demo reads")
    p.add_argument("image", help=image_help)
    p.add_argument("output", nargs="?", help="the .ppm to write")
    p.add_argument("-o", "--out", dest="output_option", metavar="OUTPUT", help="the .ppm to write (as the positional)")
    p.set_defaults(func=cmd_face_ppm)

    add_gallery_commands(command, _add_network_options, _pipeline)
    add_analysis_commands(command, _add_network_options, _pipeline)

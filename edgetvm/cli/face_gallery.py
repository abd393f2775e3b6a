"""``edgetvm face enroll | identify | gallery``: identification against a gallery of enrolled people.

GALLERY is an SQLite database (``.db``, ``.sqlite``) for the host or a board gallery file (any
other name, ``.gal`` by convention) that the bundle's C library reads; ``face gallery --export``
converts one into the other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..face.gallery import load_gallery, save_gallery
from ..face.identification import DEFAULT_FAR, enroll, identify, new_gallery
from ..face.image import draw_faces, read_image
from ..face.quality import DEFAULT_MIN_QUALITY


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: --top is at least 1")
    return value


def _output_options(p: argparse.ArgumentParser, picture_help: str) -> None:
    p.add_argument("-o", "--output", "--out", dest="output", help=picture_help)
    p.add_argument("--json", action="store_true", help="print one line of JSON instead of text")


def cmd_face_enroll(args: argparse.Namespace, pipeline) -> int:
    images = [read_image(path) for path in args.images]  # before the networks compile: a bad path fails at once
    pipe = pipeline(args)
    path = Path(args.gallery)
    gallery = load_gallery(path) if path.exists() else new_gallery(pipe, args.far, args.threshold)
    samples = enroll(pipe, gallery, args.name, images, [str(p) for p in args.images], args.min_quality)
    save_gallery(gallery, path)
    if args.json:
        print(json.dumps({"gallery": str(path), "name": args.name, "threshold": gallery.threshold,
                          "samples": [{"image": s.source, "quality": s.quality.to_json()} for s in samples]}))
    else:
        for s in samples:
            print(f"{s.source}: quality {s.quality.score:.2f}")
        count = dict(gallery.identities())[args.name]
        print(f"enrolled {args.name!r} ({count} sample(s)) in {path}: {len(gallery)} identities, threshold "
              f"{gallery.threshold:.4f}")
    if args.output:
        out = draw_faces(images[0], [samples[0].face], args.output, [args.name])
        if not args.json:
            print(f"wrote {out}")
    return 0


def cmd_face_identify(args: argparse.Namespace, pipeline) -> int:
    image = read_image(args.image)
    gallery = load_gallery(args.gallery)
    if not len(gallery):
        raise InputError(f"{args.gallery}: the gallery is empty; enroll someone with `edgetvm face enroll`")
    if args.threshold is not None:
        gallery.threshold = args.threshold
    results = identify(pipeline(args), gallery, image, args.top)
    if args.json:
        print(json.dumps({"image": str(args.image), "gallery": str(args.gallery),
                          "faces": [{**{k: v for k, v in face.to_json().items() if k != "embedding"}, **ident.to_json()}
                                    for face, ident in results]}))
    else:
        print(f"{args.image}: {len(results)} face(s); threshold {gallery.threshold:.4f}")
        for i, (face, ident) in enumerate(results):
            best = ", ".join(f"{m.name} {m.score:.4f}" for m in ident.matches)
            print(f"face {i}: {ident.identity or 'unknown'}  (top {len(ident.matches)}: {best})")
    if args.output:
        labels = [f"{ident.identity or 'unknown'} {ident.matches[0].score:.2f}" for _, ident in results]
        out = draw_faces(image, [face for face, _ in results], args.output, labels)
        if not args.json:
            print(f"wrote {out}")
    return 0


def cmd_face_gallery(args: argparse.Namespace) -> int:
    gallery = load_gallery(args.gallery)
    if args.remove:
        gallery.remove(args.remove)
        save_gallery(gallery, args.gallery)
    if args.export:
        save_gallery(gallery, args.export)
    if args.json:
        print(json.dumps({"gallery": str(args.gallery), "recognizer": gallery.recognizer, "dim": gallery.dim,
                          "threshold": gallery.threshold,
                          "identities": [{"name": n, "samples": c} for n, c in gallery.identities()]}))
        return 0
    if args.remove:
        print(f"removed {args.remove!r}")
    print(f"{args.gallery}: {len(gallery)} identities, {gallery.recognizer} {gallery.dim}-d int8, threshold "
          f"{gallery.threshold:.4f}")
    for name, count in gallery.identities():
        print(f"  {name}  ({count} sample(s))")
    if args.export:
        print(f"wrote {args.export}")
    return 0


def add_gallery_commands(command, add_network_options, pipeline) -> None:
    """Register enroll, identify and gallery; ``command(name, help)`` makes a ``face`` subcommand,
    ``pipeline(args)`` builds the FacePipeline from the network options."""
    gallery_help = "the gallery: SQLite (.db) on the host, or a board gallery file (.gal)"
    p = command("enroll", "add a person to a gallery from one or more photos (quality-checked)")
    p.add_argument("gallery", help=gallery_help + "; created if missing")
    p.add_argument("name", help="the person's name (at most 55 bytes of UTF-8)")
    p.add_argument("images", nargs="+", help="photos of the person; the most confident face of each is enrolled")
    p.add_argument("--min-quality", type=float, default=DEFAULT_MIN_QUALITY,
                   help=f"refuse faces whose quality score in [0, 1] is lower (default {DEFAULT_MIN_QUALITY}; 0 "
                        f"enrolls anything)")
    p.add_argument("--far", type=float, default=DEFAULT_FAR,
                   help=f"for a new gallery: the false-accept rate per comparison its decision threshold is "
                        f"calibrated for on the packaged faces (default {DEFAULT_FAR}); --threshold sets it instead")
    _output_options(p, "write the first photo with the enrolled face drawn")
    add_network_options(p)
    p.set_defaults(func=lambda args: cmd_face_enroll(args, pipeline))

    p = command("identify", "who is in this photo? every face against a gallery, top-k with scores")
    p.add_argument("gallery", help=gallery_help)
    p.add_argument("image", help="the image (png, jpg, ppm, ...)")
    p.add_argument("--top", type=_positive, default=5, help="matches reported per face (default 5)")
    _output_options(p, "write the image with names drawn (png/jpg)")
    add_network_options(p)
    p.set_defaults(func=lambda args: cmd_face_identify(args, pipeline))

    p = command("gallery", "list a gallery's identities, remove one, or convert between SQLite and the board file")
    p.add_argument("gallery", help=gallery_help)
    p.add_argument("--remove", metavar="NAME", help="remove this identity and all its samples")
    p.add_argument("--export", metavar="FILE", help="also write the gallery to FILE (.db: SQLite; else board file)")
    p.add_argument("--json", action="store_true", help="print one line of JSON instead of text")
    p.set_defaults(func=cmd_face_gallery)

"""Options shared by the commands: input shapes, and the compile options of every command that compiles a
model (``compile``, ``tune``), turned into ``edgetvm.compile``'s keyword arguments by ``compile_kwargs``."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError


def parse_shape_args(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise InputError(f"--input-shape {item!r}: write NAME=D0,D1,..., for example data=1,3,112,112") from None
    return shapes


def add_input_shape_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...", help="static input shape (repeatable)")


def add_compile_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that compiles a model."""
    parser.add_argument("model", help="ONNX or TFLite model file")
    parser.add_argument("--target", "-t", default="host", help="preset name (see `edgetvm targets`) or a TVM target JSON dict")
    add_input_shape_option(parser)
    parser.add_argument("--threads", type=int, default=None, help="threads the compiled model runs with")
    parser.add_argument("--no-fuse", action="store_true",
                        help="skip the exact graph rewrites (batch-norm / scale-shift folding, activation canonicalisation)")
    parser.add_argument("--prune", type=float, default=None, metavar="RATIO",
                        help="prune this fraction of the channels first (lossy; with --prune-calib spread over the "
                             "layers by measured sensitivity and recovered by least squares; see `edgetvm prune`)")
    parser.add_argument("--prune-criterion", default="auto", choices=["auto", "l1", "bn_gamma", "activation", "reconstruction"], help="channel ranking for --prune (auto: reconstruction with --prune-calib, else l1)")
    parser.add_argument("--prune-calib", default=None, metavar="DIR",
                        help="calibration inputs (.npy or images) for --prune's least-squares recovery")
    parser.add_argument("--quantize", default=None, choices=["int8"],
                        help="int8 inference (lossy): calibrate a float model on --calib, or keep a QDQ model's integers")
    parser.add_argument("--calib", default=None, metavar="DIR", help="calibration inputs for --quantize: .npy files or images")
    parser.add_argument("--calib-mode", default="minmax", choices=["minmax", "percentile", "entropy"],
                        help="activation range estimator for --quantize")
    parser.add_argument("--no-equalize", action="store_true",
                        help="skip cross-layer equalization before --quantize's calibration (on by default, exact)")
    parser.add_argument("--keep-float", default=None, metavar="NAMES",
                        help="comma-separated chains to leave float under --quantize (the report's chains_quantized); "
                             "'none' quantizes all; default: the conv reading the image stays float")


def compile_kwargs(args: argparse.Namespace) -> dict:
    """``edgetvm.compile``'s keyword arguments (all but the model) from the options of ``add_compile_options``."""
    target = args.target
    if target.lstrip().startswith("{"):
        try:
            target = json.loads(target)
        except json.JSONDecodeError as exc:
            raise InputError(f"--target {args.target!r} is not valid JSON: {exc}") from None
    kwargs = {"target": target, "input_shapes": parse_shape_args(args.input_shape), "num_threads": args.threads,
              "fuse": not getattr(args, "no_fuse", False)}
    if getattr(args, "prune", None) is not None:
        kwargs.update(prune=args.prune, prune_criterion=args.prune_criterion)
        if args.prune_calib:
            kwargs["calibration"] = args.prune_calib
    if getattr(args, "quantize", None):
        kwargs.update(quantize=args.quantize, calibration_mode=args.calib_mode)
        if args.calib:
            kwargs["calibration"] = args.calib
        options = {}
        if getattr(args, "no_equalize", False):
            options["equalize"] = False
        if getattr(args, "keep_float", None) is not None:
            names = [n.strip() for n in args.keep_float.split(",") if n.strip()]
            options["keep_float"] = [] if names == ["none"] else names
        if options:
            kwargs["quantize_options"] = options
    if getattr(args, "tuning_db", None):
        kwargs["tuning_db"] = args.tuning_db
    return kwargs

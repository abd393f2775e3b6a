"""Options shared by the commands: input shapes, and the compile options of every command that compiles a
model (``compile``, ``tune``), turned into ``edgetvm.compile``'s keyword arguments by ``compile_kwargs``."""

from __future__ import annotations

import argparse
import json
import sys

from ..backends.standalone import OPTIMIZE_GOALS
from ..compression.cluster import check_assign
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


def number_in(low: float, high: float, meaning: str, *, whole: bool = False, low_open: bool = False,
              high_open: bool = False):
    """An argparse type for a number between ``low`` and ``high`` (ends included unless ``*_open``);
    a value outside is refused with ``"TEXT: meaning"``. ``whole`` parses an int."""
    def parse(text: str):
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if whole else 'number'}") from None
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"{text}: {meaning}")
        return value
    return parse


# An argparse type: the fraction of channels to prune, in [0, 1).
channel_fraction = number_in(0.0, 1.0, "give the fraction of channels to remove, in [0, 1)", high_open=True)


DATA_DRIVEN_CRITERIA = ("activation", "reconstruction")


def check_prune_calibration(criterion: str, criterion_flag: str, calib, calib_flag: str) -> None:
    """A ranking measured on calibration inputs needs them: say which flag gives them."""
    if criterion in DATA_DRIVEN_CRITERIA and not calib:
        raise InputError(f"{criterion_flag} {criterion} ranks channels on calibration inputs: give {calib_flag} DIR "
                         f"(.npy files or images), or choose l1 or bn_gamma")


def add_compile_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that compiles a model."""
    parser.add_argument("model", help="ONNX or TFLite model file, or zoo:NAME (e.g. zoo:retinaface)")
    parser.add_argument("--target", "-t", default="host", help="preset name (see `edgetvm targets`), a TVM target JSON dict, or a TVM target string such as 'llvm -mtriple=armv7l-linux-gnueabihf -mcpu=cortex-a7 -mattr=+neon'")
    add_input_shape_option(parser)
    parser.add_argument("--threads", type=int, default=None, help="threads the compiled model runs with")
    parser.add_argument("--no-fuse", action="store_true",
                        help="skip the exact graph rewrites (batch-norm / scale-shift folding, activation canonicalisation)")
    parser.add_argument("--no-winograd", action="store_true",
                        help="keep dense 3x3 stride-1 float convs direct instead of Winograd F(4,3)/F(6,3)")
    parser.add_argument("--prune", type=channel_fraction, default=None, metavar="RATIO",
                        help="prune this fraction of the channels first (lossy; with --prune-calib spread over the "
                             "layers by measured sensitivity and recovered by least squares; see `edgetvm prune`)")
    parser.add_argument("--prune-criterion", default="auto", choices=["auto", "l1", "bn_gamma", "activation", "reconstruction"], help="channel ranking for --prune (auto: reconstruction with --prune-calib, else l1)")
    parser.add_argument("--prune-calib", default=None, metavar="DIR",
                        help="calibration inputs (.npy or images) for --prune's least-squares recovery (with --quantize too: "
                             "the same set calibrates both)")
    parser.add_argument("--quantize", default=None, choices=["int8"],
                        help="int8 inference (lossy): calibrate a float model on --calib, or keep a QDQ model's integers")
    parser.add_argument("--calib", default=None, metavar="DIR", help="calibration inputs for --quantize: .npy files or images (needs --quantize; with --prune "
                             "too it also feeds --prune's recovery)")
    parser.add_argument("--calib-mode", default="minmax", choices=["minmax", "percentile", "entropy"],
                        help="activation range estimator for --quantize")
    parser.add_argument("--no-equalize", action="store_true",
                        help="skip cross-layer equalization before --quantize's calibration (on by default, exact)")
    parser.add_argument("--reduce-range", action="store_true",
                        help="conv weights in 7 bits ([-63, 63]) under --quantize: faster ARMv7 int8 kernels (4 "
                             "products per int16 lane), less accurate (SFace embedding cosine 0.990 -> 0.987)")
    parser.add_argument("--keep-float", default=None, metavar="NAMES",
                        help="comma-separated chains to leave float under --quantize (the report's chains_quantized); "
                             "'none' quantizes all; default: the conv reading the image stays float")
    parser.add_argument("--cluster", type=int, default=None, metavar="K",
                        help="share K values (4..256) per weight tensor or output channel by k-means (lossy; after "
                             "--prune and --quantize; the first and last layer stay as they are)")
    parser.add_argument("--cluster-layers", default=None, metavar="PATTERN=K,...",
                        help="cluster only the layers whose names match (fnmatch), each with its own K; "
                             "`--explain` lists the layer names")
    parser.add_argument("--cluster-sparsity", default=None, metavar="S|PATTERN=S,...",
                        help="prune the fraction S (0..1) of smallest weights to exactly zero before clustering, in "
                             "every clustered layer or in those matching each PATTERN (lossy; Huffman gives the "
                             "zeros the shortest code)")
    parser.add_argument("--cluster-max-error", type=float, default=None, metavar="E",
                        help="choose each layer's K (from --cluster, default 4, up to 256, or none) by its measured "
                             "output error on --calib, for the smallest weights at a summed relative error <= E")
    parser.add_argument("--cluster-scaled", action="store_true",
                        help="a float16 scale per output channel times one codebook per layer (per-channel "
                             "non-uniform quantization: less error than a codebook of raw values at the same K; "
                             "with --calib the scales are refit too)")
    parser.add_argument("--cluster-assign", default=None, metavar="gptq|nearest",
                        help="how each weight's code is chosen: nearest codebook entry, or gptq (GPTQ/OBQ: against "
                             "the layer's output error on --calib, rounding errors spread over the weights not yet "
                             "coded); default: gptq with --calib, else nearest")
    parser.add_argument("--no-cluster-refit", action="store_true",
                        help="keep k-means' centroids: by default, with --calib, each clustered layer's centroids are "
                             "refit by least squares to the layer's output on the calibration inputs")
    add_preprocess_options(parser, "calibration images (--calib, --prune-calib)")


def add_preprocess_options(parser: argparse.ArgumentParser, what: str) -> None:
    """How images become the model's input, as ncnn2table's mean= norm= pixel= (``edgetvm.data.Preprocess``)."""
    group = parser.add_argument_group(
        "image preprocessing", f"how {what} become the model's input: x = (pixel - mean) * scale per channel, in "
        f"the model's channel order. Zoo models know their own; without these flags other models get RGB 0..255.")
    group.add_argument("--mean", default=None, metavar="M or M0,M1,M2",
                       help="subtracted from each channel, in the model's channel order (RetinaFace: 104,117,123)")
    scale = group.add_mutually_exclusive_group()
    scale.add_argument("--scale", default=None, metavar="S or S0,S1,S2",
                       help="multiplies each channel after --mean (ncnn's norm; 0.0078125 for 1/128)")
    scale.add_argument("--std", default=None, metavar="S or S0,S1,S2",
                       help="divides each channel after --mean (torchvision's std; the reciprocal of --scale)")
    order = group.add_mutually_exclusive_group()
    order.add_argument("--bgr", dest="channel_order", action="store_const", const="bgr",
                       help="the model takes BGR channels (OpenCV-trained: RetinaFace, YuNet)")
    order.add_argument("--rgb", dest="channel_order", action="store_const", const="rgb",
                       help="the model takes RGB channels (the default)")
    group.add_argument("--layout", default=None, choices=["nchw", "nhwc"],
                       help="the image input's layout (default: from its shape)")


def _numbers(flag: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{flag} {text!r}: give one number or three separated by commas, for example "
                         f"{flag} 104,117,123") from None
    if len(values) not in (1, 3):
        raise InputError(f"{flag} {text!r}: give one number or three (one per channel), not {len(values)}")
    return values


def preprocess_option(args: argparse.Namespace) -> dict | None:
    """``edgetvm.compile``'s ``preprocess`` from the flags of ``add_preprocess_options``, None when none is given."""
    given = {"mean": _numbers("--mean", getattr(args, "mean", None)),
             "scale": _numbers("--scale", getattr(args, "scale", None)),
             "std": _numbers("--std", getattr(args, "std", None)),
             "channel_order": getattr(args, "channel_order", None), "layout": getattr(args, "layout", None)}
    if all(v is None for v in given.values()):
        return None
    for flag, key in (("--scale", "scale"), ("--std", "std")):
        if given[key] is not None and 0.0 in given[key]:
            raise InputError(f"{flag} {getattr(args, key)}: a zero {key} is not a preprocessing")
    return {k: v for k, v in given.items() if v is not None}


def add_weights_option(parser: argparse.ArgumentParser) -> None:
    """``--weights`` and ``--entropy``: how an artifact stores its weights (``compile`` only: it
    writes the artifact)."""
    parser.add_argument("--weights", default="fp32", choices=["fp32", "fp16"],
                        help="weight storage in the artifact: fp16 halves the weights (lossy, within 2^-11 per "
                             "weight) and widens them to fp32 once at load")
    parser.add_argument("--entropy", default=None, choices=["huffman"],
                        help="Huffman-code the weights of the artifact (with --standalone; exact), decoded once at "
                             "load: pays after --cluster or --quantize")


def add_optimize_option(parser: argparse.ArgumentParser) -> None:
    """``--optimize``: what the standalone build favours (``compile`` only)."""
    parser.add_argument("--optimize", default="speed", choices=list(OPTIMIZE_GOALS),
                        help="size: the smallest standalone .so with the same results (kernels without argument "
                             "checks, LLVM O2, NEON tiles called rather than inlined, -Os runtime; RetinaFace 320 "
                             "code 538 -> 58 KB); speed (default): the fastest kernels")


def cluster_layers(text: str | None) -> dict[str, int]:
    """``--cluster-layers conv_1*=8,fc=32`` as {pattern: k}."""
    layers = {}
    for item in (text or "").split(","):
        pattern, sep, k = item.strip().partition("=")
        try:
            if not sep or not pattern:
                raise ValueError
            layers[pattern] = int(k)
        except ValueError:
            raise InputError(f"--cluster-layers {text!r}: write PATTERN=K,..., for example conv_1*=8,pre_fc1*=32") \
                from None
    return layers


def cluster_sparsity(text: str) -> float | dict[str, float]:
    """``--cluster-sparsity 0.8`` as 0.8, ``--cluster-sparsity lv140=0.9,conv_*=0.5`` as {pattern: fraction}."""
    try:
        if "=" not in text:
            return float(text)
        layers = {}
        for item in text.split(","):
            pattern, _, s = item.strip().partition("=")
            if not pattern:
                raise ValueError
            layers[pattern] = float(s)
        return layers
    except ValueError:
        raise InputError(f"--cluster-sparsity {text!r}: write S or PATTERN=S,..., for example 0.8 or "
                         f"lv140=0.9,conv_*=0.5") from None


def clustering(args: argparse.Namespace) -> bool:
    return any(getattr(args, flag, None) is not None for flag in ("cluster", "cluster_layers", "cluster_max_error"))


def calibration_set(args: argparse.Namespace) -> str | None:
    """The one calibration set of ``--calib`` / ``--prune-calib``, refused where nothing would read it.

    ``edgetvm.compile`` takes one calibration set: with both ``--prune`` and ``--quantize`` it serves both,
    so two different sets are refused rather than one silently dropped."""
    calib, prune_calib = getattr(args, "calib", None), getattr(args, "prune_calib", None)
    quantize, prune = getattr(args, "quantize", None), getattr(args, "prune", None) is not None
    if calib and not quantize and not clustering(args):
        also = "; for --prune's recovery give it as --prune-calib" if prune else ""
        raise InputError(f"--calib {calib} is the calibration set of --quantize and --cluster, neither given: add "
                         f"--quantize int8 or --cluster K to use it{also}")
    if prune_calib and not prune:
        raise InputError(f"--prune-calib {prune_calib} is the calibration set of --prune, which is not given: add "
                         f"--prune RATIO to use it")
    if calib and prune_calib and calib != prune_calib:
        raise InputError(f"--calib {calib} and --prune-calib {prune_calib}: one calibration set serves both --prune "
                         f"and --quantize; give one of the two flags")
    chosen = calib or prune_calib
    if prune:
        check_prune_calibration(args.prune_criterion, "--prune-criterion", chosen, "--prune-calib")
    if chosen and prune and quantize:
        print(f"note: {chosen} calibrates both --prune and --quantize", file=sys.stderr)
    if getattr(args, "reduce_range", False) and not quantize:
        raise InputError("--reduce-range chooses the int8 weights' range of --quantize; add --quantize int8 or drop it")
    if getattr(args, "keep_float", None) is not None and not quantize:
        raise InputError("--keep-float chooses what --quantize leaves float; add --quantize int8 or drop it")
    return chosen


def compile_kwargs(args: argparse.Namespace) -> dict:
    """``edgetvm.compile``'s keyword arguments (all but the model) from the options of ``add_compile_options``."""
    target = args.target
    if target.lstrip().startswith("{"):
        try:
            target = json.loads(target)
        except json.JSONDecodeError as exc:
            raise InputError(f"--target {args.target!r} is not valid JSON: {exc}") from None
    kwargs = {"target": target, "input_shapes": parse_shape_args(args.input_shape), "num_threads": args.threads,
              "fuse": not getattr(args, "no_fuse", False), "winograd": not getattr(args, "no_winograd", False)}
    calibration = calibration_set(args)
    if getattr(args, "prune", None) is not None:
        kwargs.update(prune=args.prune, prune_criterion=args.prune_criterion)
        if calibration:
            kwargs["calibration"] = calibration
    if getattr(args, "quantize", None):
        kwargs.update(quantize=args.quantize, calibration_mode=args.calib_mode)
        if calibration:
            kwargs["calibration"] = calibration
        options = {}
        if getattr(args, "no_equalize", False):
            options["equalize"] = False
        if getattr(args, "reduce_range", False):
            options["reduce_range"] = True
        if getattr(args, "keep_float", None) is not None:
            names = [n.strip() for n in args.keep_float.split(",") if n.strip()]
            options["keep_float"] = [] if names == ["none"] else names
        if options:
            kwargs["quantize_options"] = options
    if getattr(args, "tuning_db", None):
        kwargs["tuning_db"] = args.tuning_db
    preprocess = preprocess_option(args)
    if preprocess is not None:
        kwargs["preprocess"] = preprocess
    weights = getattr(args, "weights", "fp32")
    if weights != "fp32":
        kwargs["weights"] = weights
    optimize = getattr(args, "optimize", "speed")
    if optimize != "speed":
        if not getattr(args, "standalone", False):
            raise InputError(f"--optimize {optimize} builds the standalone C module: add --standalone")
        kwargs["optimize"] = optimize
    compress = {}
    if getattr(args, "cluster", None) is not None:
        compress["clusters"] = args.cluster
    if getattr(args, "cluster_layers", None):
        compress["layers"] = cluster_layers(args.cluster_layers)
    if getattr(args, "cluster_sparsity", None) is not None:
        if not clustering(args):
            raise InputError("--cluster-sparsity prunes the clustered layers before clustering: add --cluster K or "
                             "--cluster-layers PATTERN=K,...")
        compress["sparsity"] = cluster_sparsity(args.cluster_sparsity)
    if getattr(args, "cluster_scaled", False):
        if not clustering(args):
            raise InputError("--cluster-scaled shapes the clustered layers' codebooks: add --cluster K, "
                             "--cluster-layers PATTERN=K,... or --cluster-max-error E")
        compress["scaled"] = True
    if getattr(args, "cluster_max_error", None) is not None:
        if not calibration:
            raise InputError("--cluster-max-error measures each layer's error on calibration inputs: give --calib DIR")
        compress["max_error"] = args.cluster_max_error
    if getattr(args, "cluster_assign", None) is not None:
        if not clustering(args):
            raise InputError(f"--cluster-assign {args.cluster_assign} chooses the clustered layers' codes: add "
                             "--cluster K, --cluster-layers PATTERN=K,... or --cluster-max-error E")
        compress["assign"] = check_assign(args.cluster_assign)
    if clustering(args) and calibration:
        kwargs["calibration"] = calibration  # the centroid refit's, and --cluster-max-error's measurement
        if getattr(args, "no_cluster_refit", False):
            compress["refit"] = False
    entropy = getattr(args, "entropy", None)
    if entropy is not None:
        if not getattr(args, "standalone", False):
            raise InputError(f"--entropy {entropy} is decoded by the standalone C runtime: add --standalone")
        compress["entropy"] = entropy
    if compress:
        kwargs["compress"] = compress
    return kwargs

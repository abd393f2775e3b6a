"""``edgetvm compile``, ``run``, ``inspect``, ``prune`` and ``targets``: one model file in, an artifact,
its outputs, a description of it, a pruned model or the target presets out."""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import api
from ..artifact import read_sidecar, sidecar_path
from ..data import IMAGE_SUFFIXES, UNKNOWN_PREPROCESSING, Preprocess, UnknownPreprocessingWarning, image_to_input, read_image
from ..emulate import instructions_per_inference
from ..errors import InputError
from ..frontends.inspect import inspect_model, render_json, render_text
from ..io import atomic_path, atomic_write_json
from ..targets import list_targets
from ..transform.pipeline import explain
from ..specs import TensorSpec
from .options import (add_compile_options, add_input_shape_option, add_optimize_option, add_preprocess_options,
                      add_weights_option, channel_fraction, check_prune_calibration, compile_kwargs, parse_shape_args,
                      preprocess_option)


def cmd_compile(args: argparse.Namespace) -> int:
    compiled = api.compile(args.model, **compile_kwargs(args))
    if getattr(args, "explain", False):
        print("\n".join(explain(compiled.report.passes, compiled.report.details)))
    out = compiled.export(args.output, standalone=args.standalone)
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB) for {compiled.target.preset}")
    others = [out.parent / name for name in read_sidecar(out)["files"] if name != out.name]
    for path in [*others, sidecar_path(out)]:
        print(f"wrote {path}")
    return 0


NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ImageInput:
    """``--input face.jpg``: an image, made the model's input once the artifact says its shape."""

    path: str
    pixels: np.ndarray  # (H, W, 3) RGB uint8


def read_input_arg(item: str) -> tuple[str | None, np.ndarray | ImageInput]:
    """``--input [NAME=]x.npy`` or an image: the input's name (None when not given) and its array or image."""
    name, sep, path = item.partition("=")
    if not sep:
        name, path = None, item
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return name, ImageInput(path, read_image(path))
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as exc:
        raise InputError(f"--input {item!r}: cannot read {path} ({exc.strerror})") from None
    if head != NPY_MAGIC:
        raise InputError(f"--input {item!r}: {path} is not a .npy file; `edgetvm run` takes arrays saved with "
                         f"numpy.save (the model's input shape and dtype, preprocessed as the model expects) or "
                         f"images ({', '.join(IMAGE_SUFFIXES)})")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--input {item!r}: cannot read {path} as a .npy file ({exc})") from None
    return name, data


def images_to_inputs(pairs: list, specs: list[TensorSpec], preprocess: Preprocess | None) -> list:
    """Each image of ``pairs`` as its input (by name, else by position), preprocessed by ``preprocess``."""
    by_name = {spec.name: spec for spec in specs}
    result = []
    for position, (name, value) in enumerate(pairs):
        if isinstance(value, ImageInput):
            spec = by_name.get(name) if name is not None else (specs[position] if position < len(specs) else None)
            if spec is None:
                raise InputError(f"--input {value.path}: the model has no input {name or f'number {position + 1}'}; its "
                                 f"inputs are {[s.name for s in specs]}")
            if preprocess is None:
                warnings.warn(UNKNOWN_PREPROCESSING, UnknownPreprocessingWarning, stacklevel=2)
            value = image_to_input(value.pixels, spec, "bilinear", preprocess)
        result.append((name, value))
    return result


def emulated(meta: dict) -> bool:
    """Whether ``edgetvm.load(..., emulate=True)`` runs this artifact under qemu-arm rather than natively."""
    return meta["kind"] == "standalone" and meta["target"].get("arch") == "armv7" and platform.machine() != "armv7l"


def print_latency(model, arrays: list[np.ndarray], repeat: int) -> None:
    """``--repeat N``: time N more runs after the first (which paid for warm-up), like ``tvmc run --print-time``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        model(*arrays)
        times.append((time.perf_counter() - started) * 1e3)
    print(f"latency over {repeat} run(s) (ms): median {np.median(times):.3f}  min {min(times):.3f}  "
          f"max {max(times):.3f}  mean {np.mean(times):.3f}")


def cmd_run(args: argparse.Namespace) -> int:
    if args.repeat is not None and args.repeat < 1:
        raise InputError(f"--repeat {args.repeat}: give a number of runs of at least 1")
    pairs = [read_input_arg(item) for item in args.input]
    model = api.load(args.artifact, num_threads=args.threads, emulate=args.emulate)
    meta = read_sidecar(args.artifact)
    # The flags' preprocessing, else the one the model was compiled with (a zoo model's own, or --mean ...).
    preprocess = Preprocess.coerce(preprocess_option(args) or meta.get("preprocess"))
    pairs = images_to_inputs(pairs, model.inputs, preprocess)
    under_qemu = emulated(meta)
    if under_qemu and args.repeat:
        raise InputError("--repeat times runs on this machine; under --emulate qemu's wall time says nothing about a "
                         "board's speed: the guest instruction count it prints is the measure")
    if all(name is None for name, _ in pairs):
        arrays = model.bind_inputs([arr for _, arr in pairs], {})
    else:
        if any(name is None for name, _ in pairs):
            raise InputError("--input: either name every input (NAME=x.npy) or none")
        arrays = model.bind_inputs((), {name: arr for name, arr in pairs})
    outputs = model.run_dict(*arrays)
    for name, arr in outputs.items():
        print(f"{name}: shape={list(arr.shape)} dtype={arr.dtype} min={arr.min():.6g} max={arr.max():.6g} "
              f"mean={arr.mean():.6g}")
    if args.repeat:
        print_latency(model, arrays, args.repeat)
    if under_qemu:
        count = instructions_per_inference(args.artifact, arrays, cpu=meta["target"].get("qemu_cpu") or None)
        print(f"guest instructions per inference: {count:,} (qemu-arm, 1 thread, start-up excluded)")
    if args.output:
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **outputs)
        print(f"wrote {args.output}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_model(args.model, parse_shape_args(args.input_shape) or None)
    print(render_json(info) if args.json else render_text(info))
    # A refused model is described, but it does not compile: the same status as compile's error.
    return 2 if "refused" in info else 0


def cmd_prune(args: argparse.Namespace) -> int:
    check_prune_calibration(args.criterion, "--criterion", args.calib, "--calib")
    if args.allocation == "sensitivity" and not args.calib:
        raise InputError("--allocation sensitivity measures each layer group's cost on calibration inputs: give "
                         "--calib DIR, or choose uniform or global")
    if args.layer_ratio and args.allocation in ("global", "sensitivity"):
        raise InputError(f"--allocation {args.allocation} spreads one --ratio over all layer groups; --layer-ratio "
                         f"sets each group's own: give one of the two (--allocation uniform takes --layer-ratio)")
    ratio = args.ratio
    if args.layer_ratio:
        ratio = {"*": args.ratio}
        for item in args.layer_ratio:
            pattern, sep, value = item.rpartition("=")
            try:
                if not sep or not pattern:
                    raise ValueError
                ratio[pattern] = channel_fraction(value)
            except (ValueError, argparse.ArgumentTypeError):
                raise InputError(f"--layer-ratio {item!r}: write PATTERN=FRACTION with a fraction in [0, 1), for "
                                 f"example 'conv_1*=0.5'") from None
    pruned = api.prune_model(args.model, ratio, criterion=args.criterion, calibration=args.calib,
                             recover=not args.no_recover, input_shapes=parse_shape_args(args.input_shape) or None,
                             round_to=args.round_to, allocation=args.allocation, preprocess=preprocess_option(args))
    out = pruned.save(args.output)
    report = pruned.report
    changed = [g for g in report["groups"] if g["kept"] != g["channels"]]
    for g in changed:
        print(f"  {g['group']}: {g['channels']} -> {g['kept']} channels ({g.get('criterion')})")
    for b in report["blocked"]:
        print(f"  left alone: {', '.join(b['layers'])}: {'; '.join(b['why'])}")
    for why in sorted({u["why"] for u in report["unanalysed"]}):
        print(f"  not analysed: {sum(u['why'] == why for u in report['unanalysed'])} layer(s): {why}")
    for note in report["notes"]:
        print(f"  note: {note}")
    refit = report["recovery"]["refit"]
    print(f"pruned {len(changed)} layer groups, refit {len(refit)} layers, folded "
          f"{len(report['recovery']['folded'])} constant contributions; wrote {out}")
    if args.report:
        atomic_write_json(args.report, report)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    rows = list_targets()
    width = max(len(r[0]) for r in rows)
    for names, cpu, desc in rows:
        print(f"{names:<{width}}  {cpu:<12}  {desc}")
    return 0


def add_compile_commands(sub) -> None:
    """Register ``compile``, ``run``, ``inspect``, ``prune`` and ``targets`` on the top-level subparsers."""
    p = sub.add_parser("compile", help="compile a model to a .so (and JSON sidecar)",
                       description="Compile an ONNX or TFLite model into a shared library for a target board or "
                                   "this machine: a TVM-runtime .so, or with --standalone a C-runtime .so, header "
                                   "and example main.")
    add_compile_options(p)
    p.add_argument("-o", "--output", "--out", dest="output", required=True, help="output .so path")
    p.add_argument("--standalone", action="store_true", help="standalone C module (.so + .h + _main.c), no TVM runtime needed; `edgetvm run --emulate` "
                   "runs an ARM one here under qemu")
    add_weights_option(p)
    add_optimize_option(p)
    p.add_argument("--explain", action="store_true", help="print what each graph pass did, and why it declined where it did")
    p.add_argument("--tuning-db", default=None, metavar="DIR", help="use the schedules `edgetvm tune` measured (DIR)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a compiled artifact on .npy inputs",
                       description="Run an artifact of `edgetvm compile` on .npy inputs and print its outputs; a "
                                   "standalone ARM one runs under qemu-arm with --emulate.")
    p.add_argument("artifact", help="the .so written by `edgetvm compile` (its .json sidecar beside it)")
    p.add_argument("--input", "-i", action="append", required=True, metavar="[NAME=]x.npy",
                   help="an input array saved with numpy.save, by position or NAME= (repeatable, one per input)")
    p.add_argument("-o", "--output", "--out", dest="output", help="write all outputs to this .npz")
    p.add_argument("--threads", type=int, default=None, help="threads to run with (default: the compiled count)")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="time N more runs and print the latency (median, min, max, mean in ms)")
    p.add_argument("--emulate", action="store_true",
                   help="run a standalone ARM artifact under qemu-arm and print its guest instructions per inference")
    add_preprocess_options(p, "--input images (default: as the model was compiled with)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="a model's operators (and how each is mapped), parameters, MACs, inputs "
                                       "and outputs",
                       description="Describe a model without compiling it: inputs, outputs, operators and how the "
                                   "import maps each type (builtin converter, densified sparse, custom op, refused), "
                                   "parameters and multiply-accumulates. Exits 2 when the import refuses an operator.")
    p.add_argument("model", help="ONNX or TFLite model file, or zoo:NAME")
    add_input_shape_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("prune", help="prune channels of an ONNX model and write the pruned ONNX (for fine-tuning)",
                       description="Remove convolution channels of an ONNX model (lossy), recover the layers after "
                                   "them by least squares on --calib inputs, and write the smaller ONNX model.")
    p.add_argument("model", help="ONNX model file, or zoo:NAME")
    p.add_argument("--ratio", type=channel_fraction, default=0.3, help="fraction of the prunable channels to remove (of each "
                   "layer group with --allocation uniform; 0: only channels whose output is constant, lossless)")
    p.add_argument("--layer-ratio", action="append", metavar="PATTERN=FRACTION",
                   help="ratio for the layers whose weight name matches PATTERN (fnmatch; repeatable)")
    p.add_argument("--criterion", default="auto", choices=["auto", "l1", "bn_gamma", "activation", "reconstruction"], help="how channels are ranked (auto: reconstruction with --calib, else l1)")
    p.add_argument("--allocation", default="auto", choices=["auto", "uniform", "global", "sensitivity"],
                   help="uniform: every group loses --ratio; sensitivity: --ratio of all prunable channels, spread by "
                   "each group's measured cost (needs --calib); auto: sensitivity with --calib, else uniform")
    p.add_argument("--calib", default=None, metavar="DIR", help="calibration inputs (.npy or images) for "
                   "least-squares recovery of the layers after each pruned one")
    p.add_argument("--no-recover", action="store_true", help="skip the least-squares recovery")
    p.add_argument("--round-to", type=int, default=4, help="keep channel counts multiples of this (4: NEON lanes)")
    add_input_shape_option(p)
    add_preprocess_options(p, "--calib images")
    p.add_argument("--report", default=None, metavar="JSON", help="write the full pruning report here")
    p.add_argument("-o", "--output", "--out", dest="output", required=True, help="pruned .onnx path")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("targets", help="list target presets", description="List the target presets "
                       "--target accepts: name, CPU, description.")
    p.set_defaults(func=cmd_targets)

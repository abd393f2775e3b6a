"""The ``edgetvm`` command line. Each subcommand is one function; errors print as one clear line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import EdgeTVMError, InputError, first_line


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


def add_compile_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that compiles a model."""
    parser.add_argument("model", help="ONNX or TFLite model file")
    parser.add_argument("--target", "-t", default="host", help="preset name (see `edgetvm targets`) or a TVM target JSON dict")
    parser.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...", help="static input shape (repeatable)")
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


def cmd_compile(args: argparse.Namespace) -> int:
    from .. import api

    compiled = api.compile(args.model, **compile_kwargs(args))
    if getattr(args, "explain", False):
        from ..transform.pipeline import explain

        print("\n".join(explain(compiled.report.passes, compiled.report.details)))
    out = compiled.export(args.output, standalone=args.standalone)
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB) for {compiled.target.preset}")
    return 0


def _read_input_arg(item: str) -> tuple[str | None, np.ndarray]:
    name, sep, path = item.partition("=")
    if not sep:
        name, path = None, item
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--input {item!r}: cannot read {path} as a .npy file ({exc})") from None
    return name, data


def cmd_run(args: argparse.Namespace) -> int:
    from .. import api

    model = api.load(args.artifact, num_threads=args.threads, emulate=args.emulate)
    pairs = [_read_input_arg(item) for item in args.input]
    if all(name is None for name, _ in pairs):
        outputs = model.run_dict(*[arr for _, arr in pairs])
    else:
        if any(name is None for name, _ in pairs):
            raise InputError("--input: either name every input (NAME=x.npy) or none")
        outputs = model.run_dict(**{name: arr for name, arr in pairs})
    for name, arr in outputs.items():
        print(f"{name}: shape={list(arr.shape)} dtype={arr.dtype} min={arr.min():.6g} max={arr.max():.6g} "
              f"mean={arr.mean():.6g}")
    if args.output:
        from ..io import atomic_path

        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **outputs)
        print(f"wrote {args.output}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..frontends.inspect import inspect_model, render_json, render_text

    info = inspect_model(args.model, parse_shape_args(args.input_shape) or None)
    print(render_json(info) if args.json else render_text(info))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from ..pruning.prune import prune_model

    ratio = args.ratio
    if args.layer_ratio:
        ratio = {"*": args.ratio}
        for item in args.layer_ratio:
            pattern, sep, value = item.rpartition("=")
            try:
                if not sep or not pattern:
                    raise ValueError
                ratio[pattern] = float(value)
            except ValueError:
                raise InputError(f"--layer-ratio {item!r}: write PATTERN=FRACTION, for example 'conv_1*=0.5'") from None
    pruned = prune_model(args.model, ratio, criterion=args.criterion, calibration=args.calib,
                         recover=not args.no_recover, input_shapes=parse_shape_args(args.input_shape) or None,
                         round_to=args.round_to, allocation=args.allocation)
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
        from ..io import atomic_write_json

        atomic_write_json(args.report, report)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from ..targets import list_targets

    rows = list_targets()
    width = max(len(r[0]) for r in rows)
    for names, cpu, desc in rows:
        print(f"{names:<{width}}  {cpu:<12}  {desc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgetvm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a model to a .so (and JSON sidecar)")
    add_compile_options(p)
    p.add_argument("-o", "--output", required=True, help="output .so path")
    p.add_argument("--standalone", action="store_true", help="standalone C module (.so + .h + main.c), no TVM runtime")
    p.add_argument("--explain", action="store_true", help="print what each graph pass did, and why it declined where it did")
    p.add_argument("--tuning-db", default=None, metavar="DIR", help="use the schedules `edgetvm tune` measured (DIR)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a host artifact on .npy inputs")
    p.add_argument("artifact")
    p.add_argument("--input", "-i", action="append", required=True, metavar="[NAME=]x.npy")
    p.add_argument("-o", "--output", help="write all outputs to this .npz")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--emulate", action="store_true", help="run a standalone ARM artifact under qemu-arm")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="a model's operators, parameters, MACs, inputs and outputs")
    p.add_argument("model", help="ONNX or TFLite model file")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...", help="static input shape (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("prune", help="prune channels of an ONNX model and write the pruned ONNX (for fine-tuning)")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--ratio", type=float, default=0.3, help="fraction of the prunable channels to remove (of each "
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
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...", help="static input shape (repeatable)")
    p.add_argument("--report", default=None, metavar="JSON", help="write the full pruning report here")
    p.add_argument("-o", "--output", required=True, help="pruned .onnx path")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("targets", help="list target presets")
    p.set_defaults(func=cmd_targets)

    from .face import add_face_commands
    from .tune import add_tuning_commands

    add_face_commands(sub)
    add_tuning_commands(sub, add_compile_options)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EdgeTVMError as exc:
        print(f"edgetvm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgetvm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line for the user, the trace in a file
        log = _save_traceback(exc)
        print(f"edgetvm: internal error: {type(exc).__name__}: {first_line(exc)}\n"
              f"  this is a bug in edgetvm, not in your input; please report it with {log}", file=sys.stderr)
        return 70


def _save_traceback(exc: BaseException) -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="edgetvm-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(traceback.format_exception(exc)))
    return path


if __name__ == "__main__":
    sys.exit(main())

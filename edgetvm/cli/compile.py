"""``edgetvm compile``, ``run``, ``inspect``, ``prune`` and ``targets``: one model file in, an artifact,
its outputs, a description of it, a pruned model or the target presets out."""

from __future__ import annotations

import argparse

import numpy as np

from .. import api
from ..errors import InputError
from ..frontends.inspect import inspect_model, render_json, render_text
from ..io import atomic_path, atomic_write_json
from ..targets import list_targets
from ..transform.pipeline import explain
from .options import add_compile_options, add_input_shape_option, compile_kwargs, parse_shape_args


def cmd_compile(args: argparse.Namespace) -> int:
    compiled = api.compile(args.model, **compile_kwargs(args))
    if getattr(args, "explain", False):
        print("\n".join(explain(compiled.report.passes, compiled.report.details)))
    out = compiled.export(args.output, standalone=args.standalone)
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB) for {compiled.target.preset}")
    return 0


def read_input_arg(item: str) -> tuple[str | None, np.ndarray]:
    """``--input [NAME=]x.npy``: the input's name (None when not given) and its array."""
    name, sep, path = item.partition("=")
    if not sep:
        name, path = None, item
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--input {item!r}: cannot read {path} as a .npy file ({exc})") from None
    return name, data


def cmd_run(args: argparse.Namespace) -> int:
    model = api.load(args.artifact, num_threads=args.threads, emulate=args.emulate)
    pairs = [read_input_arg(item) for item in args.input]
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
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **outputs)
        print(f"wrote {args.output}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_model(args.model, parse_shape_args(args.input_shape) or None)
    print(render_json(info) if args.json else render_text(info))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
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
    pruned = api.prune_model(args.model, ratio, criterion=args.criterion, calibration=args.calib,
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
    add_input_shape_option(p)
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
    add_input_shape_option(p)
    p.add_argument("--report", default=None, metavar="JSON", help="write the full pruning report here")
    p.add_argument("-o", "--output", required=True, help="pruned .onnx path")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("targets", help="list target presets")
    p.set_defaults(func=cmd_targets)

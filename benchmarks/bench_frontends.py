"""Every TFLite model of mediapipe 0.10.21 (14 files) through edgetvm: compiled for the host and for
ARMv7 NEON (standalone, run under qemu), each output compared with LiteRT on real images.

    .venv/bin/python benchmarks/bench_frontends.py [--models blazeface,pose_detection] [--target armv7-neon]
        [--no-arm] [--json out.json]

Inputs: astronaut.png and grace_hopper.jpg, each resized (bilinear) to the model's input and
normalised as its MediaPipe graph does (``edgetvm.zoo.PREPROCESSING``: RGB, NHWC, [-1, 1] or [0, 1]).
Error per output: ``max|edgetvm - LiteRT| / max|LiteRT|``, the worst of the two images; the goal is
1e-4 (``ratio_to_goal`` <= 1 holds it). LiteRT runs single-threaded with its default delegate
(XNNPACK), as a user would run it. The ARM build runs under ``qemu-arm -cpu cortex-a7`` on the same
inputs and is compared with LiteRT too. LiteRT cannot run MediaPipe's custom ops (selfie
segmentation, FaceMesh with attention): for those the reference is LiteRT's builtin kernels around
numpy implementations of the custom ops (``tests/frontends/mediapipe_reference.py``).

``litert_builtin_vs_xnnpack`` is LiteRT against itself (its builtin kernels vs XNNPACK): the
spread float32 summation order alone gives each output.

Status per model: ``ok`` (both builds within the goal), ``over goal, within LiteRT's own spread``
(every output over the goal differs from XNNPACK less than LiteRT's builtin kernels do),
``over goal``, ``refused`` (edgetvm's import names the unsupported ops), ``error``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edgetvm
from edgetvm import emulate
from edgetvm.data import Preprocess, image_to_input, read_image
from edgetvm.errors import UnsupportedModelError
from edgetvm.frontends.tflite import op_names, parse_tflite, read_tflite
from edgetvm.io import atomic_write_json
from edgetvm.zoo import PREPROCESSING, fetch, load_astronaut

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.frontends.checks import litert_outputs, relative_error  # noqa: E402
from tests.frontends.mediapipe_reference import litert_with_numpy_custom_ops  # noqa: E402

# The 14 .tflite files of mediapipe 0.10.21, by zoo name (blazeface = face_detection_short_range).
MEDIAPIPE_MODELS = ["blazeface", "face_detection_full_range_sparse", "facemesh", "facemesh_attention",
                    "iris", "hand_landmark_lite", "hand_landmark_full", "hand_recrop", "palm_detection_lite",
                    "palm_detection_full", "pose_detection", "pose_landmark_full", "selfie_segmentation",
                    "selfie_segmentation_landscape"]
GOAL = 1e-4


def worst_errors(runs: list[dict[str, np.ndarray]], references: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per output name, the largest relative error over the images."""
    return {name: max(relative_error(run[name], ref[name]) for run, ref in zip(runs, references))
            for name in references[0]}


def model_and_graph(path):
    model = parse_tflite(*read_tflite(path))
    return model, model.Subgraphs(0)


def bench_model(name: str, target: str, arm: bool, workdir: Path) -> dict:
    path = fetch(name)
    row: dict = {"model": name, "file": path.name}
    started = time.perf_counter()
    try:
        host = edgetvm.compile(path, "host")
    except UnsupportedModelError as exc:
        return {**row, "status": "refused", "unsupported_ops": sorted(exc.unsupported),
                "reason": str(exc).splitlines()[0][:300]}
    row["host_compile_s"] = round(time.perf_counter() - started, 1)
    preprocess = Preprocess.coerce(PREPROCESSING[name])
    images = [load_astronaut(), read_image(fetch("grace_hopper"))]
    xs = [image_to_input(image, host.inputs[0], preprocess=preprocess) for image in images]
    custom_ops = sorted({op for op, _ in op_names(*model_and_graph(path)) if op.startswith("CUSTOM:")})
    if custom_ops:
        # LiteRT cannot run MediaPipe's custom ops: it runs the builtin ops around them and numpy
        # references the custom ops (tests/frontends/mediapipe_reference.py).
        row["reference"] = f"LiteRT builtin kernels + numpy {', '.join(op[7:] for op in custom_ops)}"
        references = [litert_with_numpy_custom_ops(path, x) for x in xs]
    else:
        row["reference"] = "LiteRT (XNNPACK)"
        references = [litert_outputs(path, x) for x in xs]
    row["host_max_rel_error"] = worst_errors([host.run_dict(x) for x in xs], references)
    # How far LiteRT's two CPU paths (XNNPACK, builtin kernels) are apart: float32 summation order
    # alone moves an ill-conditioned output this much.
    row["litert_builtin_vs_xnnpack"] = {} if custom_ops else worst_errors(
        [litert_outputs(path, x, xnnpack=False) for x in xs], references)
    errors = list(row["host_max_rel_error"].values())
    if arm:
        started = time.perf_counter()
        compiled = edgetvm.compile(path, target)
        so = compiled.export(workdir / f"{name}.so", standalone=True)
        row["arm_compile_s"] = round(time.perf_counter() - started, 1)
        names = [t.name for t in compiled.outputs]
        runs = [dict(zip(names, emulate.run_standalone_arm(so, [x], cpu=compiled.target.qemu_cpu).outputs))
                for x in xs]
        row["arm_max_rel_error"] = worst_errors(runs, references)
        errors += list(row["arm_max_rel_error"].values())
    row["ratio_to_goal"] = round(max(errors) / GOAL, 4)
    spread = row["litert_builtin_vs_xnnpack"]
    over = {name: error for name, error in row["host_max_rel_error"].items() if error > GOAL}
    if arm:
        over.update({n: max(e, over.get(n, 0)) for n, e in row["arm_max_rel_error"].items() if e > GOAL})
    if not over:
        row["status"] = "ok"
    elif all(error <= spread.get(name, 0.0) for name, error in over.items()):
        row["status"] = "over goal, within LiteRT's own spread"
    else:
        row["status"] = "over goal"
    row["notes"] = host.report.details.get("import", {}).get("notes", [])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MEDIAPIPE_MODELS))
    parser.add_argument("--target", default="armv7-neon")
    parser.add_argument("--no-arm", action="store_true", help="host only (no ARM build, no qemu)")
    parser.add_argument("--json", help="also write the JSON table here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-frontends-") as tmp:
        for name in args.models.split(","):
            try:
                rows.append(bench_model(name, args.target, not args.no_arm, Path(tmp)))
            except Exception as exc:  # noqa: BLE001 - one failing model must not hide the others' numbers
                rows.append({"model": name, "status": "error",
                             "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=2))
    if args.json:
        atomic_write_json(args.json, rows)
    return 0 if all(r["status"] != "error" and r["status"] != "over goal" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

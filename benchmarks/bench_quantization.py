"""int8 against edgetvm's own fp32 on the same models, measured in the same run.

    .venv/bin/python benchmarks/bench_quantization.py [--models mobilefacenet,retinaface,sface]
        [--target cortex-a7] [--calib-mode minmax] [--rounds 10] [--no-qemu] [--json out.json]

Per model: the weights bound in the compiled module (bytes of its constants), the host latency
(median of interleaved rounds, 1 thread) and the ARM guest instructions per inference of the
standalone build under qemu (N+1 minus 1, ``edgetvm.emulate.instructions_per_inference``).
Ratios are int8 / fp32 (below 1: int8 is smaller/faster). Calibration uses real face images
(astronaut crops, LFW faces; ``tests/quantization/faces.py``).

Instruction counts are not the whole story: ncnn's own ARMv7 int8 kernels execute about as many
instructions as its fp32 ones (MobileNetV1: 194.0 M int8 vs 192.4 M fp32). On hardware the int8
gain is memory traffic (a quarter of the weight and activation bytes) and 8-bit lanes (16 per
NEON register against 4 floats), which an instruction count does not show.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "quantization"))

NCNN_NOTE = ("ncnn's ARMv7 int8 kernels execute about as many instructions as its fp32 ones "
             "(MobileNetV1: 194.0 M int8 vs 192.4 M fp32); the gain on hardware is memory traffic and "
             "8-bit lanes, which instruction counts do not show.")


def _model(name: str):
    """(model, input_shapes, calibration inputs, benchmark input)."""
    from faces import astronaut_crops, calibration_scenes, lfw_crops, to_nchw

    if name == "mobilefacenet":
        from edgetvm.zoo.architectures import mobilefacenet

        faces = to_nchw(astronaut_crops(4, seed=1) + lfw_crops(range(40, 44)))
        # MobileFaceNet normalises nothing in-graph: feed (x - 127.5) / 128 as it was trained to see.
        faces = [(f - 127.5) / 128.0 for f in faces]
        return mobilefacenet(), None, faces, faces[0]
    from edgetvm.face.detect import letterbox
    from edgetvm.zoo import fetch

    if name == "retinaface":
        scenes = [letterbox(im, 320, 320, (104.0, 117.0, 123.0))[0] for im in calibration_scenes(6, seed=1)]
        return fetch("retinaface"), {"input": (1, 3, 320, 320)}, scenes, scenes[0]
    faces = to_nchw(astronaut_crops(6, seed=1) + lfw_crops(range(40, 50)))
    return fetch(name), None, faces, faces[0]


def _median_ms(fn, x, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def bench(name: str, target: str, calib_mode: str, rounds: int, qemu: bool) -> dict:
    import edgetvm
    from edgetvm.passes.quantize import constant_bytes

    model, shapes, calibration, x = _model(name)
    row = {"model": name}
    host = {}
    for kind in ("fp32", "int8"):
        kwargs = {"quantize": "int8", "calibration": calibration, "calibration_mode": calib_mode} if kind == "int8" else {}
        compiled = edgetvm.compile(model, "host", input_shapes=shapes, num_threads=1, **kwargs)
        host[kind] = compiled
        row[f"weights_{kind}_bytes"] = sum(constant_bytes(compiled.scheduled).values())
        if kind == "int8":
            row["float_ops_left"] = compiled.report.details["quantize"]["float_ops"]
            row["int8_kernels"] = compiled.report.details["quantize"]["int8_kernels"]
    for kind in ("fp32", "int8"):
        host[kind](x)  # build + warm up
    # Interleaved rounds: both kinds see the same machine load.
    samples = {"fp32": [], "int8": []}
    for _ in range(max(1, rounds // 2)):
        for kind in ("fp32", "int8"):
            samples[kind].append(_median_ms(host[kind], x, 2))
    for kind in ("fp32", "int8"):
        row[f"host_{kind}_ms"] = round(statistics.median(samples[kind]), 3)
    row["weights_ratio"] = round(row["weights_int8_bytes"] / row["weights_fp32_bytes"], 4)
    row["host_ratio"] = round(row["host_int8_ms"] / row["host_fp32_ms"], 4)
    if qemu:
        from edgetvm import emulate

        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("fp32", "int8"):
                kwargs = {"quantize": "int8", "calibration": calibration,
                          "calibration_mode": calib_mode} if kind == "int8" else {}
                compiled = edgetvm.compile(model, target, input_shapes=shapes, num_threads=1, **kwargs)
                so = compiled.export(Path(tmp) / f"{name}_{kind}.so", standalone=True)
                row[f"arm_{kind}_minsn"] = round(
                    emulate.instructions_per_inference(so, [x], cpu=compiled.target.qemu_cpu) / 1e6, 2)
                row[f"arm_{kind}_so_bytes"] = so.stat().st_size
        row["arm_insn_ratio"] = round(row["arm_int8_minsn"] / row["arm_fp32_minsn"], 4)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilefacenet,retinaface,sface")
    parser.add_argument("--target", default="cortex-a7")
    parser.add_argument("--calib-mode", default="minmax")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-qemu", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = [bench(m, args.target, args.calib_mode, args.rounds, not args.no_qemu) for m in args.models.split(",")]
    result = {"target": args.target, "calibration_mode": args.calib_mode, "rows": rows, "note": NCNN_NOTE,
              "goal": "arm_insn_ratio <= 0.8"}
    print(json.dumps(result, indent=2))
    print()
    header = f"{'model':<14}{'weights fp32':>14}{'int8':>12}{'ratio':>8}{'host fp32 ms':>14}{'int8 ms':>10}{'ratio':>8}"
    header += f"{'ARM fp32 Minsn':>16}{'int8 Minsn':>12}{'ratio':>8}" if not args.no_qemu else ""
    print(header)
    for r in rows:
        line = (f"{r['model']:<14}{r['weights_fp32_bytes']:>14,}{r['weights_int8_bytes']:>12,}{r['weights_ratio']:>8.3f}"
                f"{r['host_fp32_ms']:>14.2f}{r['host_int8_ms']:>10.2f}{r['host_ratio']:>8.3f}")
        if "arm_insn_ratio" in r:
            line += f"{r['arm_fp32_minsn']:>16.1f}{r['arm_int8_minsn']:>12.1f}{r['arm_insn_ratio']:>8.3f}"
        print(line)
    print()
    print("Note:", NCNN_NOTE)
    if args.json:
        from edgetvm.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

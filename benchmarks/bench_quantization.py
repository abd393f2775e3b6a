"""int8 against edgetvm's own fp32 on the same models, measured in the same run.

    .venv/bin/python benchmarks/bench_quantization.py [--models mobilefacenet,retinaface,sface]
        [--target cortex-a7] [--calib-mode minmax] [--rounds 10] [--no-qemu] [--json out.json]

Per model: the weights bound in the compiled module (bytes of its constants), the host latency
(median of interleaved rounds, 1 thread) and the ARM guest instructions and estimated Cortex-A9/A7
issue cycles per inference of the standalone build under qemu (N+1 minus 1,
``edgetvm.emulate.cycles_per_inference``, the ``neon_cycles`` plugin).
Ratios are int8 / fp32 (below 1: int8 is smaller/faster). Calibration uses real face images
(Grace Hopper crops, LFW faces; ``tests/quantization/faces.py``); the accuracy line compares int8
with fp32 on other photographs (astronaut crops, other LFW faces): embedding cosine min/mean,
RetinaFace box IoU and landmark drift (``accuracy``). The LFW faces are 25x25 grey upscaled; no
labelled face-pair set ships in any package, so this is agreement with fp32, not verification rate.

``--per-kernel`` adds where the int8 instructions go: every distinct kernel of the int8 ARM build
is built alone (same shapes and constants, random inputs) and counted the same way, times its calls,
summed by kind (conv1x1, im2col, depthwise, add: the channels-last kernels; other names: the rest).

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
    from faces import calibration_scenes, embedding_calibration_faces, grace_hopper_crops, lfw_crops, to_nchw

    if name == "mobilefacenet":
        from edgetvm.zoo.architectures import mobilefacenet

        faces = to_nchw(grace_hopper_crops(4, seed=1) + lfw_crops(range(40, 44)))
        # MobileFaceNet normalises nothing in-graph: feed (x - 127.5) / 128 as it was trained to see.
        faces = [(f - 127.5) / 128.0 for f in faces]
        return mobilefacenet(), None, faces, faces[0]
    from edgetvm.face.detect import letterbox
    from edgetvm.zoo import fetch

    if name == "retinaface":
        scenes = [letterbox(im, 320, 320, (104.0, 117.0, 123.0))[0] for im in calibration_scenes(6, seed=1)]
        return fetch("retinaface"), {"input": (1, 3, 320, 320)}, scenes, scenes[0]
    # Other photographs than the accuracy evaluation's (faces.embedding_evaluation_faces).
    faces = to_nchw(embedding_calibration_faces())
    return fetch(name), None, faces, faces[0]


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def accuracy(name: str, fp32, int8) -> dict:
    """int8 against fp32 on real faces no calibration input shows: embedding cosine (min and mean
    over 24 crops) for SFace/MobileFaceNet, box IoU and landmark drift for RetinaFace (the goals:
    cosine >= 0.99, IoU >= 0.9, landmarks within 2 px)."""
    from faces import detection_images, embedding_evaluation_faces, to_nchw

    if name == "retinaface":
        from edgetvm.face.detect import decode_retinaface, letterbox
        from edgetvm.face.nms import nms

        ious, drifts, missing = [], [], 0
        for image in detection_images(320).values():
            x, _ = letterbox(image, 320, 320, (104.0, 117.0, 123.0))
            found = []
            for model in (fp32, int8):
                det = decode_retinaface(model(x), 320, 320, 0.6)
                found.append([(det.boxes[i], det.landmarks[i]) for i in nms(det.boxes, det.scores, 0.4)])
            ref, got = found
            missing += abs(len(ref) - len(got))
            for box, landmarks in ref:
                if got:
                    best = max(got, key=lambda g: _iou(box, g[0]))
                    ious.append(float(_iou(box, best[0])))
                    drifts.append(float(np.max(np.abs(best[1] - landmarks))))
        return {"faces": len(ious), "faces_missing_or_extra": missing,
                "box_iou_min": round(min(ious), 4) if ious else None,
                "landmark_px_max": round(max(drifts), 3) if drifts else None}
    faces = to_nchw(embedding_evaluation_faces())
    if name == "mobilefacenet":
        faces = [(f - 127.5) / 128.0 for f in faces]
    cosines = [_cosine(fp32(x), int8(x)) for x in faces]
    return {"crops": len(cosines), "cosine_min": round(min(cosines), 4), "cosine_mean": round(float(np.mean(cosines)), 4)}


def _median_ms(fn, x, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def _kernel_calls(scheduled):
    """[(global var, call, kind)] of the call_tir bindings of ``main``, in order."""
    import tvm
    from tvm import relax

    from edgetvm.kernels.int8_nhwc import KERNEL_ATTR

    calls = []
    for block in scheduled["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir":
                func = scheduled[value.args[0]]
                recipe = func.attrs.get(KERNEL_ATTR) if func.attrs is not None else None
                kind = json.loads(str(recipe))["kind"] if recipe is not None else value.args[0].name_hint.rstrip("0123456789")
                calls.append((value.args[0], binding, kind))
    return calls


def channels_last_kernels(scheduled) -> dict[str, int]:
    """Calls of each channels-last int8 kernel kind in ``main``."""
    from edgetvm.kernels.int8_nhwc import KERNELS

    counts: dict[str, int] = {}
    for _, _, kind in _kernel_calls(scheduled):
        if kind in KERNELS:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def per_kernel_instructions(compiled, workdir: Path) -> dict[str, dict[str, float]]:
    """Million ARM guest instructions and estimated a7 issue cycles by kernel kind: each distinct kernel
    alone, times its calls."""
    import tvm
    from tvm import relax

    from edgetvm import emulate
    from edgetvm.backends.standalone import export_standalone
    from edgetvm.specs import ImportedModel, TensorSpec

    rng = np.random.default_rng(0)
    measured: dict = {}
    totals: dict[str, list[float]] = {}
    for gvar, binding, kind in _kernel_calls(compiled.scheduled):
        if gvar not in measured:
            bb = relax.BlockBuilder()
            params, args = [], []
            for i, arg in enumerate(binding.value.args[1].fields):
                if isinstance(arg, tvm.ir.Constant):
                    args.append(arg)
                else:
                    var = relax.Var(f"in{i}", relax.TensorType([int(d) for d in arg.ty.shape], str(arg.ty.dtype)))
                    params.append(var)
                    args.append(var)
            out_ty = binding.var.ty
            out_shape = [int(d) for d in out_ty.shape]
            with bb.function("main", params):
                with bb.dataflow():
                    kernel = bb.add_func(compiled.scheduled[gvar], gvar.name_hint)
                    out = bb.emit_output(bb.emit(relax.call_tir(kernel, relax.Tuple(args),
                                                                relax.TensorType(out_shape, str(out_ty.dtype)))))
                bb.emit_func_output(out)
            mod = bb.get()
            inputs = [TensorSpec(v.name, tuple(int(d) for d in v.ty.shape), str(v.ty.dtype)) for v in params]
            imported = ImportedModel(mod, inputs, [TensorSpec("y", tuple(out_shape), str(out_ty.dtype))], "<kernel>",
                                     "onnx")
            so = export_standalone(mod, imported, compiled.target, workdir / f"{gvar.name_hint}.so", num_threads=1)[0]
            arrays = [(rng.integers(-100, 100, t.shape) if "int" in t.dtype else rng.uniform(-1, 1, t.shape)).astype(t.dtype)
                      for t in inputs]
            measured[gvar] = emulate.cycles_per_inference(so, arrays, cpu=compiled.target.qemu_cpu)
        total = totals.setdefault(kind, [0.0, 0.0])
        total[0] += measured[gvar].instructions / 1e6
        total[1] += measured[gvar].cycles_a7 / 1e6
    return {k: {"minsn": round(v[0], 2), "a7_mcycles": round(v[1], 2)}
            for k, v in sorted(totals.items(), key=lambda kv: -kv[1][1])}


def bench(name: str, target: str, calib_mode: str, rounds: int, qemu: bool, per_kernel: bool = False) -> dict:
    import edgetvm
    from edgetvm.quantization.quantize import constant_bytes

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
            row["kept_float"] = compiled.report.details["quantize"]["kept_float"]
    row["accuracy"] = accuracy(name, host["fp32"], host["int8"])
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
                estimate = emulate.cycles_per_inference(so, [x], cpu=compiled.target.qemu_cpu)
                row[f"arm_{kind}_minsn"] = round(estimate.instructions / 1e6, 2)
                row[f"arm_{kind}_a9_mcycles"] = round(estimate.cycles_a9 / 1e6, 2)
                row[f"arm_{kind}_a7_mcycles"] = round(estimate.cycles_a7 / 1e6, 2)
                row[f"arm_{kind}_so_bytes"] = so.stat().st_size
                if kind == "int8":
                    row["arm_int8_channels_last"] = channels_last_kernels(compiled.scheduled)
                    if per_kernel:
                        row["arm_int8_minsn_by_kernel"] = per_kernel_instructions(compiled, Path(tmp))
        row["arm_insn_ratio"] = round(row["arm_int8_minsn"] / row["arm_fp32_minsn"], 4)
        row["arm_a7_cycles_ratio"] = round(row["arm_int8_a7_mcycles"] / row["arm_fp32_a7_mcycles"], 4)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilefacenet,retinaface,sface")
    parser.add_argument("--target", default="cortex-a7")
    parser.add_argument("--calib-mode", default="minmax")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-qemu", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--per-kernel", action="store_true", help="ARM instructions of the int8 build by kernel kind")
    args = parser.parse_args(argv)
    rows = [bench(m, args.target, args.calib_mode, args.rounds, not args.no_qemu, args.per_kernel)
            for m in args.models.split(",")]
    result = {"target": args.target, "calibration_mode": args.calib_mode, "rows": rows, "note": NCNN_NOTE,
              "goal": "arm_a7_cycles_ratio <= 0.7; mobilefacenet int8 <= 55 M instructions, <= 110 M a7 cycles (issue 21)"}
    print(json.dumps(result, indent=2))
    print()
    header = f"{'model':<14}{'weights fp32':>14}{'int8':>12}{'ratio':>8}{'host fp32 ms':>14}{'int8 ms':>10}{'ratio':>8}"
    header += (f"{'ARM fp32 Minsn':>16}{'int8 Minsn':>12}{'ratio':>8}{'a7 fp32 Mcyc':>14}{'int8 Mcyc':>11}{'ratio':>8}"
               if not args.no_qemu else "")
    print(header)
    for r in rows:
        line = (f"{r['model']:<14}{r['weights_fp32_bytes']:>14,}{r['weights_int8_bytes']:>12,}{r['weights_ratio']:>8.3f}"
                f"{r['host_fp32_ms']:>14.2f}{r['host_int8_ms']:>10.2f}{r['host_ratio']:>8.3f}")
        if "arm_insn_ratio" in r:
            line += (f"{r['arm_fp32_minsn']:>16.1f}{r['arm_int8_minsn']:>12.1f}{r['arm_insn_ratio']:>8.3f}"
                     f"{r['arm_fp32_a7_mcycles']:>14.1f}{r['arm_int8_a7_mcycles']:>11.1f}{r['arm_a7_cycles_ratio']:>8.3f}")
        print(line)
    print()
    for r in rows:
        print(f"{r['model']}: int8 vs fp32 accuracy: "
              + ", ".join(f"{k} {v}" for k, v in r["accuracy"].items()))
    for r in rows:
        if "arm_int8_minsn_by_kernel" in r:
            parts = ", ".join(f"{k} {v['minsn']:.1f} ({v['a7_mcycles']:.1f})"
                              for k, v in r["arm_int8_minsn_by_kernel"].items())
            print(f"{r['model']}: int8 ARM Minsn (a7 Mcycles) by kernel: {parts}")
    print()
    print("Note:", NCNN_NOTE)
    if args.json:
        from edgetvm.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

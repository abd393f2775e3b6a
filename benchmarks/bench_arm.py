"""ARMv7 cost of every model of issue 21, whole and kernel by kernel, against the published peers.

    .venv/bin/python benchmarks/bench_arm.py [--models mobilefacenet,mobilenet_v2,...] [--target cortex-a7]
        [--per-kernel] [--int8 [--reduce-range]] [--no-winograd] [--threads 1|N|default] [--json out.json]

Per model, for the standalone build (1 thread unless ``--threads``, N+1 minus 1): guest instructions and the issue-cycle
estimates of ``../shared/tools/neon_cycles.c`` (Cortex-A9 table and its A7 variant; see its
``neon_cycles.md``: throughput only, no memory system), and the ratio to the peer figures the
issue gives (ncnn's hand-written ARMv7 fp32 for MobileFaceNet and MobileNetV2, TFLite 2.13's armv7
wheel with its builtin kernels for the MediaPipe models), next to the issue's goals.

``--per-kernel``: every distinct kernel of the build is exported alone (same shapes and constants,
random inputs), counted the same way and multiplied by its calls, then summed by kind (``conv1x1``,
``conv3x3 stem``, ``dwconv3x3 s2``, ... from the weight and tensor shapes; the int8 kernels by their
recipe, ``int8 conv1x1``, ``int8 dwconv3x3 s1``, ...). Each kind gets its multiply-accumulates and instructions (and a7 cycles) per MAC, which is
what a hand-scheduled kernel must lower: the floor for fp32 is 0.25 instructions per MAC (one
4-lane ``vmla.f32`` per 4 MACs). ``--int8`` adds the int8 build where the model is a float ONNX
model (calibrated on real faces, as ``bench_quantization.py`` does).

Inputs: MobileFaceNet and MobileNetV2 (built from their papers' tables, ``edgetvm.zoo.architectures``)
take seeded uniform [-1, 1] inputs; the TFLite models inputs filled with 0.5, as the TFLite figures
were measured. The TFLite models are read out of the mediapipe wheel ``edgetvm.zoo.fetch`` caches.

RetinaFace 320 and SFace (``FACE_ONNX_MODELS``, from ``edgetvm.zoo.fetch``) have no published ARMv7
peer: their rows are edgetvm's fp32 and, with ``--int8``, its int8 build calibrated on real faces as
``bench_quantization.py`` calibrates them (letterboxed scenes for RetinaFace, face crops for SFace),
each run on its first calibration input; the int8 row gives its a7 cycles over the fp32 row's
(``int8_a7_ratio``, the issue's goal: <= 0.7). SFace's fp32 build is its block-quantized weights
dequantized.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "quantization"))

# Peers measured with the same counters (issue 21): (instructions, a9 cycles, a7 cycles); None = not published.
NCNN = {"mobilefacenet": (82.0e6, 164.8e6, 183.6e6), "mobilenet_v2": (114.7e6, 231.0e6, 261.6e6)}
TFLITE = {"blazeface_short": (44_610_122, None, None), "blazeface_full": (153_003_077, None, None),
          "facemesh": (60_138_474, None, 88.3e6), "iris": (54_191_199, None, None),
          "hand_landmark_lite": (170_718_749, None, None), "palm_detection_lite": (344_190_997, None, None)}
# The goals, as (instructions, a7 cycles) limits; the TFLite ones are ratios to the peer.
GOALS = {"mobilefacenet": (82e6, 165e6), "mobilenet_v2": (103e6, 235e6)}
TFLITE_GOAL_RATIOS = (0.35, 0.4)

MEDIAPIPE_WHEEL_MEMBERS = {
    "blazeface_short": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "blazeface_full": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "facemesh": "mediapipe/modules/face_landmark/face_landmark.tflite",
    "iris": "mediapipe/modules/iris_landmark/iris_landmark.tflite",
    "hand_landmark_lite": "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
    "palm_detection_lite": "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
}
# Face ONNX models of the int8 goal (int8 <= 0.7x edgetvm's own fp32 in a7 cycles), measured
# against themselves: no peer figure is published. SFace's fp32 build is its dequantized weights.
FACE_ONNX_MODELS = {"retinaface": {"input": (1, 3, 320, 320)}, "sface": None}
INT8_GOAL_A7_RATIO = 0.7
MODELS = ["mobilefacenet", "mobilenet_v2", *MEDIAPIPE_WHEEL_MEMBERS, *FACE_ONNX_MODELS]


def _tflite_model(name: str) -> Path:
    """The ``.tflite`` file of ``name``, extracted once from the cached mediapipe wheel."""
    from edgetvm.io import atomic_write_bytes
    from edgetvm.zoo import fetch
    from edgetvm.zoo.fetch import ASSETS, cache_dir

    out = cache_dir() / f"{name}.tflite"
    if not out.exists():
        fetch("blazeface")  # downloads (and keeps) the mediapipe wheel the other models sit in
        asset = ASSETS["blazeface"]
        wheels = sorted((cache_dir() / "wheels").glob(f"{asset.package}-{asset.version}-*.whl"))
        if not wheels:
            raise SystemExit(f"no {asset.package}=={asset.version} wheel under {cache_dir() / 'wheels'}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            atomic_write_bytes(out, wheel.read(MEDIAPIPE_WHEEL_MEMBERS[name]))
    return out


def face_onnx_model(name: str):
    """(model, fill, input shapes, calibration) of RetinaFace 320 or SFace, as ``bench_quantization.py``
    takes them: calibrated on real faces (letterboxed scenes for the detector), run on the first of them."""
    from faces import calibration_scenes, embedding_calibration_faces, to_nchw

    from edgetvm.face.detect import letterbox
    from edgetvm.zoo import fetch

    if name == "retinaface":
        calibration = [letterbox(im, 320, 320, (104.0, 117.0, 123.0))[0] for im in calibration_scenes(6, seed=1)]
    else:
        calibration = to_nchw(embedding_calibration_faces())
    return fetch(name), lambda spec: calibration[0].astype(spec.dtype), FACE_ONNX_MODELS[name], calibration


def load(name: str):
    """(model, fill) of a benchmark model: fill(spec) is its input array."""
    if name in ("mobilefacenet", "mobilenet_v2"):
        from edgetvm.zoo import architectures

        rng = np.random.default_rng(0)
        return getattr(architectures, name)(), lambda spec: rng.uniform(-1, 1, spec.shape).astype(spec.dtype)
    if name in MEDIAPIPE_WHEEL_MEMBERS:
        return _tflite_model(name), lambda spec: np.full(spec.shape, 0.5, spec.dtype)
    raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


@dataclass
class KernelCall:
    gvar: object
    binding: object
    kind: str
    macs: int


def _shape(expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def kernel_kind(name: str, rule: str, args, out_shape: list[int]) -> tuple[str, int]:
    """(kind, multiply-accumulates) of one fp32 kernel call, from its schedule rule and shapes.

    The conv kernels take an NHWC input and an HWIO weight constant (depthwise: HWIO with I = 1 or
    HWI1 with O = 1); the stride is the ratio of input to output rows (padding sits in the kernel).
    """
    import tvm

    tensors = [a for a in args if not isinstance(a, tvm.ir.Constant)]
    weights = [a for a in args if isinstance(a, tvm.ir.Constant) and len(_shape(a)) == 4]
    match = re.search(r"(\d+) MAC", rule)
    macs = int(match.group(1)) if match else 0
    base = rule.split(" ")[0].split(":")[-1]
    if base in ("conv2d", "depthwise") and weights and tensors and len(out_shape) == 4:
        kh, kw, wi, wo = _shape(weights[0])
        stride = max(1, round(_shape(tensors[0])[1] / out_shape[1]))
        if base == "depthwise":
            return (f"dwconv{kh}x{kw} global" if out_shape[1] == 1 else f"dwconv{kh}x{kw} s{stride}"), macs
        if kh == kw == 1:
            return ("conv1x1" if stride == 1 else f"conv1x1 s{stride}"), macs
        if wi <= 4:
            # The zero input channel PadStemChannels adds on ARM is not the model's work: count the
            # stem's real multiply-accumulates, so its instructions per MAC compare across targets.
            value = weights[0].value.numpy()
            real = sum(bool(np.any(value[:, :, i, :])) for i in range(wi))
            return f"conv{kh}x{kw} stem", macs * real // wi
        return f"conv{kh}x{kw} s{stride}", macs
    if base == "batch":  # Winograd's GEMM over the transform points (transform.WinogradConv)
        return "winograd gemm", macs
    piece = re.match(r"winograd_(input|output)_f(\d)", name)
    if piece:
        return f"winograd {piece.group(1)} F({piece.group(2)},3)", macs
    if base in ("conv2d", "depthwise", "pool", "dense"):
        return base, macs
    # Elementwise and layout kernels: by name without TVM's numbering.
    return re.sub(r"\d+", "", name).strip("_"), macs


def int8_kernel_kind(recipe: dict, out_shape: list[int]) -> tuple[str, int]:
    """(kind, multiply-accumulates) of one int8 channels-last kernel (``kernels.int8_nhwc``) from its
    recipe and its NHWC output shape: the depthwise ones by window and stride, as the fp32 kinds."""
    kind, params = recipe["kind"], recipe["params"]
    outputs = int(np.prod(out_shape))
    if kind == "conv1x1":
        return "int8 conv1x1", outputs * int(params["x_shape"][3])
    if kind == "im2col":
        channels = params["x_shape"][1 if params["x_layout"] == "NCHW" else 3]
        kh, kw = params["kernel_size"]
        return f"int8 conv{kh}x{kw} im2col", outputs * kh * kw * int(channels)
    if kind == "depthwise":
        kh, kw = params["kernel_size"]
        return f"int8 dwconv{kh}x{kw} s{params['strides'][0]}", outputs * kh * kw
    return f"int8 {kind}", 0


def kernel_calls(compiled) -> list[KernelCall]:
    """The call_tir bindings of ``main`` with their kind: int8 kernels by recipe, fp32 by shape."""
    import tvm
    from tvm import relax

    from edgetvm.kernels.int8_nhwc import KERNEL_ATTR

    rules = compiled.report.details.get("schedules", {}).get("kernels", {})
    calls = []
    for block in compiled.scheduled["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
                    and value.op.name == "relax.call_tir"):
                continue
            gvar = value.args[0]
            func = compiled.scheduled[gvar]
            recipe = func.attrs.get(KERNEL_ATTR) if func.attrs is not None else None
            args = list(value.args[1].fields)
            if recipe is not None:
                kind, macs = int8_kernel_kind(json.loads(str(recipe)), _shape(binding.var))
            else:
                kind, macs = kernel_kind(gvar.name_hint, rules.get(gvar.name_hint, ""), args, _shape(binding.var))
            if kind == "winograd gemm":
                depth = _shape(args[0])[-1]
            elif kind.startswith("winograd output"):
                # The 3x3 conv the pieces replace: its multiply-accumulates go with its output transform.
                macs = int(np.prod(_shape(binding.var))) * 9 * depth
            calls.append(KernelCall(gvar, binding, kind, macs))
    return calls


def _kernel_alone(compiled, call: KernelCall, path: Path):
    """A standalone library running one kernel call of ``compiled`` (its constants bound), and its inputs."""
    import tvm
    from tvm import relax

    from edgetvm.backends.standalone import export_standalone
    from edgetvm.specs import ImportedModel, TensorSpec

    bb = relax.BlockBuilder()
    params, args = [], []
    for i, arg in enumerate(call.binding.value.args[1].fields):
        if isinstance(arg, tvm.ir.Constant):
            args.append(arg)
        else:
            var = relax.Var(f"in{i}", relax.TensorType(_shape(arg), str(arg.ty.dtype)))
            params.append(var)
            args.append(var)
    out_ty = call.binding.var.ty
    with bb.function("main", params):
        with bb.dataflow():
            kernel = bb.add_func(compiled.scheduled[call.gvar], call.gvar.name_hint)
            out = bb.emit_output(bb.emit(relax.call_tir(kernel, relax.Tuple(args),
                                                        relax.TensorType(_shape(call.binding.var), str(out_ty.dtype)))))
        bb.emit_func_output(out)
    mod = bb.get()
    inputs = [TensorSpec(v.name, tuple(_shape(v)), str(v.ty.dtype)) for v in params]
    imported = ImportedModel(mod, inputs, [TensorSpec("y", tuple(_shape(call.binding.var)), str(out_ty.dtype))],
                             "<kernel>", "onnx")
    so = export_standalone(mod, imported, compiled.target, path, num_threads=1)[0]
    rng = np.random.default_rng(0)
    arrays = [(rng.integers(-100, 100, t.shape) if "int" in t.dtype else rng.uniform(-1, 1, t.shape)).astype(t.dtype)
              for t in inputs]
    return so, arrays


# Rows of the by-kind table that sum others (left out of the kernels' total).
SUMMARY_KINDS = ("conv3x3 s1 winograd (all pieces)",)


def per_kernel(compiled, workdir: Path) -> dict[str, dict]:
    """Instructions and estimated cycles by kernel kind: each distinct kernel alone, times its calls."""
    from edgetvm import emulate

    measured: dict = {}
    kinds: dict[str, dict] = {}
    for call in kernel_calls(compiled):
        if call.gvar not in measured:
            so, arrays = _kernel_alone(compiled, call, workdir / f"{call.gvar.name_hint}.so")
            measured[call.gvar] = emulate.cycles_per_inference(so, arrays, cpu=compiled.target.qemu_cpu)
        cost = measured[call.gvar]
        row = kinds.setdefault(call.kind, {"calls": 0, "mmac": 0.0, "minsn": 0.0, "mcycles_a9": 0.0,
                                           "mcycles_a7": 0.0})
        row["calls"] += 1
        row["mmac"] += call.macs / 1e6
        row["minsn"] += cost.instructions / 1e6
        row["mcycles_a9"] += cost.cycles_a9 / 1e6
        row["mcycles_a7"] += cost.cycles_a7 / 1e6
    winograd_kinds = [k for k in kinds if k.startswith("winograd")]
    if winograd_kinds:
        # All pieces of the Winograd convs against the multiply-accumulates of the convs they replace.
        conv_macs = sum(kinds[k]["mmac"] for k in winograd_kinds if k.startswith("winograd output"))
        total = {"calls": sum(kinds[k]["calls"] for k in winograd_kinds if k.startswith("winograd output")),
                 "mmac": conv_macs}
        for key in ("minsn", "mcycles_a9", "mcycles_a7"):
            total[key] = sum(kinds[k][key] for k in winograd_kinds)
        kinds[SUMMARY_KINDS[0]] = total
        for k in winograd_kinds:
            kinds[k]["insn_per_conv_mac"] = round(kinds[k]["minsn"] / conv_macs, 3) if conv_macs else None
    for row in kinds.values():
        row["insn_per_mac"] = round(row["minsn"] / row["mmac"], 3) if row["mmac"] else None
        row["a7_per_mac"] = round(row["mcycles_a7"] / row["mmac"], 3) if row["mmac"] else None
        for key in ("mmac", "minsn", "mcycles_a9", "mcycles_a7"):
            row[key] = round(row[key], 2)
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["mcycles_a7"]))


def _peer(name: str) -> tuple[str, tuple] | None:
    if name in NCNN:
        return "ncnn fp32", NCNN[name]
    if name in TFLITE:
        return "tflite armv7", TFLITE[name]
    return None


def measure(name: str, target: str, quantize: str | None, with_kernels: bool, workdir: Path,
            winograd: bool = True, threads: int | None = 1, reduce_range: bool = False) -> dict:
    import edgetvm
    from edgetvm import emulate

    if name in FACE_ONNX_MODELS:
        model, fill, shapes, calibration = face_onnx_model(name)
        kwargs = {"input_shapes": shapes, **({"quantize": quantize, "calibration": calibration} if quantize else {})}
    else:
        model, fill = load(name)
        kwargs = {}
    kwargs["winograd"] = winograd
    if quantize and name not in FACE_ONNX_MODELS:
        from faces import grace_hopper_crops, lfw_crops, to_nchw

        faces = to_nchw(grace_hopper_crops(4, seed=1) + lfw_crops(range(40, 44)))
        # The 112x112 crops repeated pixel by pixel up to a larger input (MobileNetV2's 224).
        side = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
        faces = [np.repeat(np.repeat(f, side // f.shape[2], axis=2), side // f.shape[3], axis=3) for f in faces]
        kwargs.update(quantize=quantize, calibration=[(f - 127.5) / 128.0 for f in faces])
    if quantize and reduce_range:
        kwargs["quantize_options"] = {"reduce_range": True}
    started = time.perf_counter()
    compiled = edgetvm.compile(model, target, num_threads=threads, **kwargs)
    compile_s = time.perf_counter() - started
    so = compiled.export(workdir / f"{name}_{quantize or 'fp32'}.so", standalone=True)
    arrays = [fill(spec) for spec in compiled.inputs]
    cost = emulate.cycles_per_inference(so, arrays, cpu=compiled.target.qemu_cpu)
    row = {"model": name, "precision": quantize or "fp32", "winograd": winograd, "compile_s": round(compile_s, 1),
           **({"weights": "7-bit (reduce_range)"} if quantize and reduce_range else {}),
           "minsn": round(cost.instructions / 1e6, 2), "mcycles_a9": round(cost.cycles_a9 / 1e6, 2),
           "mcycles_a7": round(cost.cycles_a7 / 1e6, 2)}
    peer = _peer(name)
    if peer is not None:
        label, (insn, a9, a7) = peer
        row["peer"] = label
        row["insn_ratio"] = round(cost.instructions / insn, 3)
        if a9:
            row["a9_ratio"] = round(cost.cycles_a9 / a9, 3)
        if a7:
            row["a7_ratio"] = round(cost.cycles_a7 / a7, 3)
    if not quantize and name in GOALS:
        insn_goal, a7_goal = GOALS[name]
        row["goal"] = f"<= {insn_goal / 1e6:.0f} M instructions, <= {a7_goal / 1e6:.0f} M a7 cycles"
        row["goal_met"] = cost.instructions <= insn_goal and cost.cycles_a7 <= a7_goal
    elif not quantize and name in TFLITE:
        row["goal"] = f"<= {TFLITE_GOAL_RATIOS[0]}x TFLite instructions, <= {TFLITE_GOAL_RATIOS[1]}x its a7 cycles"
        a7_peer = TFLITE[name][2]
        row["goal_met"] = (cost.instructions <= TFLITE_GOAL_RATIOS[0] * TFLITE[name][0]
                           and (a7_peer is None or cost.cycles_a7 <= TFLITE_GOAL_RATIOS[1] * a7_peer))
    if with_kernels:
        kinds = per_kernel(compiled, workdir)
        row["by_kernel"] = kinds
        row["kernels_minsn"] = round(sum(k["minsn"] for kind, k in kinds.items() if kind not in SUMMARY_KINDS), 2)
    return row


def int8_against_fp32(rows: list[dict]) -> None:
    """Each int8 row gets its a7 cycles over the same model's fp32 row (``int8_a7_ratio``), and the
    issue's goal for it (<= 0.7x)."""
    fp32 = {r["model"]: r for r in rows if r.get("precision") == "fp32" and "error" not in r}
    for r in rows:
        if r.get("precision") == "int8" and "error" not in r and r["model"] in fp32:
            r["int8_a7_ratio"] = round(r["mcycles_a7"] / fp32[r["model"]]["mcycles_a7"], 3)
            r["goal"] = f"int8 <= {INT8_GOAL_A7_RATIO}x own fp32 a7 cycles"
            r["goal_met"] = r["int8_a7_ratio"] <= INT8_GOAL_A7_RATIO


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--target", default="cortex-a7")
    parser.add_argument("--per-kernel", action="store_true", help="instructions and cycles by kernel kind")
    parser.add_argument("--int8", action="store_true", help="also the int8 build of the float ONNX models")
    parser.add_argument("--reduce-range", action="store_true",
                        help="the int8 builds with 7-bit conv weights (quantize_options reduce_range: faster, less "
                             "accurate; edgetvm's default is full range)")
    parser.add_argument("--no-winograd", action="store_true", help="dense 3x3 convs direct, not Winograd")
    parser.add_argument("--threads", default="1", type=lambda v: None if v == "default" else int(v),
                        help="the build's threads: 1 (the issue's figures), N, or 'default' (parallel kernels, "
                             "what `edgetvm compile` builds); instructions are counted over all threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from edgetvm.errors import EdgeTVMError

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetvm-bench-arm-") as tmp:
        for name in args.models.split(","):
            for precision in [None, "int8"] if args.int8 and (name in NCNN or name in FACE_ONNX_MODELS) else [None]:
                try:
                    rows.append(measure(name, args.target, precision, args.per_kernel, Path(tmp),
                                        winograd=not args.no_winograd, threads=args.threads,
                                        reduce_range=args.reduce_range))
                except EdgeTVMError as exc:  # one model edgetvm cannot take does not stop the table
                    rows.append({"model": name, "precision": precision or "fp32", "error": str(exc)})
    int8_against_fp32(rows)
    result = {"target": args.target, "threads": args.threads or "default", "backend": "standalone", "rows": rows}
    print(json.dumps(result, indent=2))
    print()
    print(f"{'model':<22}{'prec':<6}{'Minsn':>9}{'a9 Mcyc':>10}{'a7 Mcyc':>10}{'peer':>15}"
          f"{'insn x':>8}{'a7 x':>7}  goal met")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<22}{r['precision']:<6}  not compiled: {r['error'][:200]}")
            continue
        print(f"{r['model']:<22}{r['precision']:<6}{r['minsn']:>9.1f}{r['mcycles_a9']:>10.1f}{r['mcycles_a7']:>10.1f}"
              f"{r.get('peer', ''):>15}{r.get('insn_ratio', float('nan')):>8.3f}{r.get('a7_ratio', float('nan')):>7.3f}"
              f"  {r.get('goal_met', '')}" + (f" (int8 {r['int8_a7_ratio']:.3f}x own fp32 a7)" if "int8_a7_ratio" in r else "")
              + (f" [{r['weights']} weights]" if "weights" in r else ""))
    for r in rows:
        if "by_kernel" not in r:
            continue
        print(f"\n{r['model']} {r['precision']}: by kernel kind (kernels alone sum to {r['kernels_minsn']} of "
              f"{r['minsn']} M instructions)")
        print(f"  {'kind':<24}{'calls':>6}{'MMAC':>9}{'Minsn':>9}{'a9 Mcyc':>10}{'a7 Mcyc':>10}{'insn/MAC':>10}{'a7/MAC':>8}")
        for kind, k in r["by_kernel"].items():
            per_mac = f"{k['insn_per_mac']:>10.3f}{k['a7_per_mac']:>8.3f}" if k["insn_per_mac"] else ""
            print(f"  {kind:<24}{k['calls']:>6}{k['mmac']:>9.2f}{k['minsn']:>9.2f}{k['mcycles_a9']:>10.2f}"
                  f"{k['mcycles_a7']:>10.2f}{per_mac}")
    if args.json:
        from edgetvm.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

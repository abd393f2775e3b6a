"""The int8 recipe: calibrate the float graph, insert QDQ, fold the scales into integer kernels.

    float Relax -> FoldConstant -> MinMaxToClip -> CrossLayerEqualization (per-channel ranges, calibrated)
    -> plan chains -> calibrate (host VM) -> QuantizeAnnotate (QDQ)
    -> FoldQuantScales (int8 kernels) -> float ops left over are listed in the report

Cross-layer equalization (on by default, ``equalize=False`` turns it off) is exact in float and
is what brings SFace's int8 embeddings to cosine >= 0.99 on every evaluated face crop (per-tensor
activation scales otherwise starve the narrow channels: min cosine 0.979 without it).
``keep_float`` names chains (by a model node of theirs, e.g. the ONNX Conv node, as the report's
``chains_quantized`` lists them; onnxruntime's ``nodes_to_exclude`` takes the same names) to leave in float: mixed precision for layers the accuracy cannot afford in int8. By default
the first conv (reading the image) stays float: the most sensitive layer, and the smallest.

A model that is already quantized (QDQ ONNX, see ``edgetvm.frontends.onnx_qdq``) skips the first
four steps: ``FoldQuantScales`` runs on its QDQ graph directly.
"""

from __future__ import annotations

import warnings

from collections import Counter

import numpy as np
import tvm
from tvm import relax

from ..errors import InputError
from ..relax_utils import is_tensor_constant, op_name
from ..transform import MinMaxToClip
from .calibrate import calibration_arrays, collect_ranges
from .cross_layer_equalization import CrossLayerEqualization, plan_equalization
from .fold_quant_scales import FoldQuantScales
from .annotate import AUTO_NAME, QuantizeAnnotate, plan_quantization

SCHEMES = ("int8",)


def constant_bytes(mod: tvm.IRModule) -> dict[str, int]:
    """Bytes of the bound constants of ``mod``'s Relax functions, by dtype (the artifact's weights)."""
    sizes: Counter = Counter()
    seen: list = []

    def visit(expr):
        if is_tensor_constant(expr) and not any(expr.same_as(other) for other in seen):
            seen.append(expr)
            arr = expr.value
            sizes[str(arr.dtype)] += int(np.prod(arr.shape)) * tvm.runtime.DataType(str(arr.dtype)).bits // 8

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return dict(sizes)


def float_ops(mod: tvm.IRModule) -> dict[str, int]:
    """Relax ops of ``main`` that still compute in float (quantize/dequantize themselves excluded)."""
    ops: Counter = Counter()
    func = mod["main"]
    for block in func.body.blocks:
        for binding in block.bindings:
            name = op_name(binding.value)
            if name is None or name in ("relax.quantize", "relax.dequantize", "relax.call_tir"):  # call_tir: int8 kernels
                continue
            ty = binding.var.ty
            if isinstance(ty, relax.TensorType) and str(ty.dtype).startswith("float"):
                ops[name.removeprefix("relax.")] += 1
    return dict(ops)


def fold_qdq(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict]:
    """Fold an already-QDQ graph into integer kernels; returns the module and a report."""
    folder = FoldQuantScales()
    before = constant_bytes(mod)
    mod = folder(mod)
    return mod, {
        "int8_kernels": folder.report.kernels,
        "declined": folder.report.declined[:50],
        "float_ops": float_ops(mod),
        "weight_bytes_before": sum(before.values()),
        "weight_bytes_after": sum(constant_bytes(mod).values()),
    }


def has_qdq(mod: tvm.IRModule) -> bool:
    """Whether ``main`` already computes on quantized activations (a QDQ model): then no
    calibration is needed, the model's own parameters are used."""
    found = []

    def visit(expr):
        # A quantize, or a dequantize of an integer activation (ConvInteger's inputs).
        name = op_name(expr)
        if name == "relax.quantize" or (name == "relax.dequantize" and not isinstance(expr.args[0], tvm.ir.Constant)):
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return bool(found)


OPTIONS = ("equalize", "keep_float", "percentile", "reduce_range")


def quantize_model(mod: tvm.IRModule, inputs, scheme: str = "int8", calibration=None, mode: str = "minmax", *,
                   evaluate, **options) -> tuple[tvm.IRModule, dict]:
    """``edgetvm.compile(quantize=...)``: fold a QDQ model as it is, or calibrate a float one.

    ``evaluate(mod, samples)`` runs a float module on the calibration samples (``edgetvm.host.run_on_host``,
    see :func:`~.calibrate.collect_ranges`). ``options`` (``compile(quantize_options=...)``):
    ``equalize``, ``keep_float``, ``percentile``, ``reduce_range``, see :func:`quantize_int8`.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"quantize_options {', '.join(unknown)}: the options are {', '.join(OPTIONS)}")
    if scheme not in SCHEMES:
        raise InputError(f"quantize={scheme!r}: the supported schemes are {', '.join(SCHEMES)}")
    if has_qdq(mod):
        mod, report = fold_qdq(mod)
        report["calibration_mode"] = "none: the model carries its own quantization parameters (QDQ)"
        return mod, report
    return quantize_int8(mod, inputs, calibration, mode, evaluate=evaluate, **options)


def equalize_channels(mod: tvm.IRModule, samples: list[list[np.ndarray]], *, evaluate) -> tuple[tvm.IRModule, dict]:
    """Cross-layer equalization of ``mod`` from per-channel ranges calibrated on ``samples``."""
    plan = plan_equalization(mod["main"])
    if not plan.pairs:
        return mod, {"pairs": 0, "declined": plan.declined[:50]}
    channel_ranges: dict = {}
    collect_ranges(mod, plan.tensors(), samples, "minmax", channel_ranges=channel_ranges, evaluate=evaluate)
    rescale = CrossLayerEqualization(plan, channel_ranges)
    mod = rescale(mod)
    rows = rescale.findings["equalized"]
    return mod, {
        "pairs": len(rows),
        "depthwise_pairs": sum(row["depthwise"] for row in rows),
        # The narrowest channel's range as a fraction of the widest, averaged over the tensors.
        "narrowest_channel_before": round(float(np.mean([r["narrowest_channel_before"] for r in rows])), 4),
        "narrowest_channel_after": round(float(np.mean([r["narrowest_channel_after"] for r in rows])), 4),
        "declined": plan.declined[:50],
    }


PIXEL_CHANNELS = 4


def _reads_pixels(chain, func: relax.Function) -> bool:
    """A conv2d reading a model input of at most PIXEL_CHANNELS channels (RGB/grey images).

    Measured on SFace (numpy QDQ simulation, 24 evaluation crops): int8 everywhere but this conv
    lifts the worst embedding cosine from 0.988 to 0.991; it holds 0.01 % of the weights."""
    if chain.kind != "conv2d" or int(chain.inputs[0].ty.shape[1]) > PIXEL_CHANNELS:
        return False
    bindings = {b.var: b.value for block in func.body.blocks for b in block.bindings}
    var = chain.inputs[0]
    # Through in-graph normalisation ((x - mean) * scale, as SFace's) back to the parameter.
    while var in bindings:
        value = bindings[var]
        if op_name(value) not in ("relax.subtract", "relax.add", "relax.multiply", "relax.divide"):
            return False
        variables = [a for a in value.args if not isinstance(a, tvm.ir.Constant)]
        if len(variables) != 1:
            return False
        var = variables[0]
    return any(var.same_as(p) for p in func.params)


def _chain_names(chain) -> set[str]:
    """Every name ``keep_float`` may give a chain by: its model nodes', and for an add its operands'.
    The block builder's own names (``lv7``) are not among them: they change with any edit to the graph."""
    names = {chain.name, *chain.names}
    names.update(str(v.name) for v in chain.inputs if chain.kind == "add")
    return {n for n in names if n == chain.name or not AUTO_NAME.fullmatch(n)}


class LayoutKeptFloatWarning(UserWarning):
    """int8 was asked for, but convolutions in a layout without int8 kernels stayed float."""


def warn_if_layout_kept_float(skipped: list[str]) -> None:
    """Say so when convs stayed float for their layout alone: a TFLite model's NHWC convs have no int8
    path yet (the int8 planner and kernels read NCHW/OIHW graphs, as ONNX gives them), and the user
    asked for int8, so the report alone would hide that the artifact is mostly float."""
    by_layout = [row for row in skipped if ": conv2d layout " in row]
    if by_layout:
        layout = by_layout[0].split(": conv2d layout ", 1)[1].split()[0]
        warnings.warn(f"--quantize int8: {len(by_layout)} conv2d op(s) in layout {layout} stay float: the int8 "
                      f"kernels take NCHW/OIHW convolutions (ONNX models); TFLite's NHWC convolutions have no "
                      f"int8 path yet. --explain lists them.", LayoutKeptFloatWarning, stacklevel=2)


def quantize_int8(mod: tvm.IRModule, inputs, calibration, mode: str = "minmax",
                  percentile: float = 99.99, *, evaluate, equalize: bool = True,
                  keep_float: list[str] | tuple[str, ...] | None = None,
                  reduce_range: bool = False) -> tuple[tvm.IRModule, dict]:
    """Calibrate ``mod`` (float) on ``calibration`` and return its int8 version plus a report.

    ``inputs``: the model's input TensorSpecs (to read calibration images/arrays against).
    ``evaluate``: runs the float module on the samples (see :func:`~.calibrate.collect_ranges`).
    ``equalize``: cross-layer equalization first (exact in float; see cross_layer_equalization.py).
    ``keep_float``: names of chains (a model node of the chain, as ``report["chains_quantized"]`` lists
    them) left in float; None (the default) keeps the conv reading the image input float, ``[]``
    quantizes every chain. The report lists what stayed float under ``kept_float`` with the reason.
    ``reduce_range``: conv weights in [-63, 63] (faster ARMv7 kernels, less accurate: see
    ``annotate``); by default [-127, 127].
    """
    samples = calibration_arrays(calibration, inputs)
    weights_fp32 = sum(constant_bytes(mod).values())
    # ReLU6 as one clip the planner folds into its conv (ONNX Clip arrives as two max/min kernels).
    mod = MinMaxToClip()(relax.transform.FoldConstant()(mod))
    equalization = {"pairs": 0, "declined": ["equalize=False"]}
    if equalize:
        mod, equalization = equalize_channels(mod, samples, evaluate=evaluate)
    plan = plan_quantization(mod["main"])
    if keep_float is None:
        kept = [chain for chain in plan.chains if _reads_pixels(chain, mod["main"])]
        why = (f"reads the model input with <= {PIXEL_CHANNELS} channels (pixels): the most sensitive "
               f"layer of the face models and the smallest (--keep-float none / keep_float=[] quantizes it)")
    else:
        wanted = {str(name) for name in keep_float}
        known = set().union(*(_chain_names(chain) for chain in plan.chains)) if plan.chains else set()
        unknown = sorted(wanted - known)
        if unknown:
            raise InputError(f"keep_float (--keep-float) names {', '.join(unknown)}, which no quantizable chain "
                             f"holds; the chains are: {', '.join(sorted(chain.name for chain in plan.chains)[:40])}")
        kept = [chain for chain in plan.chains if _chain_names(chain) & wanted]
        why = "named in keep_float (--keep-float)"
    plan.chains = [chain for chain in plan.chains if chain not in kept]
    kept_float = [f"{chain.name}: {chain.kind} kept float, {why}" for chain in kept]
    means: dict = {}
    ranges = collect_ranges(mod, plan.tensors_to_calibrate(), samples, mode, percentile, channel_means=means,
                            evaluate=evaluate)
    mod = QuantizeAnnotate(plan, ranges, means, reduce_range)(mod)
    mod, report = fold_qdq(mod)
    warn_if_layout_kept_float(plan.skipped)
    report.update({
        "scheme": "int8: activations per-tensor asymmetric int8, weights per-channel symmetric int8 "
                  f"({'conv weights in [-63, 63]' if reduce_range else '[-127, 127]'}), int32 bias",
        "calibration_mode": mode,
        "calibration_samples": len(samples),
        "chains": len(plan.chains),
        "chains_quantized": [chain.name for chain in plan.chains][:200],
        "kept_float": kept_float,
        "cross_layer_equalization": equalization,
        "skipped": plan.skipped,
        "weight_bytes_before": weights_fp32,
    })
    return mod, report

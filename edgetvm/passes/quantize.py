"""The int8 recipe: calibrate the float graph, insert QDQ, fold the scales into integer kernels.

    float Relax -> FoldConstant -> plan chains -> calibrate (host VM) -> QuantizeAnnotate (QDQ)
    -> FoldQuantScales (int8 kernels) -> float ops left over are listed in the report

A model that is already quantized (QDQ ONNX, see ``edgetvm.frontends.onnx_qdq``) skips the first
four steps: ``FoldQuantScales`` runs on its QDQ graph directly.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import tvm
from tvm import relax

from .calibrate import calibration_arrays, collect_ranges
from .fold_quant_scales import FoldQuantScales
from .quantize_annotate import plan_quantization, quantize_annotate

SCHEMES = ("int8",)


def constant_bytes(mod: tvm.IRModule) -> dict[str, int]:
    """Bytes of the bound constants of ``mod``'s Relax functions, by dtype (the artifact's weights)."""
    sizes: Counter = Counter()
    seen: list = []

    def visit(expr):
        if isinstance(expr, tvm.ir.Constant) and isinstance(expr.value, tvm.runtime.Tensor) \
                and not any(expr.same_as(other) for other in seen):
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
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                name = value.op.name
                if name in ("relax.quantize", "relax.dequantize", "relax.call_tir"):  # call_tir: int8 kernels
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
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            # A quantize, or a dequantize of an integer activation (ConvInteger's inputs).
            if expr.op.name == "relax.quantize" or (
                    expr.op.name == "relax.dequantize" and not isinstance(expr.args[0], tvm.ir.Constant)):
                found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return bool(found)


def quantize_model(mod: tvm.IRModule, inputs, scheme: str = "int8", calibration=None, mode: str = "minmax",
                   percentile: float = 99.99) -> tuple[tvm.IRModule, dict]:
    """``edgetvm.compile(quantize=...)``: fold a QDQ model as it is, or calibrate a float one."""
    from ..errors import InputError

    if scheme not in SCHEMES:
        raise InputError(f"quantize={scheme!r}: the supported schemes are {', '.join(SCHEMES)}")
    if has_qdq(mod):
        mod, report = fold_qdq(mod)
        report["calibration_mode"] = "none: the model carries its own quantization parameters (QDQ)"
        return mod, report
    return quantize_int8(mod, inputs, calibration, mode, percentile)


def quantize_int8(mod: tvm.IRModule, inputs, calibration, mode: str = "minmax",
                  percentile: float = 99.99) -> tuple[tvm.IRModule, dict]:
    """Calibrate ``mod`` (float) on ``calibration`` and return its int8 version plus a report.

    ``inputs``: the model's input TensorSpecs (to read calibration images/arrays against).
    """
    samples = calibration_arrays(calibration, inputs)
    weights_fp32 = sum(constant_bytes(mod).values())
    mod = relax.transform.FoldConstant()(mod)
    plan = plan_quantization(mod["main"])
    means: dict = {}
    ranges = collect_ranges(mod, plan.tensors_to_calibrate(), samples, mode, percentile, channel_means=means)
    mod = quantize_annotate(plan, ranges, means)(mod)
    mod, report = fold_qdq(mod)
    report.update({
        "scheme": "int8: activations per-tensor asymmetric int8, weights per-channel symmetric int8, int32 bias",
        "calibration_mode": mode,
        "calibration_samples": len(samples),
        "chains": len(plan.chains),
        "skipped": plan.skipped,
        "weight_bytes_before": weights_fp32,
    })
    return mod, report

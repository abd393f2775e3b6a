"""Which graph passes the compile API runs, in what order, and what each one found.

Order matters: batch norms fold first (so a ``conv -> bn -> mul`` chain becomes ``conv + bias ->
mul``), then the remaining per-channel scale/shift chains, then the activation rewrites that let
FuseOps put conv + bias + activation into one kernel.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..errors import CompileError, InputError, first_line
from .base import collect_findings
from .fold_batch_norm import FoldBatchNorm
from .fold_scale_shift import FoldScaleShift
from .prelu_to_leaky_relu import PReLUToLeakyReLU


def fusion_passes() -> list[tvm.transform.Pass]:
    """The exact rewrites run by default (``compile(fuse=True)``): fresh instances, fresh findings.

    TVM's common subexpression elimination first: RetinaFace's imported graph computes three of its
    SSH 3x3 convs twice (59 convs, 56 distinct), and the int8 chains built later would each keep
    their own copy (measured: fp32 226.1 -> 210.3 M a7 cycles, see ``benchmarks/bench_arm.py``)."""
    return [relax.transform.EliminateCommonSubexpr(), FoldBatchNorm(), FoldScaleShift(), PReLUToLeakyReLU()]


def run_passes(mod: tvm.IRModule, passes: list) -> tuple[tvm.IRModule, list[tuple[str, dict | None]]]:
    """Run ``passes`` in order; return the module and ``(pass name, findings or None)`` per pass.

    Findings are what the graph passes (``transform.base``) that ran report: for a graph pass its
    own, for a ``Sequential`` holding some ``{pass name: findings}``, for TVM's passes None.
    """
    ran = []
    for p in passes:
        if not isinstance(p, tvm.transform.Pass):
            raise InputError(
                f"passes=[...] holds {p!r}, which is not a tvm.transform.Pass; give pass instances "
                f"such as edgetvm.passes.FoldBatchNorm()"
            )
        name = str(p.info.name)
        try:
            with collect_findings() as found:
                mod = p(mod)
        except Exception as exc:  # noqa: BLE001 - TVM raises plain exceptions through tvm_ffi
            raise CompileError(f"graph pass {name} failed: {first_line(exc)}") from exc
        if len(found) == 1 and found[0][0] == name:
            ran.append((name, found[0][1]))
        else:
            ran.append((name, dict(found) or None))
    return mod, ran


def explain_quantization(name: str, found: dict) -> list[str]:
    """``--explain`` for the quantization step: what became int8, what stayed float and why."""
    kernels = ", ".join(f"{k}={v}" for k, v in found.get("int8_kernels", {}).items())
    lines = [f"{name}: {found.get('chains', 0)} chain(s) quantized ({found.get('calibration_mode')}, "
             f"{found.get('calibration_samples', 0)} calibration sample(s)); int8 kernels: {kernels or 'none'}; "
             f"weights {found.get('weight_bytes_before', 0)} -> {found.get('weight_bytes_after', 0)} bytes"]
    for why in found.get("kept_float", []):
        lines.append(f"  kept float: {why}")
    for why in found.get("skipped", []):
        lines.append(f"  not quantized: {why}")
    float_ops = found.get("float_ops") or {}
    if float_ops:
        lines.append("  ops left in float (no int8 kernel reads or writes them): "
                     + ", ".join(f"{op} x{n}" for op, n in float_ops.items()))
    for why in dict.fromkeys(found.get("declined", [])):
        lines.append(f"  int8 kernel declined: {why}")
    equalization = found.get("cross_layer_equalization") or {}
    if equalization:
        lines.append(f"  cross-layer equalization: {equalization.get('pairs', 0)} pair(s)")
        for why in equalization.get("declined", []):
            lines.append(f"    declined at {why}")
    return lines


def explain(passes: list[str], details: dict) -> list[str]:
    """The import's notes (float16 folding, densified sparse weights, ...), then one line per pass
    that ran and one per decline with its reason (for ``--explain``)."""
    lines = [f"import: {note}" for note in details.get("import", {}).get("notes", [])]
    for name in passes:
        found = details.get(name)
        if name.startswith("Quantize(") and isinstance(details.get("quantize"), dict):
            lines += explain_quantization(name, details["quantize"])
            continue
        if not isinstance(found, dict):
            lines.append(f"{name}: ran")
            continue
        counts = ", ".join(f"{k}={v}" for k, v in found.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool))
        into = found.get("folded_into")
        if into:
            counts += " (into " + ", ".join(f"{k}: {v}" for k, v in into.items()) + ")"
        lines.append(f"{name}: {counts or 'nothing to do'}")
        for item in found.get("declined", []):
            where = next((str(v) for k, v in item.items() if k not in ("reason", "action", "shape")), "?")
            if item.get("shape"):
                where += " " + "x".join(str(d) for d in item["shape"])
            action = f" -> {item['action']}" if "action" in item else ""
            lines.append(f"  declined at {where}: {item['reason']}{action}")
    return lines

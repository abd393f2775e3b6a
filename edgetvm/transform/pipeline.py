"""Which graph passes the compile API runs, in what order, and what each one found.

Order matters: batch norms fold first (so a ``conv -> bn -> mul`` chain becomes ``conv + bias ->
mul``), then the remaining per-channel scale/shift chains, then the activation rewrites that let
FuseOps put conv + bias + activation into one kernel.
"""

from __future__ import annotations

import tvm

from ..errors import CompileError, InputError, first_line
from .base import collect_findings
from .fold_batch_norm import FoldBatchNorm
from .fold_scale_shift import FoldScaleShift
from .prelu_to_leaky_relu import PReLUToLeakyReLU


def fusion_passes() -> list[tvm.transform.Pass]:
    """The exact rewrites run by default (``compile(fuse=True)``): fresh instances, fresh findings."""
    return [FoldBatchNorm(), FoldScaleShift(), PReLUToLeakyReLU()]


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


def explain(passes: list[str], details: dict) -> list[str]:
    """One line per pass that ran, then one per decline with its reason (for ``--explain``)."""
    lines = []
    for name in passes:
        found = details.get(name)
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

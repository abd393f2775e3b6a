"""Legalizations of relu, clip and max/min against a constant that keep a NaN input NaN.

TVM's LLVM code generator lowers a float ``max(a, b)`` to ``select(a > b, a, b)`` (``min`` alike):
an ordered compare is false when an operand is NaN, so the *second* operand comes out. TOPI writes
``relu(x) = max(x, 0)`` and ``clip(x) = max(min(x, hi), lo)``, which map NaN to 0 or to a bound,
where onnxruntime and LiteRT keep the NaN: a broken input then looks like a plausible detection.
With the constant first, ``max(0, x) = select(0 > x, 0, x)`` returns ``x`` whenever the compare
fails, NaN included, and the same value as before for every other ``x`` (``-0.0`` aside: it was 0,
stays -0.0, equal under IEEE compare). One compare and one select per vector either way: on
cortex-a7 the guest instructions per inference are unchanged (MobileNetV2 at 96x96: 48,038,439 both
ways; benchmarks/bench_nan_propagation.py).
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

from ..relax_utils import is_float, prim_value, scalar_constant, static_shape

def _float_tensor(expr) -> bool:
    return is_float(expr) and static_shape(expr) is not None


def _scalar(expr, dtype: str):
    """A one-element constant or a FloatImm/IntImm as a TIR constant of ``dtype``, else None."""
    value = scalar_constant(expr)
    if value is None:
        value = prim_value(expr)
    return None if value is None else tirx.const(float(value), dtype)


def _constant_first(bb: relax.BlockBuilder, x, bounds: list[tuple[str, object]], name: str):
    """``x`` through each ``(max|min, constant)`` of ``bounds`` in turn, the constant as first operand."""

    def compute(data: te.Tensor) -> te.Tensor:
        def element(*index):
            value = data(*index)
            for kind, constant in bounds:
                value = tirx.Max(constant, value) if kind == "max" else tirx.Min(constant, value)
            return value

        return te.compute(data.shape, element, name=name)

    return bb.call_te(compute, x, primfunc_name_hint=name)


def _default(call: relax.Call):
    return tvm.ir.Op.get(call.op.name).get_attr("FLegalize")


def legalize_relu(bb: relax.BlockBuilder, call: relax.Call):
    x = call.args[0]
    if not _float_tensor(x):
        return _default(call)(bb, call)
    return _constant_first(bb, x, [("max", tirx.const(0.0, str(x.ty.dtype)))], "relu")


def legalize_clip(bb: relax.BlockBuilder, call: relax.Call):
    x, lo, hi = call.args
    if not _float_tensor(x):
        return _default(call)(bb, call)
    dtype = str(x.ty.dtype)
    lo, hi = _scalar(lo, dtype), _scalar(hi, dtype)
    if lo is None or hi is None:
        return _default(call)(bb, call)
    return _constant_first(bb, x, [("max", lo), ("min", hi)], "clip")


def _legalize_bound(kind: str):
    def legalize(bb: relax.BlockBuilder, call: relax.Call):
        a, b = call.args
        for x, other in ((a, b), (b, a)):
            if _float_tensor(x) and static_shape(call) == static_shape(x):
                constant = _scalar(other, str(x.ty.dtype))
                if constant is not None:
                    return _constant_first(bb, x, [(kind, constant)], kind + "imum")
        return _default(call)(bb, call)

    return legalize


# For relax.transform.LegalizeOps: every op it names falls back to TVM's legalization where the
# NaN-keeping form does not apply (integer tensors, bounds that are not constants).
NAN_PROPAGATING_LEGALIZATIONS = {
    "relax.nn.relu": legalize_relu,
    "relax.clip": legalize_clip,
    "relax.maximum": _legalize_bound("max"),
    "relax.minimum": _legalize_bound("min"),
}

__all__ = ["NAN_PROPAGATING_LEGALIZATIONS", "legalize_clip", "legalize_relu"]

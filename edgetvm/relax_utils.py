"""Reading a Relax graph: constant values, static shapes and op names, as every pass needs them.

The bottom of the graph layer: it imports only TVM and numpy, so frontends, passes, schedules and
backends all read the IR the same way. Each reader answers None for "not known at compile time"
and leaves it to the caller to say why that matters.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

# Ops that only move or relabel a constant's elements: their value at compile time is numpy's.
RESHAPE_LIKE = ("relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.flatten")


def op_name(expr) -> str | None:
    """``"relax.nn.conv2d"`` for a call of that op, else None (calls of functions included)."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return None


def short_op(expr) -> str:
    """How a reason names the op that produced a value: ``R.nn.relu``, or what the value is."""
    name = op_name(expr)
    if name is not None:
        return "R." + name[len("relax."):]
    if isinstance(expr, relax.TupleGetItem):
        return f"item {expr.index} of {short_op(expr.tuple_value)}"
    return type(expr).__name__


def is_tensor_constant(expr) -> bool:
    """Whether ``expr`` is a bound tensor constant (dtype literals such as ``R.dtype("float32")`` are
    ``ir.Constant`` nodes too, with a string payload)."""
    return isinstance(expr, tvm.ir.Constant) and isinstance(expr.value, tvm.runtime.Tensor)


def bound_constant(expr) -> np.ndarray | None:
    """The value of ``expr`` if it is itself a tensor constant (no look-through, unlike constant_value)."""
    if is_tensor_constant(expr):
        return expr.value.numpy()
    return None


def scalar_constant(expr) -> float | int | None:
    """The one element of a constant holding exactly one (a per-tensor scale or zero point)."""
    value = bound_constant(expr)
    if value is None or value.size != 1:
        return None
    return value.reshape(-1)[0].item()


def prim_value(expr) -> float | None:
    """A ``FloatImm``/``IntImm`` argument (clip's bounds in TVM 0.27) as a float, else None."""
    value = getattr(expr, "value", None)
    if isinstance(expr, (tvm.tirx.FloatImm, tvm.tirx.IntImm)) and isinstance(value, (int, float)):
        return float(value)
    return None


def static_dims(dims) -> tuple[int, ...] | None:
    """``dims`` (IntImm or int, as a shape holds them) as ints; None if one of them is symbolic."""
    if isinstance(dims, relax.ShapeExpr):
        dims = dims.values
    if any(not isinstance(d, (tvm.tirx.IntImm, int)) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def static_shape(expr) -> tuple[int, ...] | None:
    """The shape of the tensor ``expr`` when every dimension is known at compile time, else None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape)
    except (TypeError, ValueError):
        return None


def is_float(expr) -> bool:
    """Whether ``expr`` is a tensor of a floating-point dtype (float16/32/64, bfloat16)."""
    ty = expr.ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype).startswith(("float", "bfloat"))


def constant_value(expr, var2val) -> np.ndarray | None:
    """The value of ``expr`` at compile time, if it is a constant seen through variables (``var2val``,
    from ``relax.analysis.get_var2val``), reshapes, transposes and casts (fp16 weights of TFLite
    models reach float32 convs through ``astype``)."""
    seen = 0
    while isinstance(expr, relax.Var) and expr in var2val and seen < 64:
        expr, seen = var2val[expr], seen + 1
    if isinstance(expr, tvm.ir.Constant):
        return expr.value.numpy()
    name = op_name(expr)
    if name == "relax.astype":
        inner = constant_value(expr.args[0], var2val)
        return None if inner is None else inner.astype(str(expr.ty.dtype))
    if name in RESHAPE_LIKE or name == "relax.permute_dims":
        inner = constant_value(expr.args[0], var2val)
        if inner is None:
            return None
        if name == "relax.permute_dims":
            axes = expr.attrs.axes
            inner = np.transpose(inner, None if axes is None else [int(a) for a in axes])
        shape = static_shape(expr)
        return None if shape is None else inner.reshape(shape)
    return None

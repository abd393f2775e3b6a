"""Spell ``min(max(x, a), b)`` with scalar constant bounds as ``clip(x, a, b)`` (ONNX Clip, ReLU6).

TVM's ONNX frontend imports ``Clip(x, a, b)`` (opset >= 11, bounds as inputs) as two ``call_tir``
kernels, ``y[i] = max(x[i], a[()])`` then ``z[i] = min(y[i], b[()])``; other frontends and passes
write ``relax.maximum``/``relax.minimum``. Both spellings compute ``clip(x, a, b)`` exactly when
``a <= b`` (for ``a > b`` both give ``b``, and so does ``relax.clip``: ``min(max(x, a), b)``), so the
rewrite changes no value. Why: the int8 planner (``quantization.annotate``) folds an activation
into its convolution only when it sees one op it knows; ReLU6 as two opaque kernels stayed float,
and MobileNetV2's int8 build ran 33 float clip/transpose/quantize kernels between its int8 convs.

A ``max`` whose result has other users, and a lone ``max`` or ``min``, are left as they are.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.relax.dpl import is_op, wildcard

from ..relax_utils import constant_value, op_name
from .base import GraphPass, MatchedBindingRewriter, graph_pass


def elementwise_scalar_minmax(func) -> str | None:
    """"max"/"min" if ``func`` is ``out[i] = max|min(x[i], c[()])`` over all of ``x``; else None."""
    if not isinstance(func, tirx.PrimFunc) or len(func.params) != 3:
        return None
    x_buf, c_buf, out_buf = func.params  # TVM 0.27: buffer parameters are the params themselves
    if len(c_buf.shape) != 0 or len(x_buf.shape) != len(out_buf.shape):
        return None
    body = func.body
    while isinstance(body, s_tir.SBlockRealize) and body.block.name_hint == "root":
        body = body.block.body
    while isinstance(body, tirx.For):
        body = body.body
    if not isinstance(body, s_tir.SBlockRealize):
        return None
    store = body.block.body
    if not isinstance(store, tirx.BufferStore) or not store.buffer.same_as(out_buf):
        return None
    value = store.value
    kind = "max" if isinstance(value, tirx.Max) else "min" if isinstance(value, tirx.Min) else None
    if kind is None:
        return None
    a, b = value.a, value.b
    if not (_loads(a, x_buf) and _loads(b, c_buf)) or len(b.indices) != 0:
        return None
    if len(a.indices) != len(store.indices) or any(not i.same_as(j) for i, j in zip(a.indices, store.indices)):
        return None
    return kind


def _loads(expr, buffer) -> bool:
    # TVM 0.27 spells a buffer read ``TensorLoad(source=buffer, indices)``.
    source = getattr(expr, "source", None)
    return isinstance(expr, tvm.ir.expr.TensorLoad) and source is not None and source.same_as(buffer)


def scalar_minmax(value, mod: tvm.IRModule, var2val) -> tuple[str, relax.Expr, float] | None:
    """``(kind, x, c)`` when ``value`` is ``max|min(x, c)`` of a float tensor and a scalar constant, as a
    Relax op or as the frontend's ``call_tir`` kernel; else None."""
    name = op_name(value)
    if name in ("relax.maximum", "relax.minimum"):
        kind, (x, bound) = name[len("relax."):len("relax.") + 3], value.args
    elif name == "relax.call_tir" and isinstance(value.args[0], tvm.ir.GlobalVar) \
            and isinstance(value.args[1], relax.Tuple) and len(value.args[1].fields) == 2:
        func = mod[value.args[0]] if value.args[0] in mod.functions else None
        kind = elementwise_scalar_minmax(func)
        if kind is None:
            return None
        x, bound = value.args[1].fields
        if getattr(x.ty, "ndim", -1) != len(func.params[0].shape):
            return None
    else:
        return None
    constant = constant_value(bound, var2val)
    dtype = getattr(getattr(x, "ty", None), "dtype", None)
    if constant is None or constant.size != 1 or constant.ndim != 0 or not str(dtype).startswith("float"):
        return None
    return kind, x, float(constant.reshape(-1)[0])


@graph_pass("MinMaxToClip")
class MinMaxToClip(GraphPass):
    """``min(max(x, a), b)`` (scalar constants, the ``max`` used once) -> ``clip(x, a, b)``.

    After running, ``findings`` holds ``{"rewritten"}``.
    """

    def __init__(self):
        super().__init__()
        self.pattern = is_op("relax.minimum")(wildcard(), wildcard()) | is_op("relax.call_tir")(wildcard(), wildcard())

    def new_findings(self) -> dict:
        return {"rewritten": 0}

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function | None:
        uses: dict = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                for var in relax.analysis.free_vars(binding.value):
                    uses[var] = uses.get(var, 0) + 1
        for var in relax.analysis.free_vars(func.body.body):
            uses[var] = uses.get(var, 0) + 1

        def rewrite_binding(binding: relax.VarBinding, var2val, visit) -> relax.Expr | None:
            upper = scalar_minmax(binding.value, mod, var2val)
            if upper is None or upper[0] != "min" or uses.get(upper[1], 0) != 1:
                return None
            lower = scalar_minmax(var2val.get(upper[1]), mod, var2val) if upper[1] in var2val else None
            if lower is None or lower[0] != "max":
                return None
            self.findings["rewritten"] += 1
            return relax.op.clip(visit(lower[1]), lower[2], upper[2])

        return MatchedBindingRewriter(mod, self.pattern, rewrite_binding).run(func)

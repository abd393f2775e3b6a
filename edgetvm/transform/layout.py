"""Channels-last layout for the default schedules: activations NHWC, conv weights HWIO.

In NHWC the output channel is the innermost, unit-stride axis of every activation, so one vector
register holds ``lanes`` neighbouring channels of one pixel: conv2d, depthwise conv2d, pooling and
the per-channel tails (bias, batch norm, PReLU) all load and store whole vectors, and a 1x1 conv is
a plain GEMM ``[H*W, C_in] x [C_in, C_out]``. In HWIO the weights of neighbouring output channels
are contiguous too: the layout change of the (constant) weights is folded at compile time, so the
packing costs nothing at run time. Only the model's inputs and outputs are transposed at run time.

ConvertLayout stops at ops without a layout rule (and at ``call_tir`` kernels the frontend emitted
directly) and transposes around them; the activations of the face models that lack one are first
spelled in ops that have one:

    clip(x, a, b)                 = min(max(x, a), b)                       (ReLU6)
    leakyrelu(x, alpha)           = max(x, alpha * x)          for 0 <= alpha <= 1
    call_tir(y[i] = max(x[i], c[]), (x, c)) = max(x, c)      (and min): ONNX Clip from the frontend
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..relax_utils import is_tensor_constant, op_name, prim_value
from .base import GraphPass, graph_pass
from .const_fold import FoldConstantsWithNumpy
from .min_max_to_clip import elementwise_scalar_minmax

# Pooling, concat, resize and the elementwise ops follow their producer's layout (TVM 0.27's pooling
# ops refuse a desired layout of their own).
CHANNELS_LAST = {
    "relax.nn.conv2d": ["NHWC", "HWIO"],
}


@relax.expr_functor.mutator
class _LayoutFriendlyActivations(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = op_name(call)
        if name is None:
            return call
        if name == "relax.call_tir":
            return self._scalar_minmax_kernel(call)
        dtype = getattr(getattr(call.args[0], "ty", None), "dtype", None) if call.args else None
        if not dtype or not str(dtype).startswith("float"):
            return call
        x = call.args[0]
        if name == "relax.clip":
            lo, hi = (prim_value(a) for a in call.args[1:3])
            if lo is None or hi is None:
                return call
            clipped = relax.op.maximum(x, relax.const(lo, dtype))
            self.rewritten += 1
            return relax.op.minimum(self.builder_.emit(clipped), relax.const(hi, dtype))
        if name == "relax.nn.leakyrelu":
            alpha = float(call.attrs.alpha)
            if not 0.0 <= alpha <= 1.0:
                return call
            scaled = self.builder_.emit(relax.op.multiply(x, relax.const(alpha, dtype)))
            self.rewritten += 1
            return relax.op.maximum(x, scaled)
        return call

    def _scalar_minmax_kernel(self, call: relax.Call) -> relax.Expr:
        gvar, args = call.args[0], call.args[1]
        if not isinstance(gvar, tvm.ir.GlobalVar) or not isinstance(args, relax.Tuple) or len(args.fields) != 2:
            return call
        func = self.builder_.get()[gvar] if gvar in self.builder_.get().functions else None
        bound = elementwise_scalar_minmax(func)
        if bound is None:
            return call
        x, scalar = args.fields
        if isinstance(scalar, relax.Var) and self.lookup_binding(scalar) is not None:
            scalar = self.lookup_binding(scalar)
        if not is_tensor_constant(scalar) or getattr(scalar.ty, "ndim", -1) != 0:
            return call
        x_ty = getattr(x, "ty", None)
        if getattr(x_ty, "ndim", -1) != len(func.params[0].shape):
            return call
        self.rewritten += 1
        return (relax.op.maximum if bound == "max" else relax.op.minimum)(x, scalar)


@graph_pass("LayoutFriendlyActivations")
class LayoutFriendlyActivations(GraphPass):
    """Rewrite clip and leakyrelu into max/min/multiply, which ConvertLayout can carry through.

    After running, ``findings`` holds ``{"rewritten"}``: the activations spelled in max/min/multiply.
    """

    def new_findings(self) -> dict:
        return {"rewritten": 0}

    def visits(self, gvar, func) -> bool:
        return isinstance(func, relax.Function)

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function:
        mutator = _LayoutFriendlyActivations(mod)
        rewritten = mutator.visit_expr(func)
        self.findings["rewritten"] += mutator.rewritten
        return rewritten


def channels_last() -> tvm.transform.Pass:
    """ConvertLayout to NHWC/HWIO; layout-agnostic ops (elementwise, pooling, concat) follow."""
    return tvm.transform.Sequential(
        [
            # Folds the frontend's isnan/where around Clip's bounds into plain scalar constants.
            FoldConstantsWithNumpy(),
            LayoutFriendlyActivations(),
            relax.transform.ConvertLayout(CHANNELS_LAST),
        ],
        name="ChannelsLast",
    )

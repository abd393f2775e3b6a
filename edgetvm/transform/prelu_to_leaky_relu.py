"""Rewrite a PReLU whose slope is one shared constant as LeakyReLU, so it fuses into the conv kernel.

PReLU (He et al. 2015) with a single learned slope ``a`` shared by all channels is exactly
LeakyReLU with ``alpha = a``:

    prelu(x, a) = x if x > 0 else a * x = leaky_relu(x, alpha=a)

Why bother: Relax legalises a shared-slope ``R.nn.prelu`` into a PrimFunc that first broadcasts the
slope into a per-channel buffer; AnnotateTIROpPattern then classifies it as *broadcast*, and FuseOps
only fuses *elementwise* consumers into a conv2d (its "out-elementwise-fusable" rule), so the PReLU
ends up in a kernel of its own, costing a full extra pass over the activation tensor. LeakyReLU is
elementwise and fuses. ``alpha`` is stored as a float64 attribute and cast back to the tensor's
float32 in the kernel, which is exact, so nothing changes numerically.

A per-channel slope (distinct values) legalises to an elementwise PrimFunc and fuses already; it is
left alone, as is a non-constant slope (reported in ``findings["declined"]``).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ..relax_utils import constant_value
from .base import GraphPass, graph_pass
from .channel_affine import rebind


PER_CHANNEL = "per-channel slopes: elementwise already, fuses as it is"


@graph_pass("PReLUToLeakyReLU")
class PReLUToLeakyReLU(GraphPass):
    """``prelu(x, a)`` with one constant slope value -> ``leakyrelu(x, alpha=a)``.

    After running, ``findings`` holds ``{"rewritten", "per_channel", "declined": [{"prelu", "reason"}]}``.
    """

    def __init__(self):
        super().__init__()
        self.data, self.slope = wildcard(), wildcard()
        self.pattern = is_op("relax.nn.prelu")(self.data, self.slope)

    def check(self, slope: np.ndarray | None) -> str | None:
        """Why this PReLU is not rewritten; None when its slope is one shared constant."""
        if slope is None:
            return "the slope is not a compile-time constant"
        if slope.size == 0:
            return "the slope is empty"
        if not np.all(slope == slope.flat[0]):
            return PER_CHANNEL
        return None

    def new_findings(self) -> dict:
        return {"rewritten": 0, "per_channel": 0, "declined": []}

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function | None:
        return _Rewriter(self, mod).rewrite(func)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, rule: PReLUToLeakyReLU, mod: tvm.IRModule):
        super().__init__(mod)
        self.rule = rule
        self.changed = False
        self.var2val = None

    def rewrite(self, func: relax.Function) -> relax.Function | None:
        self.var2val = relax.analysis.get_var2val(func)
        new_func = self.visit_expr(func)
        return relax.analysis.remove_all_unused(new_func) if self.changed else None

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        # Only the binding of the call itself: `y = x` aliases would match too, through var2val.
        found = None
        if isinstance(binding.value, relax.Call):
            found = self.rule.pattern.extract_matched_expr(binding.value, self.var2val)
        if found is None:
            super().visit_var_binding_(binding)
            return
        slope = constant_value(binding.value.args[1], self.var2val)
        reason = self.rule.check(slope)
        if reason is not None:
            if reason == PER_CHANNEL:
                self.rule.findings["per_channel"] += 1
            else:
                self.rule.findings["declined"].append({"prelu": str(binding.var.name), "reason": reason})
            super().visit_var_binding_(binding)
            return
        data = self.visit_expr(binding.value.args[0])
        rebind(self.builder_, binding.var, relax.op.nn.leakyrelu(data, float(slope.flat[0])))
        self.rule.findings["rewritten"] += 1
        self.changed = True

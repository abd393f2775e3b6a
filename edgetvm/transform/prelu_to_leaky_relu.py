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
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ..relax_utils import constant_value
from .base import BindingRewritePass, graph_pass


PER_CHANNEL = "per-channel slopes: elementwise already, fuses as it is"


@graph_pass("PReLUToLeakyReLU")
class PReLUToLeakyReLU(BindingRewritePass):
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

    def rewrite_binding(self, binding: relax.VarBinding, var2val, visit) -> relax.Expr | None:
        slope = constant_value(binding.value.args[1], var2val)
        reason = self.check(slope)
        if reason is not None:
            if reason == PER_CHANNEL:
                self.findings["per_channel"] += 1
            else:
                self.findings["declined"].append({"prelu": str(binding.var.name), "reason": reason})
            return None
        self.findings["rewritten"] += 1
        return relax.op.nn.leakyrelu(visit(binding.value.args[0]), float(slope.flat[0]))

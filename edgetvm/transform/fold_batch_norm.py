"""Fold inference-mode batch normalisation into the conv2d or matmul before it.

Batch norm in inference (Ioffe & Szegedy 2015) is a per-channel affine map of its input ``x``:

    y = (x - mean) / sqrt(var + eps) * gamma + beta  =  x * s + t,
    s = gamma / sqrt(var + eps),   t = beta - mean * s

When ``x = W * z + b`` comes from a conv2d (any groups, so depthwise too; NCHW or NHWC; OIHW, HWIO
and the other kernel layouts Relax accepts) or a matmul/dense with constant weight, the batch norm
disappears into the producer, computed once at compile time:

    W'[c] = W[c] * s[c],   b'[c] = (b[c] - mean[c]) * s[c] + beta[c]

and the graph keeps ``conv2d(z, W') + b'`` only, which FuseOps then puts in one kernel with the
activation that follows. This is exact up to float rounding (the constants are computed in float64).

A batch norm that cannot be folded (its input comes from an add or an activation, the conv output
has other readers, ...) is still inference-mode arithmetic on constants: unless
``decompose_unfoldable=False`` it becomes ``x * s + t`` with ``s`` and ``t`` constants, which costs
two fused elementwise ops instead of Relax's legalised batch_norm (a sqrt and a divide per element).
A batch norm in training mode, or with non-constant statistics, is left alone.

Each rule is split as onnxscript's rewriter does: ``pattern`` (``tvm.relax.dpl``), ``check`` (returns
the reason the rule does not apply, or None), ``rewrite``. Every decline is recorded in
``findings["declined"]`` with its reason.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, is_tuple_get_item, wildcard

from ..relax_utils import constant_value, short_op, static_shape
from .base import GraphPass, graph_pass
from .channel_affine import (
    BindingUses,
    ChannelAffine,
    LinearProducer,
    batch_norm_affine,
    emit_folded,
    emit_scale_shift,
    linear_producer,
    per_channel,
    rebind,
)


class BatchNormMatch:
    """What the ``pattern`` of :class:`FoldBatchNorm` found for one ``batch_norm(...)[0]``."""

    def __init__(self, var: relax.Var, bn: relax.Call, data: relax.Expr, stats: list, chain: list,
                 bias: relax.Expr | None):
        self.var = var  # the variable bound to bn[0]
        self.bn = bn
        self.data = data
        self.stats = stats  # gamma, beta, mean, var as expressions
        self.chain = chain  # [linear call] or [linear call, bias add call], producer first
        self.bias = bias  # the add's other operand, when chain has the add
        self.affine: ChannelAffine | None = None
        self.producer: LinearProducer | None = None


@graph_pass("FoldBatchNorm")
class FoldBatchNorm(GraphPass):
    """Fold ``batch_norm`` (inference) into the preceding conv2d/matmul (+ bias); see the module doc.

    After running, ``findings`` holds ``{"batch_norms", "folded", "folded_into", "scale_shift",
    "declined": [{"batch_norm", "shape", "reason", "action"}]}`` (``batch_norm`` names the Relax
    variable of its output, ``shape`` is its input's).
    """

    def __init__(self, decompose_unfoldable: bool = True):
        super().__init__()
        self.decompose_unfoldable = decompose_unfoldable
        self.gamma, self.beta, self.mean, self.var = wildcard(), wildcard(), wildcard(), wildcard()
        self.data = wildcard()
        self.bn = is_op("relax.nn.batch_norm")(self.data, self.gamma, self.beta, self.mean, self.var)
        self.pattern = is_tuple_get_item(self.bn, 0)
        self.linear = is_op("relax.nn.conv2d")(wildcard(), wildcard()) | is_op("relax.matmul")(wildcard(), wildcard())
        self.bias = wildcard()
        self.biased = is_op("relax.add")(self.linear, self.bias)

    def new_findings(self) -> dict:
        return {"batch_norms": 0, "folded": 0, "folded_into": {}, "scale_shift": 0, "declined": []}

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function | None:
        return _Rewriter(self, mod).rewrite(func)

    def match(self, var: relax.Var, value: relax.Expr, uses: BindingUses) -> BatchNormMatch | None:
        """``pattern``: ``batch_norm(data, gamma, beta, mean, var)[0]``, and what produced ``data``."""
        if not isinstance(value, relax.TupleGetItem):
            return None  # `y = x` aliases would match too, through var2val
        found = self.pattern.extract_matched_expr(value, uses.var2val)
        if found is None:
            return None
        # With var2val the matcher may hand back the bound value instead of the variable.
        data = found[self.data]
        if not isinstance(data, relax.Var):
            data = uses.bound_to.get(data, data)
        stats = [found[p] for p in (self.gamma, self.beta, self.mean, self.var)]
        chain, bias = [], None
        source = uses.var2val.get(data, None) if isinstance(data, relax.Var) else None
        if source is not None:
            producer = self.biased.extract_matched_expr(source, uses.var2val)
            if producer is not None:
                chain, bias = [producer[self.linear], source], producer[self.bias]
            else:
                chain = [source]  # a bare conv2d/matmul, or something check() will name
        return BatchNormMatch(var, found[self.bn], data, stats, chain, bias)

    def check_batch_norm(self, m: BatchNormMatch, uses: BindingUses) -> str | None:
        """Whether ``m`` is inference arithmetic on constants at all (else: leave it untouched)."""
        attrs = m.bn.attrs
        if bool(attrs.training):
            return "batch_norm is in training mode (normalises by batch statistics)"
        values = [constant_value(e, uses.var2val) for e in m.stats]
        names = ("gamma", "beta", "moving mean", "moving variance")
        missing = [n for n, v in zip(names, values) if v is None]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            return f"the batch_norm {', '.join(missing)} {verb} not compile-time constant"
        gamma, beta, mean, var = values
        if not bool(attrs.scale):
            gamma = np.ones_like(gamma)
        if not bool(attrs.center):
            beta = np.zeros_like(beta)
        shape = static_shape(m.data)
        if shape is None:
            return "the batch_norm input has no static shape"
        tuple_var = uses.bound_to.get(m.bn)
        if tuple_var is not None and uses.count(tuple_var) > 1:
            return "the batch_norm's running-statistics outputs are read"
        m.affine = batch_norm_affine(gamma, beta, mean, var, float(attrs.epsilon))
        return None

    def check_fold(self, m: BatchNormMatch, uses: BindingUses) -> str | None:
        """``check``: the reason the batch norm cannot be folded into its producer, or None."""
        if not m.chain:
            return "its input is a function parameter, not a conv2d or matmul output"
        producer = linear_producer(m.chain[0], uses.var2val)
        if isinstance(producer, str):
            return producer
        axis = int(m.bn.attrs.axis) % len(producer.out_shape)
        if axis != producer.channel_axis:
            return (f"batch_norm normalises axis {axis}, but the {producer.kind}'s output channels are "
                    f"on axis {producer.channel_axis}")
        for call in m.chain:
            var = uses.bound_to.get(call)
            readers = uses.count(var) if var is not None else 0
            if readers != 1:
                return f"the {short_op(call)} output feeding batch_norm has {readers - 1} other reader(s)"
        affine = ChannelAffine.identity(producer.channels)
        if len(m.chain) == 2:
            bias = constant_value(m.bias, uses.var2val)
            if bias is None:
                return f"the add between the {producer.kind} and batch_norm is not a constant bias"
            bias = per_channel(bias, producer.out_shape, producer.channel_axis)
            if isinstance(bias, str):
                return f"the add between the {producer.kind} and batch_norm: {bias}"
            affine = affine.then_shift(bias)
        m.affine = ChannelAffine(affine.scale * m.affine.scale, affine.shift * m.affine.scale + m.affine.shift)
        m.producer = producer
        return None


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """Walks one function's bindings and applies ``FoldBatchNorm``'s rule to each."""

    def __init__(self, rule: FoldBatchNorm, mod: tvm.IRModule):
        super().__init__(mod)
        self.rule = rule
        self.changed = False
        self.uses: BindingUses | None = None

    def rewrite(self, func: relax.Function) -> relax.Function | None:
        self.uses = BindingUses(func)
        new_func = self.visit_expr(func)
        if not self.changed:
            return None
        return relax.analysis.remove_all_unused(new_func)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        m = self.rule.match(binding.var, binding.value, self.uses)
        if m is None:
            super().visit_var_binding_(binding)
            return
        findings = self.rule.findings
        findings["batch_norms"] += 1
        name = str(binding.var.name)
        shape = list(static_shape(m.data) or ())
        reason = self.rule.check_batch_norm(m, self.uses)
        if reason is not None:
            findings["declined"].append(
                {"batch_norm": name, "shape": shape, "reason": reason, "action": "left as batch_norm"})
            super().visit_var_binding_(binding)
            return
        reason = self.rule.check_fold(m, self.uses)
        if reason is None:
            # rewrite: conv2d(z, W') + b', bound to the variable that held bn[0].
            data = self.visit_expr(m.producer.call.args[0])
            folded = emit_folded(self.builder_, m.producer, m.affine, data, str(self.uses.bound_to[m.chain[0]].name))
            rebind(self.builder_, binding.var, folded)
            findings["folded"] += 1
            findings["folded_into"][m.producer.kind] = findings["folded_into"].get(m.producer.kind, 0) + 1
            self.changed = True
            return
        if not self.rule.decompose_unfoldable:
            findings["declined"].append(
                {"batch_norm": name, "shape": shape, "reason": reason, "action": "left as batch_norm"})
            super().visit_var_binding_(binding)
            return
        findings["declined"].append(
            {"batch_norm": name, "shape": shape, "reason": reason, "action": "rewritten as x * s + t"})
        axis = int(m.bn.attrs.axis) % len(shape)
        data = self.visit_expr(m.data)
        rebind(self.builder_, binding.var, emit_scale_shift(data, m.affine, tuple(shape), axis, str(m.data.ty.dtype)))
        findings["scale_shift"] += 1
        self.changed = True

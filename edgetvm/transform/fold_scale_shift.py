"""Fold chains of per-channel multiply/divide/add/subtract by constants into the conv2d or matmul before them.

Exporters often write batch norm (or a frozen affine layer, or input scaling) as separate
elementwise ops. After a linear producer ``x = W * z + b`` a chain such as

    y = ((x * c1) + c2) / c3 - c4        (each c_i constant, broadcast along the channel axis only)

is one per-channel affine map ``y = x * s + t``; composing the steps in float64 gives ``s`` and
``t``, and the chain disappears into the producer:

    W'[c] = W[c] * s[c],   b'[c] = t[c]    (the existing bias b is the chain's first shift)

Steps: ``x*c``, ``c*x`` (s, t *= c); ``x/c`` (s, t /= c); ``x+c``, ``c+x`` (t += c);
``x-c`` (t -= c); ``c-x`` (s, t = -s, c - t). ``c/x`` is not affine and ends the chain, as does any
step whose constant varies along a non-channel axis, or an intermediate read by more than one op.
A chain that is only the producer's own bias is left as it is (nothing to gain).

The split into ``pattern`` (``trace_chain``), ``check`` (``check_chain``, the reason it does not apply)
and ``rewrite`` follows onnxscript's rewriter. Declines are recorded in ``findings["declined"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..relax_utils import constant_value, op_name, static_shape
from .base import GraphPass, graph_pass
from .channel_affine import BindingUses, ChannelAffine, LinearProducer, emit_folded, linear_producer, per_channel, rebind

_AFFINE_OPS = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide"}


@dataclass
class ScaleShiftChain:
    """A linear producer and the per-channel affine steps that follow it."""

    producer_var: relax.Var
    producer: LinearProducer | str  # str: why the producer cannot absorb the chain
    affine: ChannelAffine
    steps: list[tuple[relax.Var, str]] = field(default_factory=list)  # (variable, op)
    stop_reason: str | None = None  # why the chain ends where it does, when that is worth saying

    @property
    def end(self) -> relax.Var:
        return self.steps[-1][0]

    @property
    def scales(self) -> bool:
        return any(op in ("multiply", "divide", "negate") for _, op in self.steps)


def affine_step(value: relax.Expr, prev: relax.Var, out_shape, axis: int, var2val):
    """One step of the chain: ``(op, f)`` with ``f(affine) -> affine``, None if not a step, or a reason."""
    name = op_name(value)
    if name not in _AFFINE_OPS:
        return None
    lhs, rhs = value.args
    if lhs.same_as(prev) and not rhs.same_as(prev):
        other, prev_first = rhs, True
    elif rhs.same_as(prev) and not lhs.same_as(prev):
        other, prev_first = lhs, False
    else:
        return None
    constant = constant_value(other, var2val)
    if constant is None:
        return None  # e.g. a residual add: the chain simply ends here
    op = name.rsplit(".", 1)[-1]
    vec = per_channel(constant, out_shape, axis)
    if isinstance(vec, str):
        return f"the {op} after it: {vec}"
    vec = vec.astype(np.float64)
    if op == "multiply":
        return op, lambda a: a.then_scale(vec)
    if op == "add":
        return op, lambda a: a.then_shift(vec)
    if op == "subtract":
        if prev_first:
            return op, lambda a: a.then_shift(-vec)
        return "negate", lambda a: a.then_scale(-np.ones_like(vec)).then_shift(vec)
    if prev_first:  # divide
        if not np.all(vec != 0):
            return "the divide after it has a zero divisor"
        return op, lambda a: a.then_scale(1.0 / vec)
    return None


def trace_chain(var: relax.Var, call: relax.Call, uses: BindingUses) -> ScaleShiftChain | None:
    """``pattern``: a conv2d/matmul and the longest single-reader chain of affine steps after it."""
    if op_name(call) not in ("relax.nn.conv2d", "relax.matmul"):
        return None
    producer = linear_producer(call, uses.var2val)
    if isinstance(producer, str):
        out_shape = static_shape(call)
        axis = -1
        if out_shape is not None:
            axis = str(call.attrs.out_layout).index("C") if op_name(call) == "relax.nn.conv2d" else len(out_shape) - 1
        channels = out_shape[axis] if out_shape is not None else 0
    else:
        out_shape, axis, channels = producer.out_shape, producer.channel_axis, producer.channels
    chain = ScaleShiftChain(var, producer, ChannelAffine.identity(channels))
    if out_shape is None:
        return chain
    prev = var
    while True:
        reader = uses.sole_user(prev)
        if reader is None:
            if uses.count(prev) > 1 and any(
                    isinstance(affine_step(uses.var2val[r], prev, out_shape, axis, uses.var2val), tuple)
                    for r in uses.users.get(prev, ()) if r in uses.var2val):
                chain.stop_reason = f"{prev.name} is read by {uses.count(prev)} ops"
            return chain
        step = None
        if reader in uses.var2val:
            step = affine_step(uses.var2val[reader], prev, out_shape, axis, uses.var2val)
        if step is None:
            return chain
        if isinstance(step, str):
            chain.stop_reason = step
            return chain
        op, apply = step
        chain.affine = apply(chain.affine)
        chain.steps.append((reader, op))
        prev = reader


def check_chain(chain: ScaleShiftChain) -> str | None:
    """``check``: why the chain cannot (or need not) be folded, None when it can."""
    if isinstance(chain.producer, str):
        return chain.producer
    if not chain.scales and len(chain.steps) < 2:
        return "nothing to fold: at most the producer's own bias follows it"
    return None


@graph_pass("FoldScaleShift")
class FoldScaleShift(GraphPass):
    """Fold per-channel multiply/divide/add/subtract chains into the preceding conv2d/matmul.

    After running, ``findings`` holds ``{"folded", "steps_folded", "declined": [{"producer", "reason"}]}``;
    a decline is recorded only where a scale step (or a cut-short chain) was found.
    """

    def new_findings(self) -> dict:
        return {"folded": 0, "steps_folded": 0, "declined": []}

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function | None:
        uses = BindingUses(func)
        chains = {}
        for value, var in uses.bound_to.items():
            chain = trace_chain(var, value, uses)
            if chain is None:
                continue
            reason = check_chain(chain)
            if reason is None:
                chains[chain.end] = chain
                continue
            if chain.scales or chain.stop_reason:
                self.findings["declined"].append(
                    {"producer": str(var.name), "reason": chain.stop_reason or reason}
                )
        if not chains:
            return None
        for chain in chains.values():
            self.findings["folded"] += 1
            self.findings["steps_folded"] += len(chain.steps)
        return relax.analysis.remove_all_unused(_ChainFolder(chains, mod).visit_expr(func))


@relax.expr_functor.mutator
class _ChainFolder(relax.PyExprMutator):
    """``rewrite``: bind each chain's last variable to ``producer(z, W') + b'``."""

    def __init__(self, chains: dict, mod: tvm.IRModule):
        super().__init__(mod)
        self.chains = chains

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        chain = self.chains.get(binding.var)
        if chain is None:
            super().visit_var_binding_(binding)
            return
        data = self.visit_expr(chain.producer.call.args[0])
        folded = emit_folded(self.builder_, chain.producer, chain.affine, data, str(chain.producer_var.name))
        rebind(self.builder_, binding.var, folded)

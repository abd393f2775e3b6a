"""Exact: cross-layer equalization of activation channel ranges ahead of per-tensor int8 activations.

Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV 2019,
section 4.1. For a producer convolution whose output only one convolution reads::

    y = act(W1 * x + b1)        z = W2 * y + b2

and an activation that is positively homogeneous per channel (none, ReLU, LeakyReLU, PReLU:
``act(v / s) = act(v) / s`` for ``s > 0``, with the slope of channel c unchanged), scaling output
channel ``c`` of the producer by ``1 / s_c`` and input channel ``c`` of the consumer by ``s_c``::

    W1[c] /= s_c,   b1[c] /= s_c     (or BN: gamma[c] /= s_c, beta[c] /= s_c)
    W2[:, c] *= s_c                  (depthwise W2: W2[c] *= s_c)

leaves ``z`` unchanged (exact up to float rounding) and divides channel ``c`` of ``y`` by ``s_c``.
A per-tensor int8 scale for ``y`` is set by its widest channel, so narrow channels keep only a few
levels; equalizing the channel ranges gives them all the full 256.

The scales come from calibrated per-channel ranges ``r_c`` (``hi_c - lo_c`` of ``y``, 0 included):

* depthwise consumer: ``s_c = r_c / max r``. Free: both convolutions' weights are quantized per
  output channel, whose scales absorb ``s_c`` exactly.
* dense consumer (groups = 1): ``s_c = sqrt(r_c / w_c)``, ``w_c = max_o |W2[o, c]| / max_c' |W2[o, c']|``
  (each input column's range relative to its output row, which is what per-output-channel weight
  quantization sees). This is Nagel's balance ``r_c / s_c = w_c s_c`` between the activation's
  and the consumer weight's relative precision.

Scales are clipped to ``[1 / MAX_BOOST, 1]`` relative to the largest: a channel 256x narrower than
the widest is below one int8 step; lifting it further costs the consumer's weight precision.
Lossless in float, so the pass makes no accuracy claim of its own: what it buys is measured by the
int8 accuracy tests (tests/quantization/test_cross_layer_equalization.py, SFace's cosine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..relax_utils import bound_constant, op_name
from ..transform.base import GraphPass, graph_pass
from .annotate import QuantChain, plan_quantization

HOMOGENEOUS = ("relax.nn.relu", "relax.nn.leakyrelu", "relax.nn.prelu")
MAX_BOOST = 256.0


@dataclass
class EqualizationPair:
    """A producer chain whose output ``tail`` only the conv2d ``consumer`` reads."""

    producer: QuantChain
    consumer: relax.Var
    depthwise: bool

    @property
    def tensor(self) -> relax.Var:
        return self.producer.tail


@dataclass
class EqualizationPlan:
    pairs: list[EqualizationPair] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)

    def tensors(self) -> list[relax.Var]:
        return [pair.tensor for pair in self.pairs]


def plan_equalization(func: relax.Function) -> EqualizationPlan:
    """The conv -> conv pairs of ``func`` that equalization can rescale (constants folded first)."""
    bindings, users = {}, {}
    for block in func.body.blocks:
        for binding in block.bindings:
            bindings[binding.var] = binding.value
            for used in relax.analysis.free_vars(binding.value):
                users.setdefault(used, []).append(binding.var)
    for used in relax.analysis.free_vars(func.body.body):
        users.setdefault(used, []).append(None)
    plan = EqualizationPlan()
    for chain in plan_quantization(func).chains:
        if chain.kind != "conv2d":
            continue
        name = chain.name
        act = op_name(chain.activation) if chain.activation is not None else None
        if act is not None and act not in HOMOGENEOUS:
            plan.declined.append(f"{name}: {act} is not positively homogeneous (act(v/s) != act(v)/s)")
            continue
        if chain.batch_norm is not None and not bool(chain.batch_norm.attrs.scale):
            plan.declined.append(f"{name}: batch norm without gamma")
            continue
        readers = users.get(chain.tail, [])
        if None in readers:
            plan.declined.append(f"{name}: a model output (rescaling it would change the result)")
            continue
        if len(readers) != 1:
            plan.declined.append(f"{name}: read by {len(readers)} ops, not by exactly one conv2d")
            continue
        consumer = readers[0]
        value = bindings[consumer]
        if op_name(value) != "relax.nn.conv2d" or not value.args[0].same_as(chain.tail) or \
                bound_constant(value.args[1]) is None:
            plan.declined.append(f"{name}: its reader {consumer.name} is not a conv2d with a constant weight")
            continue
        if str(value.attrs.data_layout) != "NCHW" or str(value.attrs.kernel_layout) != "OIHW":
            plan.declined.append(f"{name}: reader {consumer.name} has layout {value.attrs.data_layout}")
            continue
        channels = int(chain.anchor.ty.shape[1])
        groups = int(value.attrs.groups)
        if groups not in (1, channels):
            plan.declined.append(f"{name}: reader {consumer.name} is a grouped conv ({groups} groups)")
            continue
        plan.pairs.append(EqualizationPair(chain, consumer, depthwise=groups == channels and channels > 1))
    return plan


def equalization_scales(pair: EqualizationPair, lo: np.ndarray, hi: np.ndarray,
                        consumer_weight: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``s_c`` for one pair from the calibrated per-channel range ``[lo_c, hi_c]`` (see module doc)."""
    span = np.maximum(hi, 0.0) - np.minimum(lo, 0.0)
    if not np.any(span > 0):
        return np.ones_like(span)
    if pair.depthwise:
        scales = span
    else:
        w = np.abs(consumer_weight.astype(np.float64)).reshape(consumer_weight.shape[0], consumer_weight.shape[1], -1)
        w = w.max(axis=2)
        rows = w.max(axis=1, keepdims=True)
        relative = np.where(rows > 0, w / np.where(rows > 0, rows, 1.0), 0.0).max(axis=0)
        scales = span ** alpha / np.maximum(relative, 1e-12) ** (1.0 - alpha)
    scales = np.where(span > 0, scales, 0.0)
    scales = scales / scales.max()
    return np.clip(scales, 1.0 / MAX_BOOST, 1.0)


@relax.expr_functor.mutator
class _Rescaler(relax.PyExprMutator):
    def __init__(self, mod, edits: dict):
        super().__init__(mod)
        self.edits = edits  # binding var -> {argument index: new constant}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        edit = self.edits.get(binding.var)
        if edit is None:
            super().visit_var_binding_(binding)
            return
        call = binding.value
        args = [relax.const(edit[i].astype(np.float32)) if i in edit else self.visit_expr(a)
                for i, a in enumerate(call.args)]
        # Same var, new constants: names, dataflow/output kind and types stay as they were.
        new_call = self.builder_.normalize(relax.Call(call.op, args, call.attrs))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, new_call))


@graph_pass("CrossLayerEqualization")
class CrossLayerEqualization(GraphPass):
    """Rescale ``plan``'s pairs with ``channel_ranges`` (tensor -> (lo[C], hi[C]), from calibration);
    exact in float, see the module docstring. ``plan`` and the ranges refer to the vars of the module
    the plan was made on: run the pass on that module.

    After running, ``findings`` holds ``{"pairs", "equalized": [{"tensor", "consumer", "depthwise",
    "narrowest_channel_before", "narrowest_channel_after"}]}``: a row per rescaled pair, with the
    narrowest channel range relative to the widest before and after.
    """

    def __init__(self, plan: EqualizationPlan, channel_ranges: dict, alpha: float = 0.5):
        super().__init__()
        self.plan, self.channel_ranges, self.alpha = plan, channel_ranges, alpha

    def new_findings(self) -> dict:
        return {"pairs": 0, "equalized": []}

    def visits(self, gvar, func) -> bool:
        return isinstance(func, relax.Function) and gvar.name_hint == "main"  # the plan's variables are main's

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> tvm.IRModule:
        rescaler = _Rescaler(mod, self._edits(func))
        rescaler.builder_.update_func(gvar, rescaler.visit_expr(func))
        return rescaler.builder_.get()

    def _edits(self, func: relax.Function) -> dict:
        """binding var -> {argument index: rescaled constant}; every run starts from the module's own
        constants (running the pass twice is not scaling twice)."""
        edits: dict = {}
        bindings = {binding.var: binding.value for block in func.body.blocks for binding in block.bindings}

        def current(var, index, call):
            return edits.setdefault(var, {}).setdefault(index, bound_constant(call.args[index]).astype(np.float64))

        for pair in self.plan.pairs:
            if pair.tensor not in self.channel_ranges:
                continue
            lo, hi = (np.asarray(v, dtype=np.float64) for v in self.channel_ranges[pair.tensor])
            w2 = current(pair.consumer, 1, bindings[pair.consumer])
            scales = equalization_scales(pair, lo, hi, w2, self.alpha)
            chain = pair.producer
            if chain.batch_norm is not None:
                bn_var = next(v for v, val in bindings.items() if val.same_as(chain.batch_norm))
                current(bn_var, 1, chain.batch_norm)[:] /= scales
                if bool(chain.batch_norm.attrs.center):
                    current(bn_var, 2, chain.batch_norm)[:] /= scales
            else:
                anchor_var = next(v for v, val in bindings.items() if val.same_as(chain.anchor))
                w1 = current(anchor_var, 1, chain.anchor)
                w1 /= scales.reshape([-1] + [1] * (w1.ndim - 1))
                if chain.bias is not None:
                    bias_var, bias_index = _bias_binding(bindings, anchor_var)
                    b = current(bias_var, bias_index, bindings[bias_var])
                    b /= scales.reshape(b.shape) if b.size == scales.size else 1.0
            if pair.depthwise:
                multiplier = w2.shape[0] // scales.size
                w2 *= np.repeat(scales, multiplier).reshape([-1] + [1] * (w2.ndim - 1))
            else:
                w2 *= scales.reshape([1, -1] + [1] * (w2.ndim - 2))
            span = np.maximum(hi, 0.0) - np.minimum(lo, 0.0)
            live = span > 0
            self.findings["pairs"] += 1
            self.findings["equalized"].append({
                "tensor": str(pair.tensor.name), "consumer": str(pair.consumer.name),
                "depthwise": pair.depthwise,
                "narrowest_channel_before": float(span[live].min() / span.max()) if live.any() else 1.0,
                "narrowest_channel_after": float((span / scales)[live].min() / (span / scales).max())
                if live.any() else 1.0,
            })
        return edits


def _bias_binding(bindings: dict, anchor_var: relax.Var) -> tuple[relax.Var, int]:
    """The ``add`` binding of the bias after ``anchor_var`` and which of its arguments is the constant."""
    for var, value in bindings.items():
        if op_name(value) == "relax.add" and any(a.same_as(anchor_var) for a in value.args):
            return var, 1 if bound_constant(value.args[1]) is not None else 0
    raise KeyError(anchor_var.name)

"""Lossy: turn a float graph into a quantize/dequantize (QDQ) graph from calibrated ranges.

For every quantizable chain (the same form ``onnxruntime.quantization.quantize_static`` writes)::

    conv2d(x, W) [+ b] [batch_norm] [relu | clip | leakyrelu | prelu]  ->  y
    matmul(x, W) [+ b] [act]                                            ->  y
    add(a, b) [relu | clip]                                             ->  y

becomes ``dequantize(quantize(y))`` (only where another chain reads ``y``; else ``y`` stays float)
of a chain whose inputs are ``dequantize(quantize(x))`` and whose
weight is ``dequantize(W_q, s_w, 0, axis=out_channel)``, with batch norm folded into the weight
first (``W' = W k``, ``b' = (b - mean) k + beta``, ``k = gamma / sqrt(var + eps)``):

* activations per tensor, asymmetric int8 from the calibrated [lo, hi] (``activation_qparams``),
* weights per output channel, symmetric int8 (``quantize_weight_per_channel``); with
  ``reduce_range=True`` (``quantize_options``, ``--reduce-range``; off by default) a convolution's
  in the reduced range [-63, 63] (7 bits, onnxruntime's ``reduce_range``, FBGEMM's for the same
  int16 saturation on x86): the ARMv7 kernels then add 4 int8 x weight products in an int16 lane
  (4 * 128 * 63 = 32256 < 2^15) instead of 2 (2 * 128 * 127): the GEMM tile 72 a7 cycles per 256
  multiply-adds where full range takes 122 (``kernels.neon_q8_gemm``), the 3x3 depthwise 6 widening
  adds per pixel instead of 10 (``kernels.neon_q8_dwconv``). It costs accuracy: int8 against fp32
  on the evaluation faces of ``benchmarks/bench_quantization.py``, SFace embedding cosine min/mean
  0.9904/0.9951 -> 0.9873/0.9932 (below the 0.99 goal), MobileFaceNet 0.9875/0.9918 ->
  0.9862/0.9907, RetinaFace 320 box IoU min 0.9687 -> 0.9493, landmarks within 1.48 -> 1.38 px.
  So it is a choice the user makes (speed for accuracy), not the default: every weight in [-127, 127].
* a final matmul (one no other chain reads: the classifier or embedding layer) keeps a float
  input, int8 weights only: its long input vector loses the most to a per-tensor scale.

``FoldQuantScales`` then turns each chain into one integer kernel. Everything else stays float
between a dequantize and a quantize. The error this pass introduces is what the face-model tests
measure (embedding cosine, box IoU against the float model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..kernels.fixed_point import activation_qparams, quantize_weight_per_channel
from ..kernels.int8_nhwc import REDUCED_WEIGHT_MAX
from ..relax_utils import bound_constant, op_name
from ..transform.base import GraphPass, graph_pass

# The names Relax's block builder makes up for values that no model node names.
AUTO_NAME = re.compile(r"(lv|gv)\d*")

ACTIVATIONS = ("relax.nn.relu", "relax.clip", "relax.nn.leakyrelu", "relax.nn.prelu")


@dataclass
class QuantChain:
    """One chain to quantize: ``kind`` is "conv2d", "matmul" or "add"."""

    kind: str
    tail: relax.Var
    inputs: list[relax.Var]
    anchor: relax.Call
    bias: np.ndarray | None = None
    batch_norm: relax.Call | None = None
    activation: relax.Call | None = None
    covers: list[relax.Var] = field(default_factory=list)  # the bindings of the chain, anchor to tail

    @property
    def names(self) -> list[str]:
        """The names of the chain's bindings: the ONNX node names the importer bound them under, and the
        importer's own ``lv<N>`` names for values inside a node (a Conv's bias add is bound as the node)."""
        return [str(v.name) for v in self.covers or [self.tail]]

    @property
    def name(self) -> str:
        """The chain as a user knows it: its first binding named after a model node, else its tail."""
        return next((n for n in self.names if not AUTO_NAME.fullmatch(n)), str(self.tail.name))


@dataclass
class QuantPlan:
    chains: list[QuantChain] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def tensors_to_calibrate(self) -> list[relax.Var]:
        seen, out = set(), []
        for chain in self.chains:
            for var in [*chain.inputs, chain.tail]:
                if var not in seen:
                    seen.add(var)
                    out.append(var)
        return out


def _bindings_and_uses(func: relax.Function):
    bindings, uses = {}, {}
    for block in func.body.blocks:
        for binding in block.bindings:
            bindings[binding.var] = binding.value
            for var in relax.analysis.free_vars(binding.value):
                uses[var] = uses.get(var, 0) + 1
    for var in relax.analysis.free_vars(func.body.body):
        uses[var] = uses.get(var, 0) + 1
    return bindings, uses


def _is_float_tensor(var) -> bool:
    ty = getattr(var, "ty", None)
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32"


def plan_quantization(func: relax.Function) -> QuantPlan:
    """Find the chains to quantize in ``func`` (weights must already be constants: FoldConstant)."""
    bindings, uses = _bindings_and_uses(func)
    users: dict[relax.Var, list[relax.Var]] = {}
    for var, value in bindings.items():
        for used in relax.analysis.free_vars(value):
            users.setdefault(used, []).append(var)
    plan = QuantPlan()

    def single_user(var):
        if uses.get(var, 0) != 1 or len(users.get(var, [])) != 1:
            return None
        return users[var][0]

    for var, value in bindings.items():
        name = op_name(value)
        if name == "relax.nn.conv2d":
            weight = bound_constant(value.args[1])
            attrs = value.attrs
            if weight is None:
                plan.skipped.append(f"{var.name}: conv2d with a non-constant weight stays float")
                continue
            if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
                plan.skipped.append(f"{var.name}: conv2d layout {attrs.data_layout}/{attrs.kernel_layout} stays float")
                continue
            chain = QuantChain("conv2d", var, [value.args[0]], value)
        elif name == "relax.matmul":
            weight = bound_constant(value.args[1])
            if weight is None or weight.ndim != 2 or value.args[0].ty.ndim != 2:
                continue
            chain = QuantChain("matmul", var, [value.args[0]], value)
        elif name == "relax.add":
            a, b = value.args
            if not all(isinstance(v, relax.Var) and _is_float_tensor(v) for v in (a, b)) or \
                    a.ty.ndim != b.ty.ndim or any(bindings.get(v) is None and v not in func.params for v in (a, b)):
                continue
            chain = QuantChain("add", var, [a, b], value)
        else:
            continue
        if not all(isinstance(v, relax.Var) and _is_float_tensor(v) for v in chain.inputs):
            continue
        channels = int(chain.anchor.ty.shape[1]) if chain.kind != "matmul" else int(chain.anchor.ty.shape[-1])
        # Walk the single-user tail: bias, batch norm, activation.
        tail = var
        chain.covers = [var]
        while True:
            nxt = single_user(tail)
            if nxt is None:
                break
            nvalue = bindings[nxt]
            nname = op_name(nvalue)
            if chain.kind != "add" and nname == "relax.add" and chain.bias is None and chain.batch_norm is None \
                    and chain.activation is None:
                other = nvalue.args[1] if nvalue.args[0].same_as(tail) else nvalue.args[0]
                bias = bound_constant(other)
                if bias is None or bias.size != channels:
                    break
                chain.bias = bias.reshape(-1).astype(np.float64)
                tail = nxt
                chain.covers.append(nxt)
            elif chain.kind == "conv2d" and nname == "relax.nn.batch_norm" and chain.activation is None \
                    and chain.batch_norm is None and all(bound_constant(a) is not None for a in nvalue.args[1:]) \
                    and int(nvalue.attrs.axis) == 1:
                getters = [u for u in users.get(nxt, [])]
                if len(getters) < 1:
                    break
                first = [g for g in getters if isinstance(bindings[g], relax.TupleGetItem) and bindings[g].index == 0]
                if len(first) != 1 or any(uses.get(g, 0) for g in getters if g not in first):
                    break
                chain.batch_norm = nvalue
                tail = first[0]
                chain.covers += [nxt, tail]
            elif nname in ACTIVATIONS and chain.activation is None and nvalue.args[0].same_as(tail):
                if nname == "relax.nn.prelu" and (bound_constant(nvalue.args[1]) is None or int(nvalue.attrs.axis) != 1):
                    break
                if chain.kind == "add" and nname not in ("relax.nn.relu", "relax.clip"):
                    break
                chain.activation = nvalue
                tail = nxt
                chain.covers.append(nxt)
                break
            else:
                break
        chain.tail = tail
        plan.chains.append(chain)
    return plan


def _fold_batch_norm(weight: np.ndarray, bias: np.ndarray, bn: relax.Call) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (bound_constant(a).astype(np.float64) for a in bn.args[1:])
    attrs = bn.attrs
    if not bool(attrs.scale):
        gamma = np.ones_like(gamma)
    if not bool(attrs.center):
        beta = np.zeros_like(beta)
    k = gamma / np.sqrt(var + float(attrs.epsilon))
    return weight * k.reshape([-1] + [1] * (weight.ndim - 1)), (bias - mean) * k + beta


@relax.expr_functor.mutator
class _Annotator(relax.PyExprMutator):
    def __init__(self, mod, plan: QuantPlan, ranges: dict, channel_means: dict | None = None,
                 reduce_range: bool = False):
        super().__init__(mod)
        self.channel_means = channel_means or {}
        self.reduce_range = reduce_range
        self.by_tail = {chain.tail: chain for chain in plan.chains}
        self.ranges = ranges
        # A chain whose output no other chain reads keeps a float output (detector heads, the
        # embedding): int8 there would only round what float ops consume next.
        self.consumed = {var for chain in plan.chains for var in chain.inputs}
        self.annotated: dict[str, int] = {}

    def _qdq(self, value: relax.Expr, var: relax.Var) -> relax.Expr:
        params = activation_qparams(*self.ranges[var])
        scale = relax.const(params.scale, "float32")
        zero = relax.const(params.zero_point, "int8")
        q = self.builder_.emit(relax.op.quantize(value, scale, zero, axis=1, out_dtype="int8"))
        return self.builder_.emit(relax.op.dequantize(q, scale, zero, axis=1, out_dtype="float32"))

    def _weight(self, weight: np.ndarray, axis: int, qmax: int) -> relax.Expr:
        q, scale = quantize_weight_per_channel(weight, axis, qmax)
        zeros = np.zeros(scale.shape, dtype=np.int8)
        return self.builder_.emit(relax.op.dequantize(relax.const(q), relax.const(scale), relax.const(zeros),
                                                      axis=axis, out_dtype="float32"))

    def _weight_max(self, chain: QuantChain) -> int:
        """The largest |q_w| of ``chain``'s weights: reduced range for a conv (the NEON kernels')."""
        return REDUCED_WEIGHT_MAX if chain.kind == "conv2d" and self.reduce_range else 127

    def _bias_correction(self, chain: QuantChain, weight: np.ndarray) -> np.ndarray:
        """``E[(W_q - W) x]`` per output channel from the calibrated input means (Nagel et al., "Data-Free
        Quantization Through Weight Equalization and Bias Correction", ICCV 2019): the mean shift the
        rounded weights add, subtracted from the bias. Padding is ignored (interior positions)."""
        means = self.channel_means.get(chain.inputs[0])
        if means is None:
            return 0.0
        axis = 0 if chain.kind == "conv2d" else 1
        q, scale = quantize_weight_per_channel(weight, axis, self._weight_max(chain))
        shape = [1] * weight.ndim
        shape[axis] = -1
        error = q.astype(np.float64) * scale.astype(np.float64).reshape(shape) - weight
        if chain.kind == "matmul":
            return means @ error if means.size == error.shape[0] else 0.0
        groups = int(chain.anchor.attrs.groups)
        oc, icg = error.shape[:2]
        if means.size != icg * groups:
            return 0.0
        per_group = means.reshape(groups, icg)
        x_mean = np.repeat(per_group, oc // groups, axis=0)  # (oc, icg): the input channels each output reads
        return np.einsum("ocrs,oc->o", error, x_mean)

    def _emit_chain(self, chain: QuantChain) -> relax.Expr:
        if chain.kind == "matmul" and chain.tail not in self.consumed:
            # The classifier/embedding layer: weight-only int8 (see kernels.int8_nchw.int8_weight_dense).
            inputs = [self.visit_expr(v) for v in chain.inputs]
        else:
            inputs = [self._qdq(self.visit_expr(v), v) for v in chain.inputs]
        anchor = chain.anchor
        if chain.kind == "add":
            out = self.builder_.emit(relax.op.add(*inputs))
        else:
            weight = bound_constant(anchor.args[1]).astype(np.float64)
            channels = weight.shape[0] if chain.kind == "conv2d" else weight.shape[1]
            bias = chain.bias if chain.bias is not None else np.zeros(channels)
            if chain.batch_norm is not None:
                weight, bias = _fold_batch_norm(weight, bias, chain.batch_norm)
            correction = self._bias_correction(chain, weight)
            if np.any(correction != 0.0):
                bias = bias - correction
            if chain.kind == "conv2d":
                a = anchor.attrs
                out = self.builder_.emit(relax.op.nn.conv2d(
                    inputs[0], self._weight(weight, 0, self._weight_max(chain)), strides=a.strides, padding=a.padding, dilation=a.dilation,
                    groups=a.groups, data_layout="NCHW", kernel_layout="OIHW", out_dtype="float32"))
                bias_shape = (1, channels, 1, 1)
            else:
                out = self.builder_.emit(relax.op.matmul(inputs[0], self._weight(weight, 1, self._weight_max(chain))))
                bias_shape = (1, channels)
            if chain.bias is not None or chain.batch_norm is not None or np.any(bias != 0.0):
                out = self.builder_.emit(relax.op.add(out, relax.const(bias.reshape(bias_shape).astype(np.float32))))
        act = chain.activation
        if act is not None:
            args = [out, *act.args[1:]]
            out = self.builder_.emit(relax.Call(act.op, args, act.attrs))
        return self._qdq(out, chain.tail) if chain.tail in self.consumed else out

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        chain = self.by_tail.get(binding.var)
        if chain is None:
            super().visit_var_binding_(binding)
            return
        new = self._emit_chain(chain)
        self.annotated[chain.kind] = self.annotated.get(chain.kind, 0) + 1
        if not isinstance(binding.var, relax.DataflowVar):
            # A dataflow block output: the chain's last DataflowVar must not escape the block.
            new = self.builder_.emit_output(new)
        self.set_var_remap(binding.var, new)


@graph_pass("QuantizeAnnotate")
class QuantizeAnnotate(GraphPass):
    """Insert calibrated QDQ around ``plan``'s chains in ``main`` (lossy, see the module docstring);
    with ``channel_means`` (calibrated per-channel input means) the biases get bias correction;
    ``reduce_range=True`` puts conv weights in [-63, 63] (the faster ARMv7 kernels; module docstring).

    After running, ``findings`` holds ``{"chains", "by_kind": {"conv2d" | "matmul" | "add": n}}``.
    """

    def __init__(self, plan: QuantPlan, ranges: dict, channel_means: dict | None = None, reduce_range: bool = False):
        super().__init__()
        self.plan, self.ranges, self.channel_means = plan, ranges, channel_means
        self.reduce_range = reduce_range

    def new_findings(self) -> dict:
        return {"chains": 0, "by_kind": {}}

    def visits(self, gvar, func) -> bool:
        return isinstance(func, relax.Function) and gvar.name_hint == "main"  # the plan's variables are main's

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> tvm.IRModule:
        annotator = _Annotator(mod, self.plan, self.ranges, self.channel_means, self.reduce_range)
        annotator.builder_.update_func(gvar, annotator.visit_expr(func))
        self.findings["chains"] += sum(annotator.annotated.values())
        self.findings["by_kind"].update(annotator.annotated)
        return annotator.builder_.get()

    def finish(self, mod: tvm.IRModule) -> tvm.IRModule:
        return relax.transform.DeadCodeElimination()(mod)

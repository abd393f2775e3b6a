"""Fold quantize/dequantize scales into integer kernels: QDQ chains become int8 x int8 -> int32 ops.

Rules (each applies to a ``quantize`` whose producers, followed back, have one use each):

``conv2d``: ``quantize(act(conv2d(dequantize(q_x), dequantize(W_q)) + b), s_y, z_y)`` becomes one
  kernel (``kernels.int8_nchw.int8_conv2d_requantize``): int8 conv padded with ``z_x``, int32 bias
  ``round(b / (s_x s_w)) - z_x sum W_q``, requantize with the per-channel fixed-point multiplier
  ``M = s_x s_w / s_y`` and the activation folded in: ReLU/Clip into the final clamp, LeakyReLU
  and PReLU into a second multiplier ``alpha M`` for negative accumulators.
``matmul``: the same for ``matmul(dequantize(q_x), dequantize(W_q[K, M], axis=1))``.
``add``: ``quantize(act(dequantize(q_a) + dequantize(q_b)))`` becomes TFLite's int8 ADD.
``requantize``: ``quantize(dequantize(q, s1, z1), s2, z2)`` is ``q`` when the parameters are equal,
  else one rescale ``z2 + (s1/s2)(q - z1)``: consecutive scales fold into one.

Layout: a conv2d whose activations are int8 and weights in [-127, 127] (int8 x int8 products in
pairs fit int16) gets a channels-last kernel (``kernels.int8_nhwc``): 1x1 stride 1 with
``gemm_fits(C, O)`` a GEMM, other dense convolutions im2col + the GEMM (the GEMM's reduced-range
tile when the weights are in [-63, 63]), depthwise with ``C % 8 == 0`` its own; an ADD next to one of them too. Their inputs and outputs are NHWC, with ``permute_dims``
back to NCHW for every other consumer; a kernel reading a channels-last kernel's output takes the
NHWC tensor directly, so the transposes between them are dead code. ``report.channels_last`` counts
them.

Exact in the sense of integer-only inference: the result equals the numpy reference of the
quantized graph bit for bit (tests/quantization). It differs from evaluating the QDQ graph in
float by at most one unit of the int8 output (the fixed-point rounding of ``M``).
Chains that match no rule stay float; ``FoldQuantScales.report`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..kernels.fixed_point import integer_range, quantize_multiplier, quantize_multipliers
from ..kernels.int8_nhwc import (DEPTHWISE_LANES, GEMM_CHANNELS, REDUCED_WEIGHT_MAX, gemm_fits, im2col_depth,
                                   make_kernel, only_right_shifts, pack_depthwise_weights, pack_epilogue,
                                   pack_gemm_weights)
from ..kernels.int8_nchw import (int8_add_requantize, int8_conv2d_dequantize, int8_conv2d_requantize,
                               int8_dense_dequantize, int8_dense_requantize, int8_requantize_tensor,
                               int8_weight_dense)
from ..relax_utils import bound_constant, op_name, scalar_constant
from ..transform.base import GraphPass, graph_pass

# FuseOps must leave the integer kernels whole: edgetvm.schedules.int8 schedules them as written.
OPAQUE_PATTERN = 8
KERNEL_ATTRS = {"op_pattern": OPAQUE_PATTERN}
# NCHW <-> NHWC: the channels-last kernels (kernels.int8_nhwc) take and give NHWC tensors.
TO_NHWC = [0, 2, 3, 1]
TO_NCHW = [0, 3, 1, 2]
# Largest im2col matrix (bytes, int8) a dense KxK convolution may build; larger ones keep the NCHW kernel.
IM2COL_MAX_BYTES = 8 << 20


@dataclass
class FoldReport:
    """What one run folded, by kernel kind, and why each quantize it did not fold stayed float."""

    kernels: dict[str, int] = field(default_factory=dict)
    declined: list[str] = field(default_factory=list)
    # Of those, the ones computed by channels-last kernels (kernels.int8_nhwc), by kernel kind.
    channels_last: dict[str, int] = field(default_factory=dict)
    # The output variable of each declined quantize, in the order of ``declined``.
    declined_at: list[str] = field(default_factory=list)

    def count(self, kind: str) -> None:
        self.kernels[kind] = self.kernels.get(kind, 0) + 1

    def to_findings(self) -> dict:
        return {"folded": sum(self.kernels.values()), "kernels": dict(self.kernels),
                "channels_last": dict(self.channels_last),
                "declined": [{"quantize": at, "reason": why} for at, why in zip(self.declined_at, self.declined)]}


class _Decline(Exception):
    """A rule does not apply; the message says why (collected in the report)."""


@relax.expr_functor.mutator
class _Folder(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, func: relax.Function, report: FoldReport):
        super().__init__(mod)
        self.report = report
        self.bindings, self.uses = {}, {}
        for block in func.body.blocks:
            for binding in block.bindings:
                self.bindings[binding.var] = binding.value
                for var in relax.analysis.free_vars(binding.value):
                    self.uses[var] = self.uses.get(var, 0) + 1
        for var in relax.analysis.free_vars(func.body.body):
            self.uses[var] = self.uses.get(var, 0) + 1
        self.users: dict = {}
        for var, value in self.bindings.items():
            for used in relax.analysis.free_vars(value):
                self.users.setdefault(used, []).append(var)
        self._binding_var = None
        # NCHW var -> the NHWC var it is a transpose of: chained channels-last kernels skip the
        # transposes between them (unused ones are dead code).
        self._nhwc: dict = {}

    # -- helpers ---------------------------------------------------------------------------------
    def _static(self, expr) -> np.ndarray | None:
        """The value of ``expr`` if it is a constant, possibly reshaped (TVM's ONNX Conv converter
        binds its bias as ``reshape(const)``)."""
        value = bound_constant(expr)
        if value is not None:
            return value
        if isinstance(expr, relax.Var) and expr in self.bindings:
            return self._static(self.bindings[expr])
        if op_name(expr) in ("relax.reshape", "relax.expand_dims", "relax.squeeze"):
            inner = self._static(expr.args[0])
            if inner is not None:
                return inner.reshape([int(d) for d in expr.ty.shape])
        return None

    def _producer(self, expr, single_use: bool = True):
        if isinstance(expr, relax.Var) and expr in self.bindings:
            if single_use and self.uses.get(expr, 0) != 1:
                raise _Decline(f"{expr.name} has {self.uses.get(expr, 0)} uses")
            return self.bindings[expr]
        return expr

    def _dequantize_tensor(self, expr):
        """(q var, scale, zero point) of a per-tensor ``dequantize`` of a non-constant tensor."""
        call = self._producer(expr, single_use=False)
        if op_name(call) != "relax.dequantize":
            raise _Decline(f"input is {op_name(call) or type(call).__name__}, not dequantize")
        scale, zero = scalar_constant(call.args[1]), scalar_constant(call.args[2])
        if scale is None or zero is None:
            raise _Decline("activation dequantize is not per-tensor with constant parameters")
        data = call.args[0]
        if str(data.ty.dtype) not in ("int8", "uint8"):
            raise _Decline(f"activation dtype {data.ty.dtype} is not int8/uint8")
        return data, float(scale), int(zero)

    def _dequantize_weight(self, expr, axis: int):
        """(int8 weight, per-channel scale) of ``dequantize(W_q const, s_w, 0, axis)``."""
        call = self._producer(expr, single_use=False)
        transpose = False
        if op_name(call) == "relax.permute_dims" and axis == 1:
            call = self._producer(call.args[0], single_use=False)
            transpose = True
            axis = 0
        if op_name(call) != "relax.dequantize":
            raise _Decline("weight is not a dequantize of constant integers")
        q = bound_constant(call.args[0])
        if q is None or q.dtype != np.int8:
            raise _Decline("weight is not a constant int8 tensor")
        scale, zero = bound_constant(call.args[1]), bound_constant(call.args[2])
        if scale is None or zero is None:
            raise _Decline("weight scale or zero point is not constant")
        if np.any(zero != 0):
            raise _Decline("weight zero point is not 0 (asymmetric weights)")
        channels = q.shape[axis]
        if scale.size == 1:
            scale = np.full(channels, float(scale.reshape(-1)[0]))
        elif scale.size != channels or int(call.attrs.axis) % q.ndim != axis:
            raise _Decline("weight scale is neither per tensor nor per output channel")
        if transpose:
            q = q.T
        return q, scale.astype(np.float64).reshape(-1)

    def _activation(self, expr):
        """Peel an activation: (inner expr, kind, payload)."""
        call = self._producer(expr)
        name = op_name(call)
        if name == "relax.nn.relu":
            return call.args[0], "relu", None
        if name == "relax.clip":
            lo, hi = (float(getattr(a.value, "value", a.value)) for a in call.args[1:3])
            return call.args[0], "clip", (lo, hi)
        if name == "relax.nn.leakyrelu":
            return call.args[0], "leaky", float(call.attrs.alpha)
        if name == "relax.nn.prelu":
            alpha = bound_constant(call.args[1])
            if alpha is None or int(call.attrs.axis) != 1:
                raise _Decline("prelu slope is not a constant along the channel axis")
            return call.args[0], "prelu", alpha.astype(np.float64).reshape(-1)
        return expr, "none", None

    @staticmethod
    def _clamp(kind, payload, scale, zero, dtype):
        qmin, qmax = integer_range(dtype)
        lo, hi = qmin, qmax
        if kind == "relu":
            lo = max(qmin, zero)
        elif kind == "clip":
            lo = max(qmin, zero + int(np.ceil(payload[0] / scale - 1e-6)) if np.isfinite(payload[0]) else qmin)
            hi = min(qmax, zero + int(np.floor(payload[1] / scale + 1e-6)) if np.isfinite(payload[1]) else qmax)
        return lo, hi

    def _resolve(self, var):
        """Follow ``a = b`` aliases the mutator leaves behind."""
        seen = 0
        while isinstance(var, relax.Var) and seen < 16:
            bound = self.lookup_binding(var)
            if not isinstance(bound, relax.Var):
                break
            var, seen = bound, seen + 1
        return var

    def _channels_last(self, x):
        """The NHWC form of the (already visited) NCHW tensor ``x``."""
        found = self._nhwc.get(self._resolve(x))
        if found is not None:
            return found
        return self.builder_.emit(relax.op.permute_dims(x, TO_NHWC))

    def _is_channels_last(self, x) -> bool:
        return self._resolve(x) in self._nhwc

    def _emit_nhwc(self, kind: str, args: list, out_shape, y_dtype: str, **params):
        """Call the channels-last kernel ``kind``; returns its output transposed back to NCHW."""
        func = make_kernel(kind, **params).with_attr("op_pattern", OPAQUE_PATTERN) \
            .with_attr("tirx.is_scheduled", True)
        gvar = self.builder_.add_func(func, f"int8_{kind}_nhwc")
        y = self.builder_.emit(relax.call_tir(gvar, relax.Tuple(args), relax.TensorType(out_shape, y_dtype)))
        nchw = self.builder_.emit(relax.op.permute_dims(y, TO_NCHW))
        self._nhwc[nchw] = y
        self.report.channels_last[kind] = self.report.channels_last.get(kind, 0) + 1
        return nchw

    def _fold_linear_nhwc(self, m: dict, x_new, epilogue: list, *, out_dtype: str, y_zero: int, clamp,
                          negative: bool, float_out: bool, left_shift: bool, right_shift: bool = False):
        """A channels-last kernel for ``m`` when one fits (1x1, dense KxK or depthwise conv, int8 x int8
        in pairs), else None. ``epilogue``: bias, then (mpos, epos[, mneg, eneg]) or (out_scale,)."""
        if not m["conv"] or not m["pair"]:
            return None
        consts = [relax.const(a) for a in epilogue]
        # The GEMM and depthwise kernels take the requantize parameters packed per tile of 4 channels.
        packed_consts = consts if float_out else [relax.const(pack_epilogue(*epilogue))]
        attrs = self._conv_attrs(m["attrs"])
        w_q = m["w_q"]
        oc, icg, kh, kw = w_q.shape
        shape = [int(d) for d in x_new.ty.shape]
        channels = shape[1]
        common = {"out_dtype": out_dtype, "y_zero_point": int(y_zero), "clamp": [int(v) for v in clamp],
                  "negative": negative, "float_out": float_out, "left_shift": left_shift, "right_shift": right_shift}
        # Weights in [-63, 63] (QuantizeAnnotate's, ``quantize_weight_per_channel``) take the GEMM tile
        # with 4 products per int16 lane; a QDQ model's full-range weights the one with 2.
        reduced = bool(np.abs(w_q.astype(np.int16)).max(initial=0) <= REDUCED_WEIGHT_MAX)
        y_dtype = "float32" if float_out else out_dtype
        n, _, h, w = shape
        if (attrs["groups"] == 1 and (kh, kw) == (1, 1) and attrs["strides"] == [1, 1] and not any(attrs["padding"])
                and gemm_fits(channels, oc)):
            x_nhwc = self._channels_last(x_new)
            weights = relax.const(pack_gemm_weights(w_q.reshape(oc, icg), reduced))
            return self._emit_nhwc("conv1x1", [x_nhwc, weights] + packed_consts, [n, h, w, oc], y_dtype,
                                   x_shape=[n, h, w, channels], channels_out=int(oc), reduced=reduced, **common)
        if attrs["groups"] == 1 and oc % GEMM_CHANNELS == 0:
            pt, pl, pb, pr = attrs["padding"]
            (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
            oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
            ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
            depth = im2col_depth((kh, kw), channels)
            if n * oh * ow * depth <= IM2COL_MAX_BYTES:
                # The input stays NCHW unless its producer gives NHWC anyway: the gather reads either.
                nhwc_input = self._is_channels_last(x_new)
                x_in = self._channels_last(x_new) if nhwc_input else x_new
                w_cols = np.zeros((oc, depth), dtype=np.int8)
                w_cols[:, :kh * kw * icg] = w_q.transpose(0, 2, 3, 1).reshape(oc, -1)
                x_shape = [int(d) for d in x_in.ty.shape]
                return self._emit_nhwc("im2col", [x_in, relax.const(pack_gemm_weights(w_cols, reduced))] + packed_consts,
                                       [n, oh, ow, oc], y_dtype,
                                       x_shape=x_shape, x_layout="NHWC" if nhwc_input else "NCHW",
                                       channels_out=int(oc), kernel_size=[int(kh), int(kw)], strides=attrs["strides"],
                                       padding=attrs["padding"], dilation=attrs["dilation"],
                                       x_zero_point=int(m["x_zero"]), reduced=reduced, **common)
        if attrs["groups"] == channels == oc and icg == 1 and channels % DEPTHWISE_LANES == 0:
            pt, pl, pb, pr = attrs["padding"]
            (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
            oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
            ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
            x_nhwc = self._channels_last(x_new)
            w_rsc = w_q[:, 0].transpose(1, 2, 0)  # (C, 1, KH, KW) -> (KH, KW, C)
            return self._emit_nhwc("depthwise", [x_nhwc, relax.const(pack_depthwise_weights(w_rsc))] + packed_consts,
                                   [n, oh, ow, oc], y_dtype,
                                   x_shape=[n, h, w, channels], kernel_size=[int(kh), int(kw)],
                                   strides=attrs["strides"], padding=attrs["padding"], dilation=attrs["dilation"],
                                   x_zero_point=int(m["x_zero"]), reduced=reduced, **common)
        return None

    # -- rules -----------------------------------------------------------------------------------
    def _match_linear(self, expr) -> dict:
        """``conv2d|matmul(dequantize(q_x), dequantize(W_q)) [+ b]`` -> its integer parts."""
        value = self._producer(expr) if isinstance(expr, relax.Var) else expr
        bias = None
        if op_name(value) == "relax.add":
            lhs, rhs = value.args
            bias = self._static(rhs) if self._static(rhs) is not None else self._static(lhs)
            if bias is None:
                raise _Decline("add is not a constant bias")
            value = self._producer(lhs if self._static(rhs) is not None else rhs)
        name = op_name(value)
        attrs = value.attrs if name == "relax.nn.conv2d" else None
        if name == "relax.nn.conv2d":
            if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
                raise _Decline(f"conv2d layout {attrs.data_layout}/{attrs.kernel_layout}")
            w_q, w_scale = self._dequantize_weight(value.args[1], 0)
        elif name == "relax.matmul":
            w_q, w_scale = self._dequantize_weight(value.args[1], 1)
            if value.args[0].ty.ndim != 2:
                raise _Decline("matmul input is not 2-D")
        else:
            raise _Decline(f"no conv2d/matmul under the quantize (found {name})")
        x_q, x_scale, x_zero = self._dequantize_tensor(value.args[0])
        channels = w_scale.size
        bias = np.zeros(channels) if bias is None else bias.astype(np.float64).reshape(-1)
        if bias.size != channels:
            raise _Decline("bias is not per output channel")
        acc_scale = x_scale * w_scale
        # Sum over everything but the output channel (axis 0 of OIHW, axis 1 of K x M).
        w_sum = w_q.astype(np.int64).reshape(channels, -1).sum(axis=1) if name == "relax.nn.conv2d" \
            else w_q.astype(np.int64).sum(axis=0)
        bias_q = np.rint(bias / acc_scale).astype(np.int64) - x_zero * w_sum
        if np.any(np.abs(bias_q) >= 2**31):
            raise _Decline("bias does not fit int32")
        return {"conv": name == "relax.nn.conv2d", "attrs": attrs, "w_q": w_q, "x_q": x_q, "x_zero": x_zero,
                "acc_scale": acc_scale, "bias_q": bias_q.astype(np.int32), "channels": channels,
                "pair": bool(w_q.min() > -128) and str(x_q.ty.dtype) == "int8"}

    def _conv_attrs(self, attrs) -> dict:
        return {"strides": [int(v) for v in attrs.strides], "padding": [int(v) for v in attrs.padding],
                "dilation": [int(v) for v in attrs.dilation], "groups": int(attrs.groups)}

    def _fold_linear(self, call: relax.Call):
        """conv2d / matmul chain ending in ``call`` (a quantize)."""
        y_scale, y_zero = scalar_constant(call.args[1]), scalar_constant(call.args[2])
        if y_scale is None or y_zero is None:
            raise _Decline("output quantize is not per-tensor")
        out_dtype = str(call.attrs.out_dtype)
        inner, act, payload = self._activation(call.args[0])
        m = self._match_linear(inner)
        channels = m["channels"]
        real = m["acc_scale"] / y_scale
        if act == "leaky":
            real_neg = real * payload
        elif act == "prelu":
            real_neg = real * (payload if payload.size == channels else np.full(channels, payload[0]))
        else:
            real_neg = real
        mpos, epos = quantize_multipliers(real)
        mneg, eneg = quantize_multipliers(real_neg)
        clamp = self._clamp(act, payload, y_scale, int(y_zero), out_dtype)
        consts = [relax.const(m["bias_q"]), relax.const(mpos), relax.const(epos)]
        if act in ("leaky", "prelu"):
            # ReLU needs no second multiplier: clamping at z_y is ReLU in the quantized domain.
            consts += [relax.const(mneg), relax.const(eneg)]
        x_new = self.visit_expr(m["x_q"])
        left_shift = bool(np.any(epos > 0) or np.any(eneg > 0))
        epilogue = [m["bias_q"], mpos, epos] + ([mneg, eneg] if act in ("leaky", "prelu") else [])
        # Every multiplier a right shift of at least 1 (the usual case: M = s_x s_w / s_y < 0.5): the
        # NEON requantize skips gating its rounding fixup by the shift.
        right_shift = not left_shift and only_right_shifts(epilogue[1::2], epilogue[2::2])
        nhwc = self._fold_linear_nhwc(m, x_new, epilogue, out_dtype=out_dtype, y_zero=int(y_zero), clamp=clamp,
                                      negative=act in ("leaky", "prelu"), float_out=False, left_shift=left_shift,
                                      right_shift=right_shift)
        if nhwc is not None:
            self.report.count("conv2d")
            return nhwc
        if m["conv"]:
            self.report.count("conv2d")
            return self.builder_.call_te(
                int8_conv2d_requantize, x_new, relax.const(m["w_q"]), *consts, **self._conv_attrs(m["attrs"]),
                x_zero_point=m["x_zero"], y_zero_point=int(y_zero), clamp=clamp, out_dtype=out_dtype,
                pair_products=m["pair"], primfunc_name_hint="int8_conv2d", primfunc_attrs=KERNEL_ATTRS)
        self.report.count("dense")
        return self.builder_.call_te(
            int8_dense_requantize, x_new, relax.const(np.ascontiguousarray(m["w_q"])), *consts,
            y_zero_point=int(y_zero), clamp=clamp, out_dtype=out_dtype, pair_products=m["pair"],
            primfunc_name_hint="int8_dense", primfunc_attrs=KERNEL_ATTRS)

    def _feeds_quantize(self, var) -> bool:
        users = self.users.get(var, [])
        if len(users) != 1:
            return False
        name = op_name(self.bindings[users[0]])
        if name == "relax.quantize":
            return True
        return name in ("relax.nn.relu", "relax.clip", "relax.nn.leakyrelu", "relax.nn.prelu") and \
            self._feeds_quantize(users[0])

    def _fold_weight_only_dense(self, call: relax.Call):
        """``matmul(x_float, dequantize(W_q[K, M], axis=1)) [+ b]``: int8 weights, float arithmetic."""
        var = self._binding_var
        value = call
        bias = None
        if op_name(call) == "relax.add":
            lhs, rhs = call.args
            bias = self._static(rhs) if self._static(rhs) is not None else self._static(lhs)
            if bias is None:
                raise _Decline("add is not a constant bias")
            value = self._producer(lhs if self._static(rhs) is not None else rhs)
        elif var is not None:
            users = self.users.get(var, [])
            if len(users) == 1 and op_name(self.bindings[users[0]]) == "relax.add" and \
                    any(self._static(a) is not None for a in self.bindings[users[0]].args):
                raise _Decline("the bias add after it is folded instead")
        if op_name(value) != "relax.matmul" or value.args[0].ty.ndim != 2 or \
                str(value.args[0].ty.dtype) != "float32":
            raise _Decline("not a 2-D float matmul")
        if op_name(self._producer(value.args[0], single_use=False)) == "relax.dequantize":
            raise _Decline("integer input: the integer rules handle it")
        w_q, w_scale = self._dequantize_weight(value.args[1], 1)
        channels = w_scale.size
        bias = np.zeros(channels) if bias is None else bias.astype(np.float64).reshape(-1)
        self.report.count("dense_weight_only")
        return self.builder_.call_te(
            int8_weight_dense, self.visit_expr(value.args[0]), relax.const(np.ascontiguousarray(w_q)),
            relax.const(w_scale.astype(np.float32)), relax.const(bias.astype(np.float32)),
            primfunc_name_hint="int8_weight_dense", primfunc_attrs=KERNEL_ATTRS)

    def _fold_linear_float_output(self, call: relax.Call):
        """``conv2d|matmul(dequantize(q_x), dequantize(W_q)) [+ b]`` whose result only float ops use:
        integer accumulation, float output ``float(acc) s_x s_w``."""
        var = self._binding_var
        if var is None or self._feeds_quantize(var):
            raise _Decline("a quantize follows: the requantizing rule handles it")
        if op_name(call) != "relax.add":
            users = self.users.get(var, [])
            if len(users) == 1 and op_name(self.bindings[users[0]]) == "relax.add" and \
                    any(self._static(a) is not None for a in self.bindings[users[0]].args):
                raise _Decline("the bias add after it is folded instead")
        m = self._match_linear(call)
        x_new = self.visit_expr(m["x_q"])
        scale = relax.const(m["acc_scale"].astype(np.float32))
        nhwc = self._fold_linear_nhwc(m, x_new, [m["bias_q"], m["acc_scale"].astype(np.float32)], out_dtype="float32", y_zero=0,
                                      clamp=(0, 0), negative=False, float_out=True, left_shift=False)
        if nhwc is not None:
            self.report.count("conv2d_float_out")
            return nhwc
        if m["conv"]:
            self.report.count("conv2d_float_out")
            return self.builder_.call_te(
                int8_conv2d_dequantize, x_new, relax.const(m["w_q"]), relax.const(m["bias_q"]), scale,
                **self._conv_attrs(m["attrs"]), x_zero_point=m["x_zero"], pair_products=m["pair"],
                primfunc_name_hint="int8_conv2d_float", primfunc_attrs=KERNEL_ATTRS)
        self.report.count("dense_float_out")
        return self.builder_.call_te(
            int8_dense_dequantize, x_new, relax.const(np.ascontiguousarray(m["w_q"])), relax.const(m["bias_q"]), scale,
            pair_products=m["pair"], primfunc_name_hint="int8_dense_float", primfunc_attrs=KERNEL_ATTRS)

    def _fold_add(self, call: relax.Call):
        y_scale, y_zero = scalar_constant(call.args[1]), scalar_constant(call.args[2])
        if y_scale is None or y_zero is None:
            raise _Decline("output quantize is not per-tensor")
        inner, act, payload = self._activation(call.args[0])
        if act not in ("none", "relu", "clip"):
            raise _Decline(f"{act} after add")
        value = self._producer(inner)
        if op_name(value) != "relax.add":
            raise _Decline("not an add")
        a_q, a_scale, a_zero = self._dequantize_tensor(value.args[0])
        b_q, b_scale, b_zero = self._dequantize_tensor(value.args[1])
        if a_q.ty.ndim < b_q.ty.ndim or str(a_q.ty.dtype) != str(b_q.ty.dtype):
            raise _Decline("add operands differ in rank or dtype")
        twice_max = 2.0 * max(a_scale, b_scale)
        out_dtype = str(call.attrs.out_dtype)
        params = {"a_zero_point": a_zero, "a_mult": quantize_multiplier(a_scale / twice_max), "b_zero_point": b_zero,
                  "b_mult": quantize_multiplier(b_scale / twice_max), "y_zero_point": int(y_zero),
                  "y_mult": quantize_multiplier(twice_max / ((1 << 20) * y_scale)),
                  "clamp": self._clamp(act, payload, y_scale, int(y_zero), out_dtype), "out_dtype": out_dtype}
        a_new, b_new = self.visit_expr(a_q), self.visit_expr(b_q)
        shape = [int(d) for d in a_q.ty.shape]
        if (str(a_q.ty.dtype) == "int8" and [int(d) for d in b_q.ty.shape] == shape and len(shape) == 4
                and int(np.prod(shape)) % 8 == 0 and (self._is_channels_last(a_new) or self._is_channels_last(b_new))):
            # Elementwise, so any layout: the one of the channels-last kernels around it.
            self.report.count("add")
            nhwc_shape = [shape[0], shape[2], shape[3], shape[1]]
            return self._emit_nhwc("add", [self._channels_last(a_new), self._channels_last(b_new)], nhwc_shape,
                                   out_dtype, shape=nhwc_shape, **{k: (list(v) if isinstance(v, tuple) else v)
                                                                  for k, v in params.items()})
        self.report.count("add")
        return self.builder_.call_te(int8_add_requantize, a_new, b_new, **params,
                                     primfunc_name_hint="int8_add", primfunc_attrs=KERNEL_ATTRS)

    def _fold_requantize(self, call: relax.Call):
        y_scale, y_zero = scalar_constant(call.args[1]), scalar_constant(call.args[2])
        if y_scale is None or y_zero is None:
            raise _Decline("output quantize is not per-tensor")
        q, scale, zero = self._dequantize_tensor(call.args[0])
        out_dtype = str(call.attrs.out_dtype)
        if np.float32(scale) == np.float32(y_scale) and zero == int(y_zero) and str(q.ty.dtype) == out_dtype:
            self.report.count("identity")
            return self.visit_expr(q)
        self.report.count("requantize")
        qmin, qmax = integer_range(out_dtype)
        return self.builder_.call_te(
            int8_requantize_tensor, self.visit_expr(q), in_zero_point=zero,
            mult=quantize_multiplier(scale / y_scale), out_zero_point=int(y_zero), clamp=(qmin, qmax),
            out_dtype=out_dtype, primfunc_name_hint="int8_requantize", primfunc_attrs=KERNEL_ATTRS)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        self._binding_var = binding.var
        super().visit_var_binding_(binding)
        self._binding_var = None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        name = op_name(call)
        if name == "relax.quantize" and str(call.attrs.out_dtype) in ("int8", "uint8"):
            reasons = []
            for rule in (self._fold_linear, self._fold_add, self._fold_requantize):
                try:
                    return rule(call)
                except _Decline as why:
                    reasons.append(f"{rule.__name__[6:]}: {why}")
            self.report.declined.append("; ".join(reasons))
            self.report.declined_at.append(str(self._binding_var.name) if self._binding_var is not None else "?")
        elif name in ("relax.nn.conv2d", "relax.matmul", "relax.add"):
            for rule in (self._fold_linear_float_output, self._fold_weight_only_dense):
                try:
                    return rule(call)
                except _Decline:
                    pass  # not an integer-input chain, or the requantizing rule takes it
        return super().visit_call_(call)


@graph_pass("FoldQuantScales")
class FoldQuantScales(GraphPass):
    """QDQ chains -> integer kernels (see the module docstring): ``FoldQuantScales()(mod)``.

    After running, ``report`` (a :class:`FoldReport`) holds what it folded and declined, and
    ``findings`` the same as ``{"folded", "kernels", "channels_last", "declined": [{"quantize", "reason"}]}``.
    """

    def __init__(self):
        super().__init__()
        self.report = FoldReport()

    def new_findings(self) -> dict:
        self.report = FoldReport()
        return self.report.to_findings()

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> tvm.IRModule:
        folder = _Folder(mod, func, self.report)
        folder.builder_.update_func(gvar, folder.visit_expr(func))
        return folder.builder_.get()

    def finish(self, mod: tvm.IRModule) -> tvm.IRModule:
        self.findings = self.report.to_findings()
        return relax.transform.DeadCodeElimination()(mod)

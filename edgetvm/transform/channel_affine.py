"""Per-output-channel affine maps ``y = x * scale + shift`` and folding them into conv2d / matmul.

A linear producer (conv2d of any group count and layout, or matmul with a constant weight) followed
by a per-channel affine map computes, for output channel ``c``,

    y[..., c, ...] = (W[c] * x)[...] * scale[c] + shift[c]  =  (W'[c] * x)[...] + b'[c]
    W'[c] = W[c] * scale[c],   b'[c] = shift[c]

The bias the producer may already carry is itself an affine step (scale 1, shift b), so the chain
``conv -> add(b) -> batch_norm`` composes into one map whose shift is ``(b - mean) * s + beta``.
This is the weight side of Jacob et al. 2018 ("Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", section 3.2, batch-norm folding), without the
quantization.

This module holds what the folding passes share: the live-use count of every binding, the
description of a linear producer, and emitting the folded ``conv2d + add(bias)`` (constants, shapes
and op names are read with :mod:`edgetvm.relax_utils`). The passes themselves
(``fold_batch_norm.py``, ``fold_scale_shift.py``) decide *when* a fold is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from ..relax_utils import constant_value, is_float, op_name, short_op, static_shape


class BindingUses:
    """Who reads each bound variable, counting only bindings that are themselves live.

    The ONNX frontend binds ``bn[1]`` and ``bn[2]`` (the running statistics) even when nothing reads
    them; counting those dead reads would make every batch_norm look shared.
    """

    def __init__(self, func: relax.Function):
        self.var2val = relax.analysis.get_var2val(func)
        self.bound_to: dict[relax.Expr, relax.Var] = {}
        bindings = []
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.bound_to[binding.value] = binding.var
                bindings.append(binding)
        live: set = set(relax.analysis.free_vars(func.body.body))
        for binding in reversed(bindings):
            if binding.var in live or not isinstance(binding.var, relax.DataflowVar):
                live.update(relax.analysis.free_vars(binding.value))
        self.users: dict[relax.Var, list[relax.Var]] = {}
        for binding in bindings:
            if binding.var in live or not isinstance(binding.var, relax.DataflowVar):
                for var in relax.analysis.free_vars(binding.value):
                    self.users.setdefault(var, []).append(binding.var)
        self.outputs = set(relax.analysis.free_vars(func.body.body))

    def count(self, var: relax.Var) -> int:
        """Live reads of ``var``, the function's result counting as one."""
        return len(self.users.get(var, ())) + (1 if var in self.outputs else 0)

    def sole_user(self, var: relax.Var) -> relax.Var | None:
        users = self.users.get(var, ())
        return users[0] if len(users) == 1 and var not in self.outputs else None


@dataclass
class LinearProducer:
    """A conv2d or matmul whose weight is a compile-time constant, and where its channels live."""

    call: relax.Call
    kind: str  # "conv2d" | "matmul"
    weight: np.ndarray
    weight_channel_axis: int  # 'O' of the kernel layout; the last axis of a matmul weight
    channel_axis: int  # 'C' of the output layout; the last axis of a matmul output
    out_shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.out_shape[self.channel_axis]


def linear_producer(call, var2val) -> LinearProducer | str:
    """Describe ``call`` as a linear producer, or say why it is not one that can absorb a scale."""
    name = op_name(call)
    if name not in ("relax.nn.conv2d", "relax.matmul"):
        return f"produced by {short_op(call)}, not by conv2d or matmul"
    kind = name.rsplit(".", 1)[-1]
    out_shape = static_shape(call)
    if out_shape is None:
        return f"the {kind} output has no static shape"
    if not is_float(call):
        return f"the {kind} computes in {call.ty.dtype}, not floating point"
    if kind == "conv2d":
        attrs = call.attrs
        out_layout, kernel_layout = str(attrs.out_layout), str(attrs.kernel_layout)
        if sorted(out_layout) != sorted("NCHW") or sorted(kernel_layout) != sorted("OIHW"):
            return f"conv2d uses the packed layouts {out_layout}/{kernel_layout}"
        weight = constant_value(call.args[1], var2val)
        if weight is None:
            return "the conv2d weight is not a compile-time constant"
        if str(weight.dtype) != str(call.ty.dtype):
            return f"the conv2d accumulates {weight.dtype} weights into {call.ty.dtype}"
        return LinearProducer(call, kind, weight, kernel_layout.index("O"), out_layout.index("C"), out_shape)
    weight = constant_value(call.args[1], var2val)
    if weight is None:
        return "the matmul weight (second operand) is not a compile-time constant"
    if weight.ndim < 2:
        return f"the matmul weight has rank {weight.ndim}; a matrix-vector product has no output channels"
    if str(weight.dtype) != str(call.ty.dtype):
        return f"the matmul accumulates {weight.dtype} weights into {call.ty.dtype}"
    return LinearProducer(call, kind, weight, weight.ndim - 1, len(out_shape) - 1, out_shape)


def per_channel(value: np.ndarray, out_shape: tuple[int, ...], axis: int) -> np.ndarray | str:
    """``value`` as a length-C vector if it broadcasts against ``out_shape`` along ``axis`` only."""
    if value.ndim > len(out_shape):
        return f"the constant of shape {list(value.shape)} has more axes than the {list(out_shape)} output"
    aligned = (1,) * (len(out_shape) - value.ndim) + tuple(value.shape)
    for i, (size, out) in enumerate(zip(aligned, out_shape)):
        if size != 1 and (i != axis or size != out):
            return (
                f"the constant of shape {list(value.shape)} varies along axis {i} of the {list(out_shape)} "
                f"output; only the output-channel axis {axis} can be folded"
            )
    flat = value.reshape(aligned)
    index = tuple(slice(None) if i == axis else 0 for i in range(len(out_shape)))
    return np.broadcast_to(flat[index], (out_shape[axis],))


@dataclass
class ChannelAffine:
    """``y[c] = x[c] * scale[c] + shift[c]``, in float64 so composing steps adds no rounding."""

    scale: np.ndarray
    shift: np.ndarray

    @classmethod
    def identity(cls, channels: int) -> ChannelAffine:
        return cls(np.ones(channels), np.zeros(channels))

    def then_scale(self, factor: np.ndarray) -> ChannelAffine:
        return ChannelAffine(self.scale * factor, self.shift * factor)

    def then_shift(self, offset: np.ndarray) -> ChannelAffine:
        return ChannelAffine(self.scale, self.shift + offset)


def batch_norm_affine(gamma, beta, mean, var, epsilon: float) -> ChannelAffine:
    """Inference batch norm as ``x * s + t``: ``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``."""
    s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)
    return ChannelAffine(s, np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * s)


def channel_shape(channels: int, rank: int, axis: int) -> tuple[int, ...]:
    """How a per-channel vector is shaped to broadcast: ``(C,)`` on the last axis, ``(1, C, 1, 1)`` else."""
    if axis == rank - 1:
        return (channels,)
    return tuple(channels if i == axis else 1 for i in range(rank))


def emit_folded(builder: relax.BlockBuilder, producer: LinearProducer, affine: ChannelAffine,
                data: relax.Expr, name: str) -> relax.Expr:
    """Emit ``producer(data)`` with ``W' = W * scale``; return ``add(it, shift)`` (not yet bound)."""
    dtype = producer.weight.dtype
    weight_shape = [1] * producer.weight.ndim
    weight_shape[producer.weight_channel_axis] = producer.channels
    weight = (producer.weight.astype(np.float64) * affine.scale.reshape(weight_shape)).astype(dtype)
    call = producer.call
    folded = builder.emit(relax.Call(call.op, [data, relax.const(weight)], call.attrs), name_hint=name)
    rank = len(producer.out_shape)
    bias = affine.shift.astype(dtype).reshape(channel_shape(producer.channels, rank, producer.channel_axis))
    return relax.op.add(folded, relax.const(bias))


def emit_scale_shift(x: relax.Expr, affine: ChannelAffine, out_shape: tuple[int, ...], axis: int,
                     dtype: str) -> relax.Expr:
    """``x * scale + shift`` with both as constants broadcast along ``axis``."""
    shape = channel_shape(len(affine.scale), len(out_shape), axis)
    scale = relax.const(affine.scale.astype(dtype).reshape(shape))
    shift = relax.const(affine.shift.astype(dtype).reshape(shape))
    return relax.op.add(relax.op.multiply(x, scale), shift)


def rebind(builder: relax.BlockBuilder, var: relax.Var, value: relax.Expr) -> None:
    """Bind the original ``var`` to a new value, so its users and its dataflow-ness stay as they were."""
    builder.emit_normalized(relax.VarBinding(var, builder.normalize(value)))

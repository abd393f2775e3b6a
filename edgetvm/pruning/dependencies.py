"""Which channels of a Relax graph must be pruned together: a dependency analysis on the dataflow.

Every tensor axis that carries channels (axis 1 of an NCHW or NC activation; the filter, input and
per-channel axes of a weight) becomes a row of nodes ``(tensor, axis, index)`` in a ``networkx``
graph. An edge says "these two channels are the same channel": removing one forces removing the
other. The edges come from what each op means, channel by channel:

    conv2d, groups=1       W[o, :] is output channel o; W[:, i] reads input channel i
    depthwise conv2d       input channel c feeds only outputs c*m .. c*m+m-1 (m = multiplier)
    dense (matmul x @ W)   W[f, :] reads feature f; W[:, o] is output feature o
    residual add/sub/mul   a[c] and b[c] are combined into out[c]
    bias, BN, PReLU, scale the parameter's entry c belongs to channel c
    concat (axis 1)        input k's channel c is output channel offset_k + c
    split / strided_slice  output channel c is input channel begin + c
    flatten -> dense       channel c becomes the H*W features c*H*W .. (c+1)*H*W - 1

A connected component is a *unit*: the smallest set of channels that can be removed at once.
Units whose nodes touch the same tensors form a :class:`DependencyGroup`, pruned as one layer.
Whatever the analysis cannot prove safe (an op it does not know, a grouped convolution, a reshape
that moves the channel axis, a model input or output) blocks the nodes it touches, and every unit
containing a blocked node is left alone; the reason names the op and why. Nothing is guessed.

The function is expected with its weights lifted to parameters (see :func:`.weights.lift_weights`),
so that every weight has a name and a value: ``weights[name] -> numpy array``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import tvm
from tvm import relax

Node = tuple  # (tensor key, axis, index)

# Ops that act on each element alone: channel c of the output is channel c of the input.
ELEMENTWISE_UNARY = {
    "relax.nn.relu", "relax.nn.relu6", "relax.nn.leakyrelu", "relax.nn.silu", "relax.nn.gelu",
    "relax.nn.gelu_tanh", "relax.sigmoid", "relax.tanh", "relax.clip", "relax.exp", "relax.sqrt",
    "relax.rsqrt", "relax.negative", "relax.abs", "relax.astype", "relax.square", "relax.log",
    "relax.nn.hardswish", "relax.hardswish", "relax.erf", "relax.floor", "relax.ceil", "relax.round",
    "relax.nn.softplus", "relax.nn.elu", "relax.nn.selu", "relax.reciprocal",
}
ELEMENTWISE_BINARY = {
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum",
    "relax.power",
}
SPATIAL_WINDOW = {
    "relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d", "relax.nn.adaptive_max_pool2d",
    "relax.image.resize2d",
}
REDUCTIONS = {"relax.mean", "relax.sum", "relax.max", "relax.min", "relax.prod", "relax.variance"}
# Ops that only rearrange a weight: a chain of them from a weight is still "that weight".
WEIGHT_VIEWS = {"relax.reshape", "relax.permute_dims", "relax.expand_dims", "relax.squeeze", "relax.astype"}


@dataclass
class Producer:
    """An op whose output channels are its own filters: ``weight`` row ``axis`` index o makes channel o."""

    layer: str  # the weight's name: what users write in per-layer ratios and masks
    op: str
    out: str  # key of the output tensor
    weight: str  # key of the weight tensor (leaf or a view of one)
    axis: int  # filter axis in ``weight``


@dataclass
class Consumer:
    """A conv2d (groups=1) or dense layer that sums over its input channels.

    Removing input channel c drops ``W[:, c] * x[c]`` from its output: the contribution that lossless
    removal folds into a bias and least-squares recovery compensates.
    """

    kind: str  # "conv2d" | "dense"
    out: str
    data: str
    weight: str  # key of the weight as the op sees it (OIHW for conv2d, [F, O] for dense)
    leaf: str  # the weight parameter it comes from
    attrs: dict = field(default_factory=dict)  # strides, padding, dilation for conv2d
    to_leaf: tuple = ()  # ("permute", axes) / ("reshape", shape) ops turning the op's view back into the leaf


@dataclass
class DependencyGroup:
    """Units (channel sets removed as one) that touch the same tensors: pruned like one layer."""

    name: str
    tensors: list[str]
    units: list[frozenset]
    producers: list[Producer]
    blocked: list[str]  # why the group must be left alone; empty if prunable

    @property
    def prunable(self) -> bool:
        return not self.blocked

    def to_json(self) -> dict:
        return {"name": self.name, "channels": len(self.units), "tensors": self.tensors,
                "layers": sorted({p.layer for p in self.producers}), "blocked": self.blocked}


@dataclass
class TensorInfo:
    key: str
    shape: tuple
    kind: str  # "input" | "activation" | "weight" | "view" (a rearranged weight)
    source: tuple | None = None  # for a view: (key of what it views, op name, attrs)


class ChannelDependencies:
    """The result of :func:`analyze_channel_dependencies`."""

    def __init__(self):
        self.graph = nx.Graph()
        self.tensors: dict[str, TensorInfo] = {}
        self.tracked: set[tuple[str, int]] = set()
        self.blocked_axes: dict[tuple[str, int], str] = {}
        self.producers: list[Producer] = []
        self.consumers: list[Consumer] = []
        self.batch_norms: list[tuple[str, str]] = []  # (output key, gamma key)
        self.depthwise: list[str] = []  # output keys of depthwise convs
        self.channel_splits: list[tuple[str, list[str]]] = []  # (input key, output keys) of splits on axis 1
        self.channel_slices: list[tuple[str, str, int]] = []  # (input key, output key, start) of slices on axis 1
        self.constant_channels: dict[str, np.ndarray] = {}  # activation key -> channel is input-independent
        self.groups: list[DependencyGroup] = []
        self.unanalysed: list[tuple[str, str]] = []  # (layer output, why) for convs/dense layers left out
        self.order: list[str] = []  # activation keys in topological (binding) order
        self.dataflow = nx.DiGraph()  # activation key -> activation keys computed from it
        self.var_of: dict[str, relax.Var] = {}  # key -> the first Relax var bound to it

    # -- what users see -------------------------------------------------------------------------
    def prunable_groups(self) -> list[DependencyGroup]:
        return [g for g in self.groups if g.prunable]

    def blocked_groups(self) -> list[DependencyGroup]:
        return [g for g in self.groups if not g.prunable]

    def summary(self) -> dict:
        return {
            "groups": len(self.groups),
            "prunable": [g.to_json() for g in self.prunable_groups()],
            "blocked": [g.to_json() for g in self.blocked_groups() if g.producers],
            "unanalysed": [{"layer": k, "why": why} for k, why in self.unanalysed],
        }


class _Analyzer:
    def __init__(self, func: relax.Function, weights: dict[str, np.ndarray]):
        self.func = func
        self.weights = weights
        self.deps = ChannelDependencies()
        self.key_of: dict = {}  # relax.Var -> key
        self.tuple_fields: dict[str, list] = {}  # key of a tuple-valued var -> field keys (or None)
        self.bn_stat_fields: dict[str, str] = {}  # key of a BN running-stat field -> BN output key
        self.uses: dict = {}
        self._names: set[str] = set()

    # -- bookkeeping ----------------------------------------------------------------------------
    def new_key(self, var: relax.Var) -> str:
        name = str(var.name) or "t"
        key, n = name, 1
        while key in self._names:
            key, n = f"{name}.{n}", n + 1
        self._names.add(key)
        self.key_of[var] = key
        self.deps.var_of.setdefault(key, var)
        return key

    def flow(self, call, out_keys) -> None:
        for arg in call.args:
            for leaf in (arg.fields if isinstance(arg, relax.Tuple) else [arg]):
                k = self.arg_key(leaf)
                for src in self.tuple_fields.get(k, [k]) if k is not None else []:
                    if src is not None and src in self.deps.tensors and not self.is_weight(src):
                        for out in out_keys:
                            self.deps.dataflow.add_edge(src, out)

    def add_tensor(self, key: str, ty, kind: str, source=None) -> TensorInfo | None:
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            return None
        try:
            shape = tuple(int(d) for d in ty.shape)
        except (TypeError, ValueError):
            return None
        info = TensorInfo(key, shape, kind, source)
        self.deps.tensors[key] = info
        if kind in ("input", "activation") and len(shape) >= 2:
            self.track(key, 1)
        return info

    def nodes(self, key: str, axis: int, index) -> list[Node]:
        return [(key, axis, int(i)) for i in np.atleast_1d(index)]

    def track(self, key: str, axis: int) -> bool:
        """Give ``key``'s ``axis`` channel nodes; for a weight view, tie them to the viewed weight."""
        if (key, axis) in self.deps.tracked:
            return True
        info = self.deps.tensors.get(key)
        if info is None or axis >= len(info.shape):
            return False
        self.deps.tracked.add((key, axis))
        self.deps.graph.add_nodes_from(self.nodes(key, axis, range(info.shape[axis])))
        if info.kind == "view":
            src, op, attrs = info.source
            mapped = self.view_axis(info, axis)
            if mapped is None:
                self.block(key, axis, f"{op} of a weight mixes its channel axis {axis}")
            else:
                src_axis, block = mapped
                if not self.track(src, src_axis):
                    self.block(key, axis, f"{op} of a weight: cannot follow axis {axis}")
                else:
                    self.tie_reshape(src, src_axis, key, axis, block)
        return True

    def view_axis(self, info: TensorInfo, axis: int):
        """Axis of the viewed tensor that ``axis`` of a weight view comes from, with a block ratio."""
        src, op, attrs = info.source
        src_shape = self.deps.tensors[src].shape
        if op == "relax.permute_dims":
            axes = attrs if attrs is not None else list(reversed(range(len(src_shape))))
            return axes[axis], 1
        if op == "relax.astype":
            return axis, 1
        mapping = reshape_axis_map(src_shape, info.shape, out_axis=axis)
        return mapping

    def tie_blocks(self, key_a: str, axis_a: int, key_b: str, axis_b: int, block: int = 1) -> None:
        """Tie channel i of a to channels i*block .. (i+1)*block-1 of b."""
        size_a = self.deps.tensors[key_a].shape[axis_a]
        size_b = self.deps.tensors[key_b].shape[axis_b]
        if size_a * block != size_b:
            raise AssertionError(f"tie {key_a}:{axis_a} x{block} != {key_b}:{axis_b}")
        self.deps.graph.add_edges_from(
            ((key_a, axis_a, i), (key_b, axis_b, i * block + j)) for i in range(size_a) for j in range(block))

    def tie_reshape(self, src: str, src_axis: int, dst: str, dst_axis: int, block: int) -> None:
        """Tie across a reshape: ``block`` as returned by :func:`reshape_axis_map`."""
        if block > 0:
            self.tie_blocks(src, src_axis, dst, dst_axis, block)
        else:
            self.tie_blocks(dst, dst_axis, src, src_axis, -block)

    def tie_offset(self, key_a: str, axis_a: int, key_b: str, axis_b: int, offset: int, step: int = 1) -> None:
        """Tie channel i of a to channel offset + i*step of b."""
        size_a = self.deps.tensors[key_a].shape[axis_a]
        self.deps.graph.add_edges_from(
            ((key_a, axis_a, i), (key_b, axis_b, offset + i * step)) for i in range(size_a))

    def block(self, key: str, axis: int, reason: str) -> None:
        if key in self.deps.tensors and (key, axis) not in self.deps.blocked_axes:
            self.track(key, axis)
            self.deps.blocked_axes[(key, axis)] = reason

    def block_tensor(self, key: str, reason: str) -> None:
        """Block every axis of ``key`` (and of the weight it views), and every channel axis it has."""
        info = self.deps.tensors.get(key)
        if info is None:
            return
        if info.kind in ("input", "activation"):
            if len(info.shape) >= 2:
                self.block(key, 1, reason)
            return
        for axis in range(len(info.shape)):
            self.block(key, axis, reason)
        if info.kind == "view":
            self.block_tensor(info.source[0], reason)

    def is_weight(self, key: str | None) -> bool:
        return key is not None and key in self.deps.tensors and self.deps.tensors[key].kind in ("weight", "view")

    def value_of(self, key: str) -> np.ndarray | None:
        """The numeric value of a weight or weight view."""
        info = self.deps.tensors[key]
        if info.kind == "weight":
            return self.weights[key]
        if info.kind != "view":
            return None
        src, op, attrs = info.source
        value = self.value_of(src)
        if op == "relax.permute_dims":
            return np.transpose(value, attrs)
        if op == "relax.astype":
            return value
        return value.reshape(info.shape)

    def leaf_of(self, key: str) -> tuple[str, tuple]:
        """The weight parameter behind ``key`` and the ops that map the view back onto it."""
        ops = []
        while self.deps.tensors[key].kind == "view":
            src, op, attrs = self.deps.tensors[key].source
            src_shape = self.deps.tensors[src].shape
            if op == "relax.permute_dims":
                axes = attrs if attrs is not None else list(reversed(range(len(src_shape))))
                ops.append(("permute", tuple(int(a) for a in np.argsort(axes))))
            elif op == "relax.astype":
                pass
            else:
                ops.append(("reshape", src_shape))
            key = src
        return key, tuple(ops)

    def arg_key(self, expr) -> str | None:
        if isinstance(expr, relax.Var):
            return self.key_of.get(expr)
        return None

    # -- the walk -------------------------------------------------------------------------------
    def run(self) -> ChannelDependencies:
        func = self.func
        num_input = int(func.attrs["num_input"]) if func.attrs is not None and "num_input" in func.attrs else None
        for i, param in enumerate(func.params):
            key = self.new_key(param)
            is_weight = key in self.weights and (num_input is None or i >= num_input)
            self.add_tensor(key, param.ty, "weight" if is_weight else "input")
            if not is_weight:
                self.block_tensor(key, "model input: its channels are the caller's")
        self.count_uses(func.body)
        body = func.body
        for block in body.blocks:
            for binding in block.bindings:
                self.visit_binding(binding)
        self.mark_outputs(body.body)
        self.finish()
        return self.deps

    def count_uses(self, body) -> None:
        uses = self.uses

        @relax.expr_functor.visitor
        class Counter(relax.PyExprVisitor):
            def visit_var_(self, op):  # noqa: N802 - TVM's visitor naming
                uses[op] = uses.get(op, 0) + 1

            def visit_dataflow_var_(self, op):  # noqa: N802
                uses[op] = uses.get(op, 0) + 1

        Counter().visit_expr(body)

    def mark_outputs(self, expr) -> None:
        if isinstance(expr, relax.Tuple):
            for f in expr.fields:
                self.mark_outputs(f)
            return
        key = self.arg_key(expr)
        if key is None:
            return
        if key in self.tuple_fields:
            for f in self.tuple_fields[key]:
                if f is not None:
                    self.block_tensor(f, "model output: its channels are the caller's")
        else:
            self.block_tensor(key, "model output: its channels are the caller's")

    def visit_binding(self, binding) -> None:
        var = binding.var
        if not isinstance(binding, relax.VarBinding):
            key = self.new_key(var)
            self.add_tensor(key, var.ty, "activation")
            self.block_tensor(key, "match_cast: shape not static")
            self.unknown_args(binding.value, "match_cast")
            return
        value = binding.value
        if isinstance(value, relax.Var):
            src = self.key_of.get(value)
            self.key_of[var] = src
            return
        key = self.new_key(var)
        if isinstance(value, relax.Tuple):
            self.tuple_fields[key] = [self.arg_key(f) for f in value.fields]
            return
        if isinstance(value, relax.TupleGetItem):
            self.visit_tuple_get_item(key, var, value)
            return
        if isinstance(value, tvm.ir.expr.Constant) and hasattr(value.value, "numpy"):
            self.add_tensor(key, var.ty, "weight")
            self.weights[key] = value.value.numpy()
            return
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            self.visit_call(key, var, value)
            return
        self.add_tensor(key, var.ty, "activation")
        self.block_tensor(key, f"{type(value).__name__} binding is not analysed")
        self.unknown_args(value, type(value).__name__)

    def visit_tuple_get_item(self, key, var, value) -> None:
        tup = self.arg_key(value.tuple_value)
        fields = self.tuple_fields.get(tup) if tup is not None else None
        if fields is not None and value.index < len(fields) and fields[value.index] is not None:
            field_key = fields[value.index]
            self.key_of[var] = field_key
            self.deps.var_of.setdefault(field_key, var)
            self._names.discard(key)
            if field_key in self.bn_stat_fields and self.uses.get(var, 0):
                self.block(self.bn_stat_fields[field_key], 1, "batch_norm running statistics are used downstream")
            return
        self.add_tensor(key, var.ty, "activation")
        self.block_tensor(key, "tuple element of an op that is not analysed")

    def unknown_args(self, value, op_name: str) -> None:
        args = value.args if isinstance(value, relax.Call) else []
        for arg in args:
            for leaf in (arg.fields if isinstance(arg, relax.Tuple) else [arg]):
                k = self.arg_key(leaf)
                if k in self.tuple_fields:
                    for f in self.tuple_fields[k]:
                        if f is not None:
                            self.block_tensor(f, f"{op_name}: op not analysed for channel pruning")
                elif k is not None:
                    self.block_tensor(k, f"{op_name}: op not analysed for channel pruning")

    def visit_call(self, key: str, var, call: relax.Call) -> None:
        op = call.op.name
        arg_keys = [self.arg_key(a) for a in call.args]
        tensor_args = [k for k in arg_keys if k is not None and k in self.deps.tensors]
        if op in WEIGHT_VIEWS and tensor_args and all(self.is_weight(k) for k in tensor_args) and len(tensor_args) == 1:
            attrs = None
            if op == "relax.permute_dims":
                attrs = [int(a) for a in call.attrs.axes] if call.attrs.axes is not None else None
            if self.add_tensor(key, var.ty, "view", (tensor_args[0], op, attrs)) is None:
                self.block_tensor(tensor_args[0], f"{op}: dynamic shape")
            return
        if op == "relax.nn.batch_norm":
            self.visit_batch_norm(key, var, call, arg_keys)
            self.flow(call, [f for f in self.tuple_fields.get(key, []) if f is not None])
            return
        if op == "relax.split":
            self.visit_split(key, var, call, arg_keys)
            self.flow(call, [f for f in self.tuple_fields.get(key, []) if f is not None])
            return
        info = self.add_tensor(key, var.ty, "activation")
        if info is None:
            self.unknown_args(call, op)
            if key in self.deps.tensors:
                self.block_tensor(key, f"{op}: output is not a static tensor")
            return
        self.deps.order.append(key)
        self.flow(call, [key])
        handler = {
            "relax.nn.conv2d": self.visit_conv2d,
            "relax.matmul": self.visit_matmul,
            "relax.nn.prelu": self.visit_prelu,
            "relax.concat": self.visit_concat,
            "relax.reshape": self.visit_reshape,
            "relax.flatten": self.visit_reshape,
            "relax.strided_slice": self.visit_strided_slice,
        }.get(op)
        if handler is not None:
            handler(key, call, arg_keys)
        elif op in ELEMENTWISE_UNARY or op in SPATIAL_WINDOW:
            self.visit_channelwise(key, call, arg_keys, op)
        elif op in ELEMENTWISE_BINARY:
            self.visit_binary(key, call, arg_keys, op)
        elif op in REDUCTIONS:
            self.visit_reduction(key, call, arg_keys, op)
        else:
            self.unknown_args(call, op)
            self.block_tensor(key, f"{op}: op not analysed for channel pruning")

    # -- per-op channel semantics ---------------------------------------------------------------
    def same_channels(self, key: str, src: str | None, op: str) -> bool:
        """Tie axis 1 of activation ``src`` to axis 1 of ``key`` one to one, when the sizes agree."""
        if src is None or src not in self.deps.tensors:
            return False
        a, b = self.deps.tensors[src].shape, self.deps.tensors[key].shape
        if len(a) < 2 or len(b) < 2 or a[1] != b[1]:
            self.block_tensor(src, f"{op}: channel axis changes size ({list(a)} -> {list(b)})")
            self.block_tensor(key, f"{op}: channel axis changes size ({list(a)} -> {list(b)})")
            return False
        if self.is_weight(src):
            self.track(src, 1)
        self.tie_blocks(src, 1, key, 1)
        return True

    def input_independent(self, key: str | None) -> np.ndarray | None:
        if key is None:
            return None
        return self.deps.constant_channels.get(key)

    def set_independent(self, key: str, mask) -> None:
        if mask is not None:
            self.deps.constant_channels[key] = np.asarray(mask, dtype=bool)

    def visit_channelwise(self, key, call, arg_keys, op) -> None:
        src = arg_keys[0]
        if op in SPATIAL_WINDOW and hasattr(call.attrs, "layout") and str(call.attrs.layout) != "NCHW":
            self.unknown_args(call, op)
            self.block_tensor(key, f"{op}: layout {call.attrs.layout} is not NCHW")
            return
        if self.same_channels(key, src, op):
            self.set_independent(key, self.input_independent(src))
        for k in arg_keys[1:]:
            if k is not None:
                self.block_tensor(k, f"{op}: extra tensor argument")

    def visit_reduction(self, key, call, arg_keys, op) -> None:
        src = arg_keys[0]
        ndim = len(self.deps.tensors[src].shape) if src in self.deps.tensors else 0
        axes = call.attrs.axis
        axes = list(range(ndim)) if axes is None else [int(a) % ndim for a in axes]
        if 0 in axes or 1 in axes:
            self.block_tensor(src, f"{op} over axes {axes}: sums across channels or batch")
            self.block_tensor(key, f"{op} over axes {axes}: sums across channels or batch")
            return
        if self.same_channels(key, src, op):
            self.set_independent(key, self.input_independent(src))

    def visit_binary(self, key, call, arg_keys, op) -> None:
        out_shape = self.deps.tensors[key].shape
        if len(out_shape) < 2:
            self.unknown_args(call, op)
            self.block_tensor(key, f"{op}: result has no channel axis")
            return
        n, channels = len(out_shape), out_shape[1]
        carried = []  # input-independence masks of activation operands that carry the channels
        varying_broadcast = False  # an input-dependent operand broadcast over every channel
        zero_scale = np.zeros(channels, dtype=bool)
        for arg_key in arg_keys:
            if arg_key is None or arg_key not in self.deps.tensors:
                continue  # a scalar broadcasts over every channel
            shape = self.deps.tensors[arg_key].shape
            axis = 1 - (n - len(shape))  # the operand's axis aligned with the result's channel axis
            if self.is_weight(arg_key):
                if axis < 0 or shape[axis] == 1:
                    continue
                if shape[axis] != channels:
                    self.block_tensor(arg_key, f"{op}: parameter does not broadcast over channels")
                    self.block_tensor(key, f"{op}: parameter does not broadcast over channels")
                    continue
                self.track(arg_key, axis)
                self.tie_blocks(arg_key, axis, key, 1)
                if op == "relax.multiply":
                    moved = np.moveaxis(self.value_of(arg_key), axis, 0).reshape(channels, -1)
                    zero_scale |= np.all(moved == 0, axis=1)
                continue
            if len(shape) == n and shape[1] == channels:
                self.tie_blocks(arg_key, 1, key, 1)
                m = self.input_independent(arg_key)
                carried.append(m if m is not None else np.zeros(channels, bool))
            elif len(shape) == n and shape[1] == 1:
                varying_broadcast = True  # e.g. a spatial attention map [N, 1, H, W]
            elif axis < 0 or shape[axis] == 1:
                # A lower-rank operand: its own axis 1 is not the result's channel axis.
                if len(shape) >= 2:
                    self.block_tensor(arg_key, f"{op}: operand of lower rank is broadcast against channels")
                varying_broadcast = True
            else:
                reason = f"{op}: operand {list(shape)} puts other data on the channel axis of {list(out_shape)}"
                self.block_tensor(arg_key, reason)
                self.block_tensor(key, reason)
                return
        mask = np.zeros(channels, bool) if varying_broadcast else np.ones(channels, bool)
        for m in carried:
            mask &= m
        self.set_independent(key, mask | zero_scale if op == "relax.multiply" else mask)

    def visit_prelu(self, key, call, arg_keys) -> None:
        src, alpha = arg_keys[0], arg_keys[1]
        axis = int(call.attrs.axis) % len(self.deps.tensors[key].shape)
        if axis != 1 or not self.same_channels(key, src, "nn.prelu"):
            self.block_tensor(key, f"nn.prelu on axis {axis}")
            return
        if alpha is not None and self.deps.tensors[alpha].shape[0] != 1:
            if not self.is_weight(alpha):
                self.block_tensor(key, "nn.prelu: slope is computed, not a weight")
                self.block_tensor(alpha, "nn.prelu: slope is computed, not a weight")
                return
            self.track(alpha, 0)
            self.tie_blocks(alpha, 0, key, 1)
        self.set_independent(key, self.input_independent(src))

    def visit_batch_norm(self, key, var, call, arg_keys) -> None:
        fields = var.ty.fields
        out_key = key
        self.tuple_fields[key] = [out_key + ":0", None, None]
        info = self.add_tensor(out_key + ":0", fields[0], "activation")
        src = arg_keys[0]
        if info is None:
            self.unknown_args(call, "nn.batch_norm")
            return
        out_key = out_key + ":0"
        self.deps.order.append(out_key)
        for i in (1, 2):
            stat_key = f"{key}:{i}"
            self.add_tensor(stat_key, fields[i], "activation")
            self.tuple_fields[key][i] = stat_key
            self.bn_stat_fields[stat_key] = out_key
        axis = int(call.attrs.axis) % len(info.shape)
        params = arg_keys[1:5]
        if axis != 1 or not all(self.is_weight(p) for p in params):
            self.unknown_args(call, "nn.batch_norm")
            self.block_tensor(out_key, f"nn.batch_norm on axis {axis} or with computed statistics")
            return
        self.same_channels(out_key, src, "nn.batch_norm")
        for p in params:
            self.track(p, 0)
            self.tie_blocks(p, 0, out_key, 1)
        self.deps.batch_norms.append((out_key, params[0]))
        gamma = self.value_of(params[0]) if bool(call.attrs.scale) else np.ones(info.shape[1])
        indep = self.input_independent(src)
        gamma_zero = np.abs(gamma) == 0
        self.set_independent(out_key, gamma_zero if indep is None else (indep | gamma_zero))

    def visit_conv2d(self, key, call, arg_keys) -> None:
        attrs = call.attrs
        data, weight = arg_keys[0], arg_keys[1]
        op = "nn.conv2d"
        layouts = (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout or attrs.data_layout))
        if layouts != ("NCHW", "OIHW", "NCHW") or not self.is_weight(weight) or data is None:
            reason = f"{op}: only NCHW/OIHW convolutions with weights are analysed (got {layouts})"
            self.unknown_args(call, op)
            self.block_tensor(key, reason)
            self.deps.unanalysed.append((key, reason))
            return
        c_in = self.deps.tensors[data].shape[1]
        w_shape = self.deps.tensors[weight].shape
        c_out = w_shape[0]
        groups = int(attrs.groups)
        w_value = self.value_of(weight)
        filter_zero = np.all(w_value.reshape(c_out, -1) == 0, axis=1)
        self.track(weight, 0)
        self.tie_blocks(weight, 0, key, 1)
        if groups == 1:
            self.track(weight, 1)
            self.tie_blocks(weight, 1, data, 1)
            leaf, to_leaf = self.leaf_of(weight)
            self.deps.producers.append(Producer(leaf, op, key, weight, 0))
            self.deps.consumers.append(Consumer(
                "conv2d", key, data, weight, leaf,
                {"strides": [int(s) for s in attrs.strides], "padding": [int(p) for p in attrs.padding],
                 "dilation": [int(d) for d in attrs.dilation]}, to_leaf))
            self.set_independent(key, filter_zero)
        elif groups == c_in and c_out % c_in == 0 and w_shape[1] == 1:
            multiplier = c_out // c_in
            self.tie_blocks(data, 1, key, 1, multiplier)
            self.deps.depthwise.append(key)
            indep = self.input_independent(data)
            indep = np.repeat(indep, multiplier) if indep is not None else np.zeros(c_out, bool)
            self.set_independent(key, indep | filter_zero)
        else:
            reason = (f"{op} with groups={groups} ({c_in} -> {c_out} channels): channels inside a group are "
                      f"mixed, so single channels cannot be removed")
            self.block(data, 1, reason)
            self.block(key, 1, reason)

    def visit_matmul(self, key, call, arg_keys) -> None:
        data, weight = arg_keys[0], arg_keys[1]
        op = "matmul"
        if data is None or not self.is_weight(weight) or len(self.deps.tensors[data].shape) != 2 \
                or len(self.deps.tensors[weight].shape) != 2:
            reason = f"{op}: only dense layers x[N, F] @ W[F, O] with a weight W are analysed"
            self.unknown_args(call, op)
            self.block_tensor(key, reason)
            self.deps.unanalysed.append((key, reason))
            return
        self.track(weight, 0)
        self.tie_blocks(weight, 0, data, 1)
        self.track(weight, 1)
        self.tie_blocks(weight, 1, key, 1)
        leaf, to_leaf = self.leaf_of(weight)
        self.deps.producers.append(Producer(leaf, "dense", key, weight, 1))
        self.deps.consumers.append(Consumer("dense", key, data, weight, leaf, {}, to_leaf))
        self.set_independent(key, np.all(self.value_of(weight) == 0, axis=0))

    def visit_concat(self, key, call, arg_keys) -> None:
        tup = call.args[0]
        parts = [self.arg_key(f) for f in tup.fields] if isinstance(tup, relax.Tuple) else \
            self.tuple_fields.get(self.arg_key(tup), [None])
        out_shape = self.deps.tensors[key].shape
        axis = int(call.attrs.axis) % len(out_shape) if call.attrs.axis is not None else 0
        if any(p is None or p not in self.deps.tensors or self.is_weight(p) for p in parts):
            for p in parts:
                if p is not None:
                    self.block_tensor(p, "concat of a weight or non-tensor")
            self.block_tensor(key, "concat of a weight or non-tensor")
            return
        if axis == 1:
            offset = 0
            indep = []
            for p in parts:
                self.tie_offset(p, 1, key, 1, offset)
                offset += self.deps.tensors[p].shape[1]
                m = self.input_independent(p)
                indep.append(m if m is not None else np.zeros(self.deps.tensors[p].shape[1], bool))
            self.set_independent(key, np.concatenate(indep))
        else:
            masks = [self.input_independent(p) for p in parts]
            for p in parts:
                self.same_channels(key, p, "concat")
            if all(m is not None for m in masks):
                self.set_independent(key, np.logical_and.reduce(masks))

    def visit_split(self, key, var, call, arg_keys) -> None:
        src = arg_keys[0]
        fields = var.ty.fields
        self.tuple_fields[key] = []
        axis = int(call.attrs.axis) % len(self.deps.tensors[src].shape) if src in self.deps.tensors else -1
        offset = 0
        if axis == 1:
            self.deps.channel_splits.append((src, [f"{key}:{i}" for i in range(len(fields))]))
        for i, ty in enumerate(fields):
            fkey = f"{key}:{i}"
            info = self.add_tensor(fkey, ty, "activation")
            self.tuple_fields[key].append(fkey)
            if info is None or src is None:
                self.block_tensor(fkey, "split: not a static tensor")
                continue
            self.deps.order.append(fkey)
            if axis == 1:
                self.tie_offset(fkey, 1, src, 1, offset)
                m = self.input_independent(src)
                if m is not None:
                    self.set_independent(fkey, m[offset:offset + info.shape[1]])
                offset += info.shape[1]
            else:
                self.same_channels(fkey, src, "split")
                self.set_independent(fkey, self.input_independent(src))

    def visit_strided_slice(self, key, call, arg_keys) -> None:
        src = arg_keys[0]
        try:
            axes = [int(a) for a in int_values(call.args[1])]
            begin = [int(b) for b in int_values(call.args[2])]
            strides = [int(s) for s in int_values(call.args[4])] if len(call.args) > 4 and call.args[4] is not None \
                else [1] * len(axes)
        except (TypeError, ValueError, AttributeError):
            axes = None
        if src is None or axes is None:
            self.unknown_args(call, "strided_slice")
            self.block_tensor(key, "strided_slice with non-constant bounds")
            return
        ndim = len(self.deps.tensors[src].shape)
        axes = [a % ndim for a in axes]
        if 1 not in axes:
            self.same_channels(key, src, "strided_slice")
            self.set_independent(key, self.input_independent(src))
            return
        i = axes.index(1)
        size = self.deps.tensors[src].shape[1]
        start = begin[i] % size if begin[i] < 0 else min(begin[i], size)
        if strides[i] != 1:
            reason = "strided_slice with a step on the channel axis: kept channels would not stay evenly spaced"
            self.block(src, 1, reason)
            self.block(key, 1, reason)
            return
        self.tie_offset(key, 1, src, 1, start, strides[i])
        self.deps.channel_slices.append((src, key, start))
        m = self.input_independent(src)
        if m is not None:
            self.set_independent(key, m[start::strides[i]][: self.deps.tensors[key].shape[1]])

    def visit_reshape(self, key, call, arg_keys) -> None:
        src = arg_keys[0]
        if src is None:
            self.block_tensor(key, "reshape of a non-tensor")
            return
        in_shape, out_shape = self.deps.tensors[src].shape, self.deps.tensors[key].shape
        mapping = reshape_axis_map(in_shape, out_shape, out_axis=1) if len(out_shape) >= 2 else None
        if mapping is None or mapping[0] != 1:
            reason = f"reshape {list(in_shape)} -> {list(out_shape)} moves or splits the channel axis"
            self.block(src, 1, reason)
            self.block(key, 1, reason)
            return
        _, block = mapping
        self.tie_reshape(src, 1, key, 1, block)
        m = self.input_independent(src)
        if m is not None:
            self.set_independent(key, np.repeat(m, block) if block > 0 else m.reshape(-1, -block).all(axis=1))

    # -- components -> groups -------------------------------------------------------------------
    def finish(self) -> None:
        deps = self.deps
        graph = deps.graph
        producer_axes = {}
        for p in deps.producers:
            producer_axes.setdefault((p.weight, p.axis), []).append(p)
        by_signature: dict[frozenset, list[frozenset]] = {}
        for component in nx.connected_components(graph):
            signature = frozenset((k, a) for k, a, _ in component)
            by_signature.setdefault(signature, []).append(frozenset(component))
        for signature, units in by_signature.items():
            producers = [p for axis in signature for p in producer_axes.get(axis, [])]
            blocked = sorted({deps.blocked_axes[a] for a in signature if a in deps.blocked_axes})
            if not producers and not blocked:
                blocked = ["no conv or dense layer produces these channels"]
            first = producers[0] if producers else None
            if first is not None:
                units.sort(key=lambda u, p=first: min(i for k, a, i in u if (k, a) == (p.weight, p.axis)))
            else:
                units.sort(key=lambda u: min(u))
            tensors = sorted({k for k, _ in signature if deps.tensors[k].kind in ("activation",)})
            layers = sorted({p.layer for p in producers})
            name = "+".join(layers) if layers else "(" + "/".join(sorted({k for k, _ in signature})) + ")"
            deps.groups.append(DependencyGroup(name, tensors, units, producers, blocked))
        deps.groups.sort(key=lambda g: (g.name, g.tensors))
        seen: dict[str, int] = {}
        for g in deps.groups:
            # A split or a channel slice of one layer's output makes several groups of that layer.
            n = seen.get(g.name, 0)
            seen[g.name] = n + 1
            if n:
                g.name = f"{g.name}#{n}"


def int_values(expr) -> list[int]:
    """The integers of a static argument: a shape, a tuple of PrimValues or one PrimValue."""
    if isinstance(expr, relax.ShapeExpr):
        return [int(v) for v in expr.values]
    if isinstance(expr, relax.Tuple):
        return [int(f.value) for f in expr.fields]
    if isinstance(expr, relax.PrimValue):
        return [int(expr.value)]
    return [int(v) for v in expr]


def unit_is_constant(deps: ChannelDependencies, unit, consumer_inputs: set[str]) -> bool:
    """Removing the unit is lossless when every channel of it that a layer sums over is input-independent:
    what those layers lose is then a fixed tensor, folded into their offsets (``consumer_inputs``: the
    tensors conv2d/dense layers read)."""
    read = [(k, i) for k, a, i in unit if a == 1 and k in consumer_inputs]
    return bool(read) and all(k in deps.constant_channels and bool(deps.constant_channels[k][i]) for k, i in read)


def reshape_axis_map(in_shape, out_shape, out_axis: int):
    """Where channel axis ``out_axis`` of a reshape's output comes from, as ``(in_axis, block)``.

    Row-major reshapes keep a whole input axis together when the dims before it multiply to the
    same number on both sides. ``block > 0``: input index i becomes outputs i*block .. (i+1)*block-1
    (flatten, ``[N, C, H, W] -> [N, C*H*W]``: block = H*W). ``block < 0``: output index o gathers
    inputs o*|block| .. (unflatten). None if the axis is split across several output axes.
    """
    in_shape, out_shape = list(in_shape), list(out_shape)
    lead = int(np.prod(out_shape[:out_axis]))
    size = out_shape[out_axis]
    for in_axis in range(len(in_shape)):
        if int(np.prod(in_shape[:in_axis])) != lead:
            continue
        if in_shape[in_axis] == 1 and size != 1:
            continue
        c = in_shape[in_axis]
        # The output axis is this input axis times the trailing dims merged into it (flatten) ...
        k, merged = in_axis + 1, c
        while merged < size and k < len(in_shape):
            merged *= in_shape[k]
            k += 1
        if merged == size and size % c == 0:
            return in_axis, size // c
        # ... or one of several output axes this input axis was split into (unflatten).
        k, split = out_axis + 1, size
        while split < c and k < len(out_shape):
            split *= out_shape[k]
            k += 1
        if split == c and c % size == 0:
            return in_axis, -(c // size)
        return None
    return None


def analyze_channel_dependencies(func: relax.Function, weights: dict[str, np.ndarray]) -> ChannelDependencies:
    """Channel dependency groups of ``func``; ``weights`` maps weight parameter names to values."""
    return _Analyzer(func, dict(weights)).run()

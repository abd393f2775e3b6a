"""Apply a :class:`.plan.PruningPlan` to the graph (step 4 of :mod:`.rewrite`).

Every weight is sliced on its tracked axes, reshapes/splits/slices get new bounds, depthwise convs new
group counts, and each layer that lost input channels gets an output offset
``y' = conv(x_kept, W_kept) + offset``, a ``*.prune_offset`` parameter holding the removed channels'
constant contribution and the bias of the least-squares refit (He et al. 2017; :mod:`.recovery`).
The same re-emission exposes intermediate tensors for calibration (:func:`expose_tensors`).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..errors import CompileError, first_line
from .dependencies import ChannelDependencies, int_values
from .plan import PruningPlan


def offset_name(consumer_out: str) -> str:
    return f"{consumer_out}.prune_offset"


class _Rewriter:
    """Re-emits ``func`` with the plan's smaller tensors; optionally exposes intermediate tensors."""

    def __init__(self, func: relax.Function, plan: PruningPlan, offsets: dict[str, tuple] | None = None,
                 taps: list[str] | None = None):
        self.func = func
        self.plan = plan
        self.deps = plan.deps
        self.offsets = offsets or {}  # consumer out key -> offset shape
        self.taps = list(taps or [])
        self.var_map: dict = {}
        self.tapped: dict[str, relax.Var] = {}
        self.key_of = {v: k for k, v in self.deps.var_of.items()}
        self.offset_params: dict[str, relax.Var] = {}

    def new_params(self) -> list[relax.Var]:
        params = []
        for p in self.func.params:
            key = self.key_of.get(p, str(p.name))
            if key in self.deps.tensors and self.plan.changed(key):
                new = relax.Var(str(p.name), relax.TensorType(self.plan.new_shape(key), p.ty.dtype))
            else:
                new = p
            self.var_map[p] = new
            if key in self.taps:
                self.tapped[key] = new
            params.append(new)
        for key, shape in self.offsets.items():
            dtype = self.deps.var_of[key].ty.dtype
            var = relax.Var(offset_name(key), relax.TensorType(shape, dtype))
            self.offset_params[key] = var
            params.append(var)
        return params

    def expr(self, e):
        if isinstance(e, relax.Var):
            return self.var_map.get(e, e)
        if isinstance(e, relax.Tuple):
            return relax.Tuple([self.expr(f) for f in e.fields])
        return e

    def run(self) -> relax.Function:
        bb = relax.BlockBuilder()
        params = self.new_params()
        num_input = int(self.func.attrs["num_input"]) if "num_input" in (self.func.attrs or {}) else len(params)
        with bb.function("main", params, attrs={"num_input": num_input}, pure=self.func.is_pure):
            body = self.func.body
            for block in body.blocks:
                if isinstance(block, relax.DataflowBlock):
                    with bb.dataflow():
                        for binding in block.bindings:
                            self.emit(bb, binding, dataflow=True)
                else:
                    for binding in block.bindings:
                        self.emit(bb, binding, dataflow=False)
            result = self.expr(body.body)
            if self.taps:
                missing = [t for t in self.taps if t not in self.tapped]
                if missing:
                    raise CompileError(f"pruning: cannot expose tensors {missing} for calibration")
                fields = list(result.fields) if isinstance(result, relax.Tuple) else [result]
                result = relax.Tuple(fields + [self.tapped[t] for t in self.taps])
            bb.emit_func_output(result)
        return bb.get()["main"]

    def emit(self, bb: relax.BlockBuilder, binding, dataflow: bool) -> None:
        var = binding.var
        value = binding.value
        key = self.key_of.get(var)
        is_output = dataflow and not isinstance(var, relax.DataflowVar)
        tap = key is not None and key in self.taps and key not in self.tapped
        new_value = self.rewrite(var, value)
        offset = self.offset_params.get(key) if key is not None else None
        name = str(var.name)
        if offset is not None:
            raw = bb.emit(new_value, name_hint=name + "_pruned")
            new_value = relax.op.add(raw, offset)
        if (is_output or tap) and dataflow:
            new_var = bb.emit_output(new_value, name_hint=name)
        else:
            new_var = bb.emit(new_value, name_hint=name)
        self.var_map[var] = new_var
        if tap:
            self.tapped[key] = new_var

    def rewrite(self, var, value):
        if isinstance(value, relax.Var) or isinstance(value, relax.Tuple):
            return self.expr(value)
        if isinstance(value, relax.TupleGetItem):
            return relax.TupleGetItem(self.expr(value.tuple_value), value.index)
        if not isinstance(value, relax.Call):
            return value
        args = [self.expr(a) for a in value.args]
        op = value.op.name if isinstance(value.op, tvm.ir.Op) else None
        key = self.key_of.get(var)
        if op in ("relax.reshape", "relax.flatten") and key is not None and key in self.deps.tensors:
            return relax.op.reshape(args[0], self.plan.new_shape(key))
        if op in ("relax.expand_dims", "relax.squeeze") and key is not None and self.deps.tensors.get(key) \
                and self.deps.tensors[key].kind == "view":
            return relax.op.reshape(args[0], self.plan.new_shape(key))
        if op == "relax.nn.conv2d" and int(value.attrs.groups) > 1:
            data_key = self.key_of.get(value.args[0])
            if data_key is not None and self.plan.changed(data_key):
                a = value.attrs
                return relax.op.nn.conv2d(args[0], args[1], strides=a.strides, padding=a.padding,
                                          dilation=a.dilation, groups=self.plan.new_shape(data_key)[1],
                                          data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                                          out_layout=a.out_layout, out_dtype=a.out_dtype)
        if op == "relax.split" and int(value.attrs.axis) % len(value.args[0].ty.shape) == 1:
            src = self.key_of.get(value.args[0])
            if src is not None and self.plan.changed(src):
                fields = [f"{key}:{i}" for i in range(len(var.ty.fields))]
                bounds = np.cumsum([self.plan.new_shape(f)[1] for f in fields])[:-1]
                return relax.op.split(args[0], [int(b) for b in bounds], axis=1)
        if op == "relax.strided_slice" and key is not None:
            src = self.key_of.get(value.args[0])
            if src is not None and self.plan.changed(src):
                return self.rewrite_slice(value, args, src, key)
        return relax.Call(value.op, args, value.attrs, value.ty_args)

    def rewrite_slice(self, value, args, src, key):
        axes = [int(a) % len(self.deps.tensors[src].shape) for a in int_values(value.args[1])]
        begin = [int(b) for b in int_values(value.args[2])]
        end = [int(e) for e in int_values(value.args[3])]
        if 1 in axes:
            i = axes.index(1)
            size = self.deps.tensors[src].shape[1]
            start = begin[i] % size if begin[i] < 0 else min(begin[i], size)
            kept_src = self.plan.kept(src, 1)
            begin[i] = int(np.sum(kept_src < start))
            end[i] = begin[i] + self.plan.new_shape(key)[1]
        return relax.op.strided_slice(args[0], axes, begin, end, assume_inbound=bool(value.attrs.assume_inbound))


def expose_tensors(func: relax.Function, deps: ChannelDependencies, taps: list[str]) -> relax.Function:
    """``func`` unpruned, also returning the tensors ``taps`` (analysis keys) after its outputs."""
    return _Rewriter(func, PruningPlan(deps), {}, taps).run()


def slice_weights(plan: PruningPlan, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every weight parameter with its removed channels cut out on each tracked axis."""
    out = {}
    for name, value in weights.items():
        if name not in plan.deps.tensors:
            out[name] = value
            continue
        for axis in range(value.ndim):
            if (name, axis) in plan.deps.tracked:
                value = np.take(value, plan.kept(name, axis), axis=axis)
        out[name] = np.ascontiguousarray(value)
    return out


def apply_pruning(func: relax.Function, weights: dict, plan: PruningPlan, offsets: dict[str, np.ndarray] | None = None,
                  taps: list[str] | None = None) -> tuple[relax.Function, dict[str, np.ndarray]]:
    """The pruned function (weights as parameters, offsets as extra ``*.prune_offset`` parameters).

    With ``taps``, the function also returns those tensors (by analysis key) after its outputs.
    """
    new_func, new_weights, _ = apply_pruning_tapped(func, weights, plan, offsets, taps)
    return new_func, new_weights


def apply_pruning_tapped(func: relax.Function, weights: dict, plan: PruningPlan, offsets: dict | None = None,
                         taps: list[str] | None = None):
    """:func:`apply_pruning`, plus ``{tap key: the Relax var holding it in the new function}``."""
    offsets = offsets or {}
    shapes = {k: tuple(v.shape) for k, v in offsets.items()}
    try:
        rewriter = _Rewriter(func, plan, shapes, taps)
        new_func = rewriter.run()
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:  # TVM shape inference on the new graph
        raise CompileError(f"pruning produced an inconsistent graph: {first_line(exc)}; "
                           f"report this model to edgetvm") from None
    new_weights = slice_weights(plan, weights)
    for key, value in offsets.items():
        new_weights[offset_name(key)] = value
    return new_func, new_weights, dict(rewriter.tapped)

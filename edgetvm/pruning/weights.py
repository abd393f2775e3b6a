"""Weights as named parameters, and back: the first and last step of pruning a Relax function.

Pruning slices weights by name (``conv3.weight``, ``bn3.gamma``: what per-layer ratios and masks refer
to), so every bound constant becomes a parameter first (:func:`lift_weights`); the pruned function
binds them again (:func:`bind_weights`). The model's inputs stay first; ``num_input`` says how many.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


_WEIGHT_ROLES = {
    "relax.nn.conv2d": ("conv", {1: "weight"}),
    "relax.matmul": ("dense", {1: "weight"}),
    "relax.nn.batch_norm": ("bn", {1: "gamma", 2: "beta", 3: "mean", 4: "var"}),
    "relax.nn.prelu": ("prelu", {1: "slope"}),
}


def _const_value(const) -> np.ndarray:
    value = const.value
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def lift_weights(func: relax.Function) -> tuple[relax.Function, dict[str, np.ndarray]]:
    """``func`` with every bound constant turned into a weight parameter, and the weights' values.

    The parameters keep the model's inputs first; ``num_input`` says how many there are. A weight
    is named for the op that uses it (``conv3.weight``, ``bn3.gamma``), which is what per-layer
    ratios and masks refer to when the model has no names of its own.
    """
    weights: dict[str, np.ndarray] = {}
    counters: dict[str, int] = {}
    lifted: dict = {}

    def name_for(call: relax.Call | None, index: int) -> str:
        op = call.op.name if call is not None and isinstance(call.op, tvm.ir.Op) else "const"
        short, roles = _WEIGHT_ROLES.get(op, (op.split(".")[-1], {}))
        n = counters.get(short, 0)
        base = f"{short}{n}.{roles.get(index, f'arg{index}')}"
        name, k = base, 1
        while name in weights:
            name, k = f"{base}{k}", k + 1
        return name

    @relax.expr_functor.mutator
    class Lifter(relax.PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            args = []
            for i, arg in enumerate(call.args):
                if isinstance(arg, tvm.ir.expr.Constant) and _const_value(arg).ndim > 0:
                    key = arg
                    if key not in lifted:
                        name = name_for(call, i)
                        value = _const_value(arg)
                        weights[name] = value
                        lifted[key] = relax.Var(name, relax.TensorType(value.shape, str(value.dtype)))
                    args.append(lifted[key])
                else:
                    args.append(self.visit_expr(arg))
            if isinstance(call.op, tvm.ir.Op):
                short = _WEIGHT_ROLES.get(call.op.name, (call.op.name.split(".")[-1],))[0]
                counters[short] = counters.get(short, 0) + 1
            return relax.Call(call.op, args, call.attrs, call.ty_args)

    body = Lifter().visit_expr(func.body)
    num_input = len(func.params)
    if func.attrs is not None and "num_input" in func.attrs:
        num_input = int(func.attrs["num_input"])
    params = list(func.params) + list(lifted.values())
    attrs = {k: v for k, v in (func.attrs or {}).items() if k != "params"}
    attrs["num_input"] = num_input
    new_func = relax.Function(params, body, func.ret_ty, func.is_pure, tvm.ir.DictAttrs(attrs))
    return new_func, weights


def split_params(func: relax.Function) -> tuple[list[relax.Var], list[relax.Var]]:
    num_input = int(func.attrs["num_input"]) if func.attrs is not None and "num_input" in func.attrs \
        else len(func.params)
    return list(func.params[:num_input]), list(func.params[num_input:])


def bind_weights(func: relax.Function, weights: dict[str, np.ndarray]) -> relax.Function:
    """The inverse of :func:`lift_weights`: weights become bound constants again."""
    inputs, weight_params = split_params(func)
    mod = tvm.IRModule({"main": func})
    mod = relax.transform.BindParams("main", {str(p.name): weights[str(p.name)] for p in weight_params})(mod)
    bound = mod["main"]
    attrs = {k: v for k, v in (bound.attrs or {}).items() if k != "params"}
    attrs["num_input"] = len(inputs)
    return relax.Function(list(bound.params), bound.body, bound.ret_ty, bound.is_pure,
                          tvm.ir.DictAttrs(attrs))

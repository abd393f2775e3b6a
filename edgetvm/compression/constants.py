"""The weight constants of a Relax function: which they are, under which names, and swapping them.

Shared by the clustering pass (new values) and the sensitivity measurement (parameters in their
place). Constants are told apart by object (``__chandle__``): a weight read twice is one weight.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..relax_utils import is_tensor_constant

CLUSTERED_DTYPES = ("float32", "int8")


def call_operands(call: relax.Call) -> list[relax.Expr]:
    """The arguments of ``call``, a tuple's fields in place of the tuple (``R.call_tir(kernel, (x, w, ...))``:
    the int8 kernels read their weights so)."""
    operands = []
    for arg in call.args:
        operands.extend(arg.fields if isinstance(arg, relax.Tuple) else [arg])
    return operands


def weight_constants(func: relax.Function) -> list[tuple[str, relax.Constant]]:
    """The weights of ``func`` in graph order, named by the value that reads them: tensor constants of a
    clustered dtype with at least two axes longer than 1 (conv and dense weights, not vectors)."""
    found: dict[int, tuple[str, relax.Constant]] = {}  # by object address: a constant read twice is one weight
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call):
                continue
            for arg in call_operands(value):
                if (is_tensor_constant(arg) and arg.__chandle__() not in found
                        and str(arg.value.dtype) in CLUSTERED_DTYPES and sum(d > 1 for d in arg.value.shape) >= 2):
                    found[arg.__chandle__()] = (str(binding.var.name), arg)
    return list(found.values())


def output_axis(func: relax.Function, const: relax.Constant) -> int:
    """The axis of ``const`` along its layer's outputs: the last of a dense weight (``x @ W``, ``W: [F, O]``),
    else the first (OIHW convs, int8 weights with a scale per output channel)."""
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if (isinstance(value, relax.Call) and getattr(value.op, "name", None) == "relax.matmul"
                    and value.args[1].same_as(const) and len(const.value.shape) == 2):
                return -1
    return 0


def replace_constants(func: relax.Function, replaced: dict, mod: tvm.IRModule | None = None) -> relax.Function:
    """``func`` with each tensor constant whose ``__chandle__()`` is a key of ``replaced`` swapped for its value."""
    return _ConstantReplacer(replaced, mod).visit_expr(func)


@relax.expr_functor.mutator
class _ConstantReplacer(relax.PyExprMutator):
    def __init__(self, replaced: dict, mod: tvm.IRModule | None):
        super().__init__(mod)
        self.replaced = replaced

    # Calls, not constants: the visitor does not dispatch on TVM 0.27's ir.Constant leaves.
    def visit_call_(self, op: relax.Call) -> relax.Expr:
        call = super().visit_call_(op)
        args = [self.swap_fields(a) if isinstance(a, relax.Tuple) else self.swap(a) for a in call.args]
        if all(new.same_as(old) for new, old in zip(args, call.args)):
            return call
        return relax.Call(call.op, args, call.attrs, call.ty_args, call.span)

    def swap_fields(self, tup: relax.Tuple) -> relax.Tuple:
        fields = [self.swap(f) for f in tup.fields]
        return tup if all(new.same_as(old) for new, old in zip(fields, tup.fields)) else relax.Tuple(fields)

    def swap(self, expr: relax.Expr) -> relax.Expr:
        return self.replaced.get(expr.__chandle__(), expr) if is_tensor_constant(expr) else expr

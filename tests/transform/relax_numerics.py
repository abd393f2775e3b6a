"""Running a small Relax module on the host, and counting the kernels a lowered module launches."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def run_relax(mod: tvm.IRModule, *inputs: np.ndarray):
    """Compile ``mod`` with TVM's default host pipeline and run ``main``: an array, or a list of them."""
    executable = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in inputs])
    if isinstance(out, (tvm.ir.Array, list, tuple)):
        return [item.numpy() for item in out]
    return out.numpy()


def bind(mod: tvm.IRModule, **arrays: np.ndarray) -> tvm.IRModule:
    """Turn ``main``'s named parameters into constants, as the ONNX importer does with weights."""
    return relax.transform.BindParams("main", arrays)(mod)


def nhwc_conv(x_shape, w_shape, **attrs) -> tvm.IRModule:
    """``main(x, w) = conv2d(x, w)``, NHWC x HWIO, both parameters (``bind`` makes ``w`` a constant)."""
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    w = relax.Var("w", relax.TensorType(w_shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO", **attrs))
        bb.emit_func_output(y)
    return bb.get()


def assert_left_alone(rewrite, before: tvm.IRModule, reason: str | None) -> None:
    """The graph pass ``rewrite`` leaves ``before`` as it is and declines with a reason starting with
    ``reason`` (None: silently, the conv is not one the pass looks at)."""
    after = rewrite(before)
    tvm.ir.assert_structural_equal(after, before)
    assert rewrite.findings["rewritten"] == 0
    if reason is None:
        assert rewrite.findings["declined"] == []
    else:
        assert rewrite.findings["declined"][0]["reason"].startswith(reason)


def kernel_calls(mod: tvm.IRModule) -> list[str]:
    """The PrimFuncs ``main`` launches, one entry per ``call_tir``, in order."""
    names = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
                    and value.op.name == "relax.call_tir"):
                names.append(value.args[0].name_hint)
    return names


def has_op(mod: tvm.IRModule, op_name: str) -> bool:
    """Whether any Relax function of ``mod`` still calls ``op_name`` (e.g. ``relax.nn.batch_norm``)."""
    found = []

    @relax.expr_functor.visitor
    class _Finder(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:
            if isinstance(call.op, tvm.ir.Op) and call.op.name == op_name:
                found.append(call)
            super().visit_call_(call)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            _Finder().visit_expr(func)
    return bool(found)

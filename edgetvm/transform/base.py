"""The one protocol of edgetvm's graph passes: a per-function driver, and findings that reach the report.

A graph pass is a :class:`GraphPass` subclass decorated with :func:`graph_pass`, which makes it a
``tvm.transform.ModulePass`` (TVM's own ``module_pass`` class wrapper): it runs as ``Pass()(mod)``,
composes with TVM's passes in a ``tvm.transform.Sequential`` and is named in CamelCase. The
subclass writes the parts that differ, as TVM's ``function_pass`` and torch.fx's ``PassBase`` ask:

    new_findings()                      the empty findings of one run: a JSON-ready dict of counts,
                                        ``"declined": [{<where>: name, "reason": why}]`` by convention
    visits(gvar, func)                  which functions the driver hands on (default: every Relax
                                        function that is not a fused kernel)
    rewrite_function(gvar, func, mod)   the new function, None when nothing changed, or the whole new
                                        module when the rewrite added kernels to it (a BlockBuilder's)
    finish(mod)                         a last step over the module (default: none)

A pass that rewrites single bindings matched by a ``tvm.relax.dpl`` pattern derives from
:class:`BindingRewritePass` and writes only ``rewrite_binding``; one that rewrites NHWC/HWIO convs with a
constant weight derives from :class:`NHWCConvRewritePass` and writes ``check`` and ``rewrite_conv``.

The driver leaves the caller's module as it was. After a run, ``findings`` (on the pass object,
through TVM's wrapper) holds what the pass found; the run also reports them to every enclosing
:func:`collect_findings`, which is how ``run_passes`` gets them into the compile report whether the
pass was given alone or inside a ``Sequential``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import ClassVar

import tvm
from tvm import relax

from tvm.relax.dpl import is_op, wildcard

from ..relax_utils import constant_value, static_shape
from .channel_affine import rebind

# The findings lists of the collect_findings() blocks around the running passes, innermost last.
_COLLECTORS: contextvars.ContextVar[tuple[list, ...]] = contextvars.ContextVar("edgetvm_findings", default=())


class GraphPass:
    """Base of every edgetvm graph pass; see the module docstring for what a subclass writes."""

    name: ClassVar[str] = ""  # the TVM pass name, CamelCase (set by @graph_pass): the report's key too

    def __init__(self):
        self.findings: dict = {}

    def new_findings(self) -> dict:
        return {}

    def visits(self, gvar: tvm.ir.GlobalVar, func) -> bool:
        return isinstance(func, relax.Function) and not func.attrs.get("Primitive", False)

    def rewrite_function(self, gvar: tvm.ir.GlobalVar, func: relax.Function,
                         mod: tvm.IRModule) -> relax.Function | tvm.IRModule | None:
        raise NotImplementedError(f"{type(self).__name__} does not rewrite functions")

    def finish(self, mod: tvm.IRModule) -> tvm.IRModule:
        return mod

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """The driver (TVM calls it): fresh findings, each visited function rewritten, ``finish``."""
        self.findings = self.new_findings()
        out = mod
        # Passes this one runs itself (a calibration run compiling a copy of the model: ClusterWeights'
        # refit) did not run on the model: their findings stay out of the report's.
        outer = _COLLECTORS.set(())
        try:
            for gvar, func in list(mod.functions.items()):
                if not self.visits(gvar, func):
                    continue
                rewritten = self.rewrite_function(gvar, func, out)
                if isinstance(rewritten, tvm.IRModule):
                    out = rewritten
                elif rewritten is not None:
                    if out is mod:
                        out = mod.clone()  # the caller's module stays as it was
                    out[gvar] = rewritten
            out = self.finish(out)
        finally:
            _COLLECTORS.reset(outer)
        for found in _COLLECTORS.get():
            found.append((self.name or type(self).__name__, self.findings))
        return out


def graph_pass(name: str, *, opt_level: int = 0):
    """Class decorator: the :class:`GraphPass` subclass as a ``tvm.transform.ModulePass`` named ``name``,
    the name its findings have in ``CompileReport.details`` and ``report.passes``."""

    def wrap(cls: type[GraphPass]):
        if not issubclass(cls, GraphPass):
            raise TypeError(f"@graph_pass decorates GraphPass subclasses, not {cls.__name__}")
        cls.name = name
        return tvm.transform.module_pass(opt_level=opt_level, name=name)(cls)

    return wrap


@contextlib.contextmanager
def collect_findings() -> Iterator[list[tuple[str, dict]]]:
    """``(report key, findings)`` of every graph pass that runs inside the block, in order, nested
    ``Sequential`` included (TVM's own passes report nothing)."""
    found: list[tuple[str, dict]] = []
    token = _COLLECTORS.set((*_COLLECTORS.get(), found))
    try:
        yield found
    finally:
        _COLLECTORS.reset(token)


@relax.expr_functor.mutator
class MatchedBindingRewriter(relax.PyExprMutator):
    """The per-function driver of a pattern pass: every binding whose value is a call ``pattern``
    matches (the call itself: ``y = x`` aliases would match too, through ``var2val``) is offered to
    ``rewrite(binding, var2val, visit)``, which returns the new value for the binding's variable or
    None to keep it. ``run`` gives the rewritten function, or None when nothing changed."""

    def __init__(self, mod: tvm.IRModule, pattern, rewrite):
        super().__init__(mod)
        self.pattern = pattern
        self.rewrite = rewrite
        self.changed = False
        self.var2val = None

    def run(self, func: relax.Function) -> relax.Function | None:
        self.var2val = relax.analysis.get_var2val(func)
        new_func = self.visit_expr(func)
        return relax.analysis.remove_all_unused(new_func) if self.changed else None

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if isinstance(value, relax.Call) and self.pattern.extract_matched_expr(value, self.var2val) is not None:
            new_value = self.rewrite(binding, self.var2val, self.visit_expr)
            if new_value is not None:
                rebind(self.builder_, binding.var, new_value)
                self.changed = True
                return
        super().visit_var_binding_(binding)


class BindingRewritePass(GraphPass):
    """A graph pass that rewrites, one by one, the bindings whose call its ``pattern`` (``tvm.relax.dpl``)
    matches: the subclass sets ``self.pattern`` and writes ``rewrite_binding(binding, var2val, visit)``
    (the binding's new value, or None to keep it, a decline's reason in ``findings["declined"]``)."""

    def new_findings(self) -> dict:
        return {"rewritten": 0, "declined": []}

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function | None:
        return MatchedBindingRewriter(mod, self.pattern, self.rewrite_binding).run(func)

    def rewrite_binding(self, binding: relax.VarBinding, var2val, visit) -> relax.Expr | None:
        raise NotImplementedError(f"{type(self).__name__} does not rewrite bindings")


class NHWCConvRewritePass(BindingRewritePass):
    """A :class:`BindingRewritePass` over ``conv2d`` calls (after ``layout.channels_last``): the subclass
    writes ``check(call, weight, in_shape)`` (why the conv stays, None to rewrite it; the layout and
    constant-weight checks are :meth:`layout_reason`'s) and ``rewrite_conv(call, weight, in_shape, visit)``;
    a reason ``not_a_candidate`` accepts (a conv the pass is not about) is not reported as declined."""

    def __init__(self):
        super().__init__()
        self.pattern = is_op("relax.nn.conv2d")(wildcard(), wildcard())

    @staticmethod
    def layout_reason(call: relax.Call, weight) -> str | None:
        attrs = call.attrs
        if str(attrs.data_layout) != "NHWC" or str(attrs.kernel_layout) != "HWIO":
            return f"layout {attrs.data_layout}/{attrs.kernel_layout}: only NHWC/HWIO (after channels_last)"
        if weight is None or weight.ndim != 4:
            return "the weight is not a constant"
        return None

    def not_a_candidate(self, reason: str) -> bool:
        return reason.startswith("layout")

    def rewrite_binding(self, binding: relax.VarBinding, var2val, visit) -> relax.Expr | None:
        call = binding.value
        weight = constant_value(call.args[1], var2val)
        in_shape = static_shape(call.args[0])
        reason = self.layout_reason(call, weight) or self.check(call, weight, in_shape)
        if reason is not None:
            if not self.not_a_candidate(reason):
                self.findings["declined"].append({"conv": str(binding.var.name), "reason": reason})
            return None
        self.findings["rewritten"] += 1
        return self.rewrite_conv(call, weight, in_shape, visit)

"""The graph pass protocol (transform/base.py): a pass built on it composes in a Sequential, reports
its findings there and through run_passes, and a non-default pass's findings reach the compile report."""

from __future__ import annotations

import numpy as np
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import edgetvm
from edgetvm.passes import FoldBatchNorm, FoldQuantScales
from edgetvm.relax_utils import op_name
from edgetvm.transform.base import GraphPass, collect_findings, graph_pass
from edgetvm.transform.pipeline import run_passes

from .relax_numerics import run_relax


@relax.expr_functor.mutator
class _CollapseRelu(relax.PyExprMutator):
    def __init__(self, mod, findings: dict):
        super().__init__(mod)
        self.findings = findings

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        inner = call.args[0] if op_name(call) == "relax.nn.relu" else None
        if isinstance(inner, relax.Var) and self.lookup_binding(inner) is not None:
            inner = self.lookup_binding(inner)
        if op_name(inner) != "relax.nn.relu":
            return call
        self.findings["collapsed"] += 1
        return inner


@graph_pass("CollapseDoubleRelu")
class CollapseDoubleRelu(GraphPass):
    """``relu(relu(x)) = relu(x)``: the smallest pass on the base."""

    def new_findings(self) -> dict:
        return {"collapsed": 0}

    def rewrite_function(self, gvar, func, mod):
        seen = self.findings["collapsed"]
        rewritten = _CollapseRelu(mod, self.findings).visit_expr(func)
        return relax.analysis.remove_all_unused(rewritten) if self.findings["collapsed"] > seen else None


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            a = R.nn.relu(x)
            b = R.nn.relu(a)
            c = R.add(b, b)
            R.output(c)
        return c


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            a = R.nn.relu(x)
            c = R.add(a, a)
            R.output(c)
        return c


def test_a_pass_on_the_base_is_a_tvm_pass_with_findings():
    collapse = CollapseDoubleRelu()
    assert isinstance(collapse, tvm.transform.Pass) and collapse.info.name == "CollapseDoubleRelu"
    before = Before
    after = collapse(before)
    tvm.ir.assert_structural_equal(after, Expected)
    assert collapse.findings == {"collapsed": 1}
    # The caller's module stays as it was, and a pass with nothing to do leaves the module alone.
    assert op_name(before["main"].body.blocks[0].bindings[1].value) == "relax.nn.relu"
    again = CollapseDoubleRelu()
    assert again(Expected).same_as(Expected) and again.findings == {"collapsed": 0}
    x = np.random.default_rng(0).standard_normal((1, 4)).astype("float32")
    np.testing.assert_allclose(run_relax(after, x), run_relax(before, x))


def test_findings_reported_from_inside_a_sequential():
    collapse = CollapseDoubleRelu()
    seq = tvm.transform.Sequential([collapse, relax.transform.DeadCodeElimination(), FoldBatchNorm()], name="Cleanup")
    with collect_findings() as found:
        after = seq(Before)
    tvm.ir.assert_structural_equal(after, Expected)
    assert collapse.findings == {"collapsed": 1}
    assert [key for key, _ in found] == ["CollapseDoubleRelu", "FoldBatchNorm"]
    assert found[0][1] == {"collapsed": 1}

    # run_passes: a graph pass under its own name, a Sequential with what the graph passes inside found,
    # TVM's own passes with None.
    _, ran = run_passes(Before, [CollapseDoubleRelu(), tvm.transform.Sequential([CollapseDoubleRelu()], name="Seq"),
                                 relax.transform.DeadCodeElimination()])
    assert ran == [("CollapseDoubleRelu", {"collapsed": 1}), ("Seq", {"CollapseDoubleRelu": {"collapsed": 0}}),
                   ("DeadCodeElimination", None)]


@graph_pass("MeasureOnACopy")
class MeasureOnACopy(GraphPass):
    """A pass that runs another graph pass on a copy of the module to measure it (as ClusterWeights'
    calibration run compiles the model) and changes nothing."""

    def rewrite_function(self, gvar, func, mod):
        CollapseDoubleRelu()(mod)
        self.findings["measured"] = True
        return None


def test_passes_a_pass_runs_itself_stay_out_of_the_report():
    # RetinaFace's ClusterWeights findings came back as {"FoldConstantsWithNumpy": ..., "ClusterWeights": ...}
    # (the refit's host compile), so the bench and the compile report read no clustered layer.
    _, ran = run_passes(Before, [MeasureOnACopy(), tvm.transform.Sequential([MeasureOnACopy()], name="Seq")])
    assert ran == [("MeasureOnACopy", {"measured": True}), ("Seq", {"MeasureOnACopy": {"measured": True}})]


def qdq_requantize():
    """``x -> Q(s1) -> DQ(s1) -> Q(s2) -> DQ(s2)``: the second quantize folds into one requantize kernel,
    the first has no integer input to fold (a decline with its reason)."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s1"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s2"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z"], ["q1"]),
             helper.make_node("DequantizeLinear", ["q1", "s1", "z"], ["d1"]),
             helper.make_node("QuantizeLinear", ["d1", "s2", "z"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_compile_reports_the_findings_of_a_pass_given_by_the_user():
    fold = FoldQuantScales()
    compiled = edgetvm.compile(qdq_requantize(), passes=[fold])
    assert compiled.report.passes == ["EliminateCommonSubexpr", "FoldBatchNorm", "FoldScaleShift", "PReLUToLeakyReLU",
                                      "FoldQuantScales"]
    details = compiled.report.details["FoldQuantScales"]
    assert details is fold.findings
    assert details["kernels"] == {"requantize": 1} and details["folded"] == 1
    assert len(details["declined"]) == 1 and "requantize: input is Var, not dequantize" in details["declined"][0]["reason"]
    x = np.random.default_rng(1).uniform(-3, 3, (1, 4, 4, 4)).astype("float32")
    expected = np.clip(np.round(np.clip(np.round(x / 0.05), -128, 127) * 0.05 / 0.1), -128, 127) * 0.1
    np.testing.assert_allclose(compiled(x), expected, atol=0.1 + 1e-6)

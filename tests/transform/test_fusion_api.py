"""The compile API and CLI hooks of the fusion passes: on by default, reported, and switchable off."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetvm.api as api
from edgetvm.cli.main import build_parser
from edgetvm.cli.options import compile_kwargs
from edgetvm.errors import InputError
from edgetvm.transform import FoldBatchNorm


def conv_bn_prelu():
    rng = np.random.default_rng(3)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)), "gamma": rng.uniform(0.5, 1.5, 4),
             "beta": rng.standard_normal(4), "mean": rng.standard_normal(4), "var": rng.uniform(0.5, 1.5, 4),
             "slope": np.array([0.25])}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"]),
             helper.make_node("PRelu", ["bn", "slope"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def twice_computed_conv():
    """RetinaFace's imported SSH in small: one conv + ReLU computed twice (two ONNX nodes, same input and
    weights), each copy read by a different conv."""
    rng = np.random.default_rng(4)
    inits = {"w": rng.standard_normal((8, 3, 3, 3)), "wa": rng.standard_normal((8, 8, 3, 3)),
             "wb": rng.standard_normal((8, 8, 3, 3))}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["x", "w"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r1", "wa"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["r2", "wb"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_computation_the_model_repeats_runs_once(quantize):
    from tvm import relax

    model = twice_computed_conv()
    rng = np.random.default_rng(0)
    kwargs = {"quantize": "int8", "calibration": [rng.uniform(-1, 1, (1, 3, 8, 8)).astype("float32") for _ in range(4)]
              } if quantize else {}
    # Direct convs (no Winograd), so that each conv is one kernel to count.
    compiled = api.compile(model, winograd=False, **kwargs)
    calls = [b.value.args[0].name_hint for block in compiled.scheduled["main"].body.blocks for b in block.bindings
             if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.call_tir"]
    assert len([c for c in calls if "conv" in c or "im2col" in c]) == 3, calls   # 4 ONNX convs, 3 distinct
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype("float32")
    if quantize is None:
        import onnxruntime as ort

        want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-4)


def test_compile_runs_and_reports_the_fusion_passes_by_default():
    model = conv_bn_prelu()
    fused = api.compile(model)
    plain = api.compile(model, fuse=False)
    assert fused.report.passes == ["EliminateCommonSubexpr", "FoldBatchNorm", "FoldScaleShift", "PReLUToLeakyReLU"]
    assert fused.report.details["FoldBatchNorm"]["folded"] == 1
    assert fused.report.details["PReLUToLeakyReLU"]["rewritten"] == 1
    assert plain.report.passes == [] and "FoldBatchNorm" not in plain.report.details
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    np.testing.assert_allclose(fused(x), plain(x), rtol=1e-5, atol=1e-5)


def test_extra_passes_run_after_fusion_and_bad_ones_are_refused():
    model = conv_bn_prelu()
    compiled = api.compile(model, fuse=False, passes=[FoldBatchNorm(decompose_unfoldable=False)])
    assert compiled.report.passes == ["FoldBatchNorm"]
    with pytest.raises(InputError, match="not a tvm.transform.Pass"):
        api.compile(model, passes=["FoldBatchNorm"])


def test_cli_no_fuse_switches_the_passes_off():
    args = build_parser().parse_args(["compile", "m.onnx", "-o", "m.so", "--no-fuse"])
    assert compile_kwargs(args)["fuse"] is False
    args = build_parser().parse_args(["compile", "m.onnx", "-o", "m.so"])
    assert compile_kwargs(args)["fuse"] is True


def test_cli_explain_prints_what_each_pass_did(tmp_path, capsys):
    from onnx import save

    from edgetvm.cli import main

    path = tmp_path / "conv_bn_prelu.onnx"
    save(conv_bn_prelu(), str(path))
    assert main(["compile", str(path), "-o", str(tmp_path / "m.so"), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "FoldBatchNorm: batch_norms=1, folded=1" in out and "(into conv2d: 1)" in out
    assert "PReLUToLeakyReLU: rewritten=1" in out

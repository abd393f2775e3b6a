"""After the fusion passes and ``legalize_and_fuse``, conv + bias (+ batch norm) + activation is ONE kernel.

The graphs come from ONNX through edgetvm's importer, so each activation is spelled exactly as the
importer spells it (HardSwish as add/clip/divide/multiply, PReLU with a shared slope as a (1,) slope,
and so on). Kernels that only move data between layouts (the channels-last transposes at the
model's input and output) are not counted.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetvm.frontends import load_model
from edgetvm.transform.pipeline import fusion_passes, run_passes
from edgetvm.schedules.lower import legalize_and_fuse
from edgetvm.targets import resolve_target

from .relax_numerics import kernel_calls

_LAYOUT_ONLY = {"transpose", "reshape", "layout_transform", "expand_dims", "squeeze"}

ACTIVATIONS = {
    "relu": [helper.make_node("Relu", ["z"], ["y"])],
    "relu6-clip": [helper.make_node("Clip", ["z", "zero", "six"], ["y"])],
    "prelu-per-channel": [helper.make_node("PRelu", ["z", "slope_c"], ["y"])],
    "prelu-shared": [helper.make_node("PRelu", ["z", "slope_1"], ["y"])],
    "leaky-relu": [helper.make_node("LeakyRelu", ["z"], ["y"], alpha=0.1)],
    "hard-swish": [helper.make_node("HardSwish", ["z"], ["y"])],
    "sigmoid": [helper.make_node("Sigmoid", ["z"], ["y"])],
    "none": [helper.make_node("Identity", ["z"], ["y"])],
    "residual-add-relu": [helper.make_node("Add", ["z", "x"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
    "residual-add": [helper.make_node("Add", ["z", "x"], ["y"])],
}


def conv_model(activation: list, *, batch_norm: bool, bias: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    c = 8
    inits = {
        "w": rng.standard_normal((c, c, 3, 3)) * 0.3,
        "b": rng.standard_normal(c),
        "zero": np.array(0.0), "six": np.array(6.0),
        "slope_c": rng.uniform(0.0, 0.3, (c, 1, 1)), "slope_1": np.array([0.2]),
        "gamma": rng.uniform(0.5, 1.5, c), "beta": rng.standard_normal(c),
        "mean": rng.standard_normal(c), "var": rng.uniform(0.5, 1.5, c),
    }
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["conv"], pads=[1, 1, 1, 1])]
    if batch_norm:
        nodes.append(helper.make_node("BatchNormalization", ["conv", "gamma", "beta", "mean", "var"], ["z"]))
    else:
        nodes.append(helper.make_node("Identity", ["conv"], ["z"]))
    nodes += activation
    graph = helper.make_graph(
        nodes, "conv_act",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 16, 16])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def compute_kernels(names: list[str]) -> list[str]:
    """The kernels that compute something, leaving out pure layout changes."""
    kept = []
    for name in names:
        ops = {re.sub(r"\d+$", "", op) for op in name.removeprefix("fused_").split("_")}
        if not ops <= _LAYOUT_ONLY:
            kept.append(name)
    return kept


@pytest.fixture(scope="module")
def host():
    return resolve_target("host")


@pytest.mark.parametrize("batch_norm", [True, False], ids=["conv-bn", "conv-bias"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS), ids=list(ACTIVATIONS))
def test_conv_bias_activation_is_one_kernel(host, activation, batch_norm):
    imported = load_model(conv_model(ACTIVATIONS[activation], batch_norm=batch_norm))
    mod, _ = run_passes(imported.mod, fusion_passes())
    kernels = compute_kernels(kernel_calls(legalize_and_fuse(mod, host)))
    assert len(kernels) == 1 and "conv2d" in kernels[0], kernels


def test_conv_without_bias_then_bn_is_one_kernel(host):
    imported = load_model(conv_model(ACTIVATIONS["prelu-per-channel"], batch_norm=True, bias=False))
    mod, _ = run_passes(imported.mod, fusion_passes())
    kernels = compute_kernels(kernel_calls(legalize_and_fuse(mod, host)))
    assert len(kernels) == 1 and "conv2d" in kernels[0], kernels

"""ONNX ops whose TVM conversion edgetvm replaces, checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

import edgetvm
from edgetvm.frontends.onnx import import_onnx

from . import tiny_models
from .checks import relative_error
from .test_real_models import onnxruntime_outputs


def test_variadic_max_min_sum_mean_are_binary_chains(rng):
    imported = import_onnx(tiny_models.conv_variadic_elementwise(rng))
    text = imported.mod.script()
    # TVM's static form stacks the operands into a 5-D tensor, which the channels-last layout could
    # not convert (a raw InternalError) and which costs a copy of every operand.
    assert "R.stack" not in text and "R.broadcast_to" not in text
    assert text.count("R.maximum(") == 3 and text.count("R.minimum(") == 1


@pytest.mark.parametrize("target", ["host", "armv7-neon"])
def test_max_min_by_a_scalar_compile_and_match_onnxruntime(rng, target):
    proto = tiny_models.conv_variadic_elementwise(rng)
    compiled = edgetvm.compile(proto, target)
    if target == "host":
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        assert relative_error(compiled(x), onnxruntime_outputs(proto, x)["y"]) <= 1e-6

"""The constants a TFLite model compiles to stay the size of its weights (issue 20).

TVM's TFLite PRELU converter broadcast each (1, 1, C) slope to the whole activation, and
FoldConstant then stored an H*W*C copy: FaceMesh's 2.42 MB of float32 weights compiled to 5.8 MB of
constants, palm_detection_lite's 3.8 MB to 14.1 MB. The frontend now keeps a per-channel slope.
FaceMesh is the smallest of MediaPipe's models that showed it.
"""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

import edgetvm
from edgetvm.backends.standalone import plan_static
from edgetvm.frontends.tflite import per_channel_slope
from edgetvm.relax_utils import bound_constant, is_tensor_constant
from edgetvm.zoo import fetch

from .checks import fp32_weight_bytes
from .test_real_models import litert_outputs



def constant_bytes(mod) -> int:
    seen = {}

    def visit(expr):
        if is_tensor_constant(expr):
            seen[expr] = bound_constant(expr).nbytes

    relax.analysis.post_order_visit(mod["main"], visit)
    return sum(seen.values())


@pytest.fixture(scope="module")
def facemesh():
    path = fetch("facemesh")
    return path, edgetvm.compile(path, "host")


def test_facemesh_constants_stay_within_its_float32_weights(facemesh):
    path, compiled = facemesh
    weights = fp32_weight_bytes(path)
    assert weights > 2_000_000  # FaceMesh: 0.6 M parameters
    # What both backends embed: the scheduled module's constants, and the standalone blob.
    assert constant_bytes(compiled.scheduled) <= 1.05 * weights
    assert len(plan_static(compiled.scheduled, compiled.target).weights) <= 1.05 * weights


def test_facemesh_matches_litert(facemesh, rng):
    """The per-channel PReLU computes what LiteRT does."""
    path, compiled = facemesh
    x = rng.uniform(-1, 1, compiled.inputs[0].shape).astype(np.float32)
    reference = litert_outputs(path, x)
    outputs = compiled.run_dict(x)
    assert list(outputs) == list(reference)
    for name, expected in reference.items():
        assert np.abs(outputs[name] - expected).max() <= 1e-4 * np.abs(expected).max(), name


@pytest.mark.parametrize("alpha_shape", [(1, 1, 6), (6,), (1,), ()])
def test_slope_along_channels_becomes_a_vector(alpha_shape, rng):
    alpha = rng.standard_normal(alpha_shape).astype(np.float32)
    slope = per_channel_slope(alpha, [1, 4, 5, 6])
    assert slope.shape == (6,) and slope.dtype == np.float32
    np.testing.assert_array_equal(slope, np.broadcast_to(alpha, (1, 4, 5, 6))[0, 0, 0])


@pytest.mark.parametrize("alpha_shape", [(4, 5, 6), (1, 5, 6), (1, 1, 3), (1, 1, 1, 1, 6)])
def test_slope_varying_over_space_keeps_tvm_conversion(alpha_shape, rng):
    assert per_channel_slope(rng.standard_normal(alpha_shape).astype(np.float32), [1, 4, 5, 6]) is None

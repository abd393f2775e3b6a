"""MediaPipe models with custom ops, end to end: edgetvm's builds against LiteRT running every builtin
op with the custom ops computed by the numpy references (mediapipe_reference.py).

The ``mediapipe`` package itself is no reference here: 0.10.21 requires numpy<2 and protobuf<5,
which the test environment (numpy 2) cannot hold, and its solutions return post-processed masks and
normalized landmarks, not the models' raw tensors.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import edgetvm
from edgetvm import emulate
from edgetvm.zoo import fetch

from .checks import assert_outputs_match, relative_error
from .mediapipe_reference import litert_with_numpy_custom_ops


@functools.cache
def host_build(name: str) -> edgetvm.CompiledModel:
    return edgetvm.compile(fetch(name), "host")


def test_selfie_segmentation_matches_litert_with_numpy_custom_op(mediapipe_custom_op_inputs):
    x = mediapipe_custom_op_inputs["selfie_segmentation"]
    assert_outputs_match(host_build("selfie_segmentation").run_dict(x),
                         litert_with_numpy_custom_ops(fetch("selfie_segmentation"), x))


# (model, ARM vs host bound). The landscape segmenter's features before its custom op already differ
# by 1.9e-6 between the two builds (builtin convolutions, summed in another order); its last
# transposed convolution and sigmoid amplify that to 3.1e-5, as numpy in float64 reproduces on the
# two feature maps, so it is held to the reference's bound only.
# The general selfie segmenter: 9.95e-6 between the builds with the TIR depthwise schedule, 1.22e-5
# since the ARM build's depthwise convs run the NEON microkernel (kernels/neon_f32_dwconv.py: each
# window row summed into per-row accumulators; the fused vfma.f32 instead of vmla.f32 measured 1.59e-5),
# against a host build that is itself 1.8e-5 from the reference: the 1e-5 is missed by 1.22x.
@pytest.mark.arm
@pytest.mark.parametrize("name, arm_vs_host", [("selfie_segmentation", 1.5e-5), ("facemesh_attention", 1e-5),
                                               ("selfie_segmentation_landscape", 1e-4)])
def test_custom_op_models_on_host_and_arm_match_reference(mediapipe_custom_op_inputs, tmp_path, name, arm_vs_host):
    x = mediapipe_custom_op_inputs[name]
    arm = edgetvm.compile(fetch(name), "armv7-neon")
    arm.export(tmp_path / "model.so", standalone=True)
    result = emulate.run_standalone_arm(tmp_path / "model.so", [x], cpu=arm.target.qemu_cpu)
    host = host_build(name).run_dict(x)
    got = {spec.name: out for spec, out in zip(result.output_specs, result.outputs)}
    reference = litert_with_numpy_custom_ops(fetch(name), x)
    assert_outputs_match(host, reference)
    assert_outputs_match(got, reference)
    for output, value in host.items():
        assert relative_error(got[output], value) <= arm_vs_host, output
    if name == "facemesh_attention":
        # A face is found, so the eye and lip crops sample the face (the custom ops' real path).
        assert reference["conv_faceflag"].item() > 0

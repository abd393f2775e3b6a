"""A standalone ARM artifact: refused on the host with a hint, run under qemu when asked."""

import numpy as np
import onnxruntime as ort
import pytest

import edgetvm
from edgetvm.errors import ArtifactError

from .test_artifacts_and_inputs import small_conv_model


@pytest.mark.arm
def test_arm_standalone_artifact_runs_only_when_emulation_is_asked_for(tmp_path):
    model = small_conv_model()
    path = edgetvm.compile(model, "armv7-neon").export(tmp_path / "arm.so", standalone=True)
    with pytest.raises(ArtifactError, match=r"built for target armv7-neon .*emulate=True"):
        edgetvm.load(path)
    runner = edgetvm.load(path, emulate=True)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 12)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"image": x})[0]
    np.testing.assert_allclose(runner(image=x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())

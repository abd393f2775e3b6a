"""benchmarks/bench_arm_host_parity.py: every kernel's result made an output, on the host build of a
small net (the ARM side is the test of test_mediapipe_models.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

import edgetvm

from ..schedules import nets

_SPEC = importlib.util.spec_from_file_location(
    "bench_arm_host_parity", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_arm_host_parity.py")
bench_arm_host_parity = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_arm_host_parity)


def test_every_kernel_result_becomes_an_output_after_the_models_own():
    model = nets.mini_mobilefacenet(hw=16)
    plain = edgetvm.compile(model, "host", num_threads=1)
    x = np.random.default_rng(0).uniform(-1, 1, plain.inputs[0].shape).astype(np.float32)
    expected = plain.run_dict(x)
    tapped = edgetvm.compile(model, "host", num_threads=1)
    taps = bench_arm_host_parity.with_kernel_outputs(tapped)
    got = tapped.run_dict(x)
    kernels = plain.report.details["schedules"]["kernels"]
    assert len(taps) >= 5 and all(bench_arm_host_parity.kernel_name(tap) in kernels for tap in taps)
    assert list(got) == [*expected, *taps]
    (output,) = expected
    np.testing.assert_array_equal(got[output], expected[output])
    # The model's output is its last kernel's result.
    np.testing.assert_array_equal(got[taps[-1]].reshape(expected[output].shape), expected[output])

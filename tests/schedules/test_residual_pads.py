"""A channel pad on a conv's residual path stays its own kernel on ARMv7 (``schedules/residual_pads.py``),
so the conv runs on the fused NEON GEMM tile: BlazeFace's ``relu(conv1x1(dw(x)) + b + pad_c(x))``."""

from __future__ import annotations

import numpy as np
import pytest

import edgetvm
from edgetvm import emulate
from edgetvm.zoo import fetch

from ..kernels.arm_checks import ARM


@pytest.fixture(scope="module")
def blazeface():
    path = fetch("blazeface")
    return path, edgetvm.compile(path, ARM, num_threads=1)


def _rules(compiled) -> dict[str, str]:
    return compiled.report.details["schedules"]["kernels"]


def test_residual_pads_are_kernels_of_their_own_and_their_convs_take_the_fused_tile(blazeface):
    path, compiled = blazeface
    rules = _rules(compiled)
    # BlazeFace short widens its channels in 7 blocks (24 -> 28 ... 88 -> 96): each pad its own kernel.
    pads = [name for name, rule in rules.items() if rule.startswith("pad")]
    assert len(pads) >= 7, rules
    assert not [name for name in rules if name.startswith("fused_conv2d") and "_pad" in name], rules
    # The widening convs whose channels the 4-wide tile divides take it with their residual (the 4
    # plain residual blocks did before; 36 -> 42 is padded to 44 channels and sliced,
    # transform.PadConvOutputChannels: its tile has no residual, the add comes after the slice).
    residual_tiles = [rule for rule in rules.values() if rule.startswith("neon-gemm") and "_res" in rule]
    assert len(residual_tiles) == 11, rules
    host_rules = _rules(edgetvm.compile(path, "host", num_threads=1))
    fused_on_host = [name for name in host_rules if name.startswith("fused_conv2d") and "_pad" in name]
    assert fused_on_host, "the host build keeps the pads fused: the rule is ARM's alone"


def test_a_model_without_channel_pads_is_unchanged():
    from ..schedules import nets

    compiled = edgetvm.compile(nets.mini_mobilefacenet(hw=16), ARM, num_threads=1)
    assert not [rule for rule in _rules(compiled).values() if rule.startswith("pad")]


@pytest.mark.arm
def test_arm_build_equals_the_host_build_bit_for_bit(blazeface, tmp_path):
    path, compiled = blazeface
    x = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    so = compiled.export(tmp_path / "blazeface.so", standalone=True)
    arm = emulate.run_standalone_arm(so, [x], cpu=compiled.target.qemu_cpu).outputs
    host = edgetvm.compile(path, "host", num_threads=1).run_dict(x)
    assert len(arm) == len(host) == 2
    for got, want in zip(arm, host.values()):
        np.testing.assert_array_equal(got.view(np.uint32), np.asarray(want, np.float32).view(np.uint32))

"""Constant pads as a row-wise copy and fill (schedules/padding.py, kernels/neon_f32_copy.py): which
kernels the rule takes, its assembly, and its output against ``numpy.pad`` on the host and, through
the NEON copy assembly, under qemu (bit for bit: a pad only moves floats)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, te, tirx, topi

from edgetvm import emulate
from edgetvm.backends.standalone import export_standalone
from edgetvm.kernels.neon_f32_copy import copy_asm, widen3_asm
from edgetvm.schedules.cpu import CpuScheduleConfig, schedule_kernel
from edgetvm.schedules.lower import legalize_and_fuse, schedule_kernels
from edgetvm.schedules.padding import match_constant_pad
from edgetvm.specs import ImportedModel, TensorSpec
from edgetvm.targets import resolve_target

# (input shape NHWC, (before, after) per axis): BlazeFace full range's 1-pixel pad before a depthwise
# conv, a channel pad (TFLite PAD on the channel axis before a residual add), both at once with odd
# sizes (runs shorter than the assembly's 16 floats), and a batch pad.
PADS = {
    "spatial": ((1, 12, 10, 32), ((0, 0), (1, 1), (1, 1), (0, 0))),
    "channels": ((1, 6, 5, 40), ((0, 0), (0, 0), (0, 0), (0, 8))),
    "spatial and channels": ((1, 7, 5, 3), ((0, 0), (2, 1), (1, 3), (0, 1))),
    "batch": ((2, 3, 4, 5), ((1, 0), (0, 0), (0, 0), (0, 0))),
    "stem": ((1, 5, 11, 3), ((0, 0), (1, 1), (1, 1), (0, 1))),
}


def pad_module(shape, widths) -> relax.Function:
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.nn.pad(x, [w for pair in widths for w in pair])))
        bb.emit_func_output(out)
    return bb.get()


def scheduled_pad(shape, widths, target):
    report = {}
    mod = schedule_kernels(legalize_and_fuse(pad_module(shape, widths), target), target, 1, report)
    return mod, report


def test_a_legalized_pad_and_a_chain_of_pads_match_with_summed_offsets():
    x = te.placeholder((1, 6, 6, 3), name="x")
    once = topi.nn.pad(x, [0, 1, 2, 0], [0, 1, 0, 0])
    twice = topi.nn.pad(once, [0, 0, 0, 0], [0, 0, 0, 1])
    pad = match_constant_pad(te.create_prim_func([x, twice]))
    assert pad is not None and pad.before == (0, 1, 2, 0) and [int(d) for d in pad.out.shape] == [1, 8, 8, 4]


def test_rule_declines_what_is_not_a_constant_pad():
    x = te.placeholder((1, 6, 6, 4), name="x")
    plus = te.compute((1, 8, 8, 4), lambda n, h, w, c: tirx.if_then_else(
        tirx.all(h >= 1, h < 7, w >= 1, w < 7), x[n, h - 1, w - 1, c] + 1.0, 0.0))
    # A bound test that is not the input's box (a crop of the interior to zero).
    short = te.compute((1, 8, 8, 4), lambda n, h, w, c: tirx.if_then_else(
        tirx.all(h >= 2, h < 7, w >= 1, w < 7), x[n, h - 1, w - 1, c], 0.0))
    for out in (plus, short):
        assert match_constant_pad(te.create_prim_func([x, out])) is None
        config = CpuScheduleConfig(lanes=4, accumulators=8, num_threads=1)
        assert schedule_kernel(te.create_prim_func([x, out]), config).rule != "pad"


@pytest.mark.parametrize("floats", [32, 96, 59, 3])
def test_copy_assembly_moves_32_floats_per_step_then_the_rest(floats):
    lines = copy_asm(floats, zero=False)
    steps, rest = divmod(floats, 32)
    loads = [line for line in lines if line.startswith("vld1.32")]
    stores = [line for line in lines if line.startswith("vst1.32")]
    assert len(loads) == len(stores)
    per_step = 4 if steps else 0
    assert len(loads) == per_step + bin(rest).count("1") + (rest >= 16)
    assert ("bne 1b" in lines) == (steps > 1)
    zero = copy_asm(floats, zero=True)
    assert not any(line.startswith("vld1") for line in zero) and len([s for s in zero if s.startswith("vst1")]) == len(stores)


@pytest.mark.parametrize("pixels", [4, 12, 7, 1])
def test_widening_assembly_reads_3_floats_and_writes_4_per_pixel(pixels):
    lines = widen3_asm(pixels)
    lanes = {"vld3.32": 0, "vst4.32": 0}
    for line in lines:
        op = line.split()[0]
        if op in lanes:
            lanes[op] += 1 if "[0]" in line else 2
    # The loop's step is written once and runs pixels // 4 times.
    steps, rest = divmod(pixels, 4)
    written = (4 if steps else 0) + rest
    assert lanes == {"vld3.32": written, "vst4.32": written}
    assert ("bne 1b" in lines) == (steps > 1)


@pytest.mark.parametrize("case", PADS)
def test_pad_on_host_equals_numpy(case):
    shape, widths = PADS[case]
    target = resolve_target("host")
    mod, report = scheduled_pad(shape, widths, target)
    assert set(report["kernels"].values()) and all(rule.startswith("pad") for rule in report["kernels"].values())
    vm = relax.VirtualMachine(tvm.compile(mod, target=target.tvm_target), tvm.cpu())
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), np.pad(x, widths))


@pytest.mark.arm
@pytest.mark.parametrize("case", PADS)
def test_pad_on_arm_is_numpy_bit_for_bit(case, tmp_path):
    shape, widths = PADS[case]
    target = resolve_target("cortex-a7")
    mod, report = scheduled_pad(shape, widths, target)
    assert all(rule.startswith("pad") for rule in report["kernels"].values())
    out_shape = tuple(s + a + b for s, (a, b) in zip(shape, widths))
    imported = ImportedModel(pad_module(shape, widths), [TensorSpec("x", shape, "float32")],
                             [TensorSpec("y", out_shape, "float32")], "<pad>", "onnx")
    so = export_standalone(mod, imported, target, tmp_path / "pad.so", num_threads=1)[0]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    got = emulate.run_standalone_arm(so, [x], cpu=target.qemu_cpu).outputs[0]
    np.testing.assert_array_equal(got.view(np.uint32), np.pad(x, widths).view(np.uint32))

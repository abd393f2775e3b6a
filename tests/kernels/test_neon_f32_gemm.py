"""The ARMv7 fp32 GEMM microkernel of the 1x1 conv (kernels/neon_f32_gemm.py, schedules/cpu.py's
schedule_neon_f32_gemm): its assembly as documented, which convs take it, and its numbers against
a float64 numpy reference and the host build, under qemu."""

from __future__ import annotations

import re

import numpy as np
import pytest

import edgetvm
from edgetvm.backends.neon_microkernels import microkernel_calls, with_microkernels
from edgetvm.kernels.neon_f32_gemm import DEFINITIONS, F32_GEMM_TILES, f32_gemm_asm, f32_gemm_name

from ..schedules.nets import NetBuilder
from .arm_checks import ARM, assert_arm_matches_reference_and_host, schedule_rule


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("tile", F32_GEMM_TILES)
def test_assembly_step_is_loads_and_lane_multiply_accumulates_only(tile, steps):
    tile_h, tile_w, vectors = tile
    pixels = tile_h * tile_w
    lines = f32_gemm_asm(*tile, steps)
    loop = lines[lines.index("1:") + 1:]
    body = loop[:loop.index("subs $7, $7, #1")]
    assert len(body) % steps == 0 and body == body[:len(body) // steps] * steps
    step = body[:len(body) // steps]
    macs = [line for line in step if line.startswith("vmla.f32")]
    loads = [line for line in step if line.startswith("vld1.32")]
    # One vmla per 4 MACs, one input load per pixel, one weight load per depth: nothing else.
    assert len(macs) == 4 * pixels * vectors and len(loads) == pixels + 4 and len(step) == len(macs) + len(loads)
    for line in macs:
        acc, weight, lane = re.fullmatch(r"vmla\.f32 q(\d+), q(\d+), d(\d+)\[([01])\]", line).group(1, 2, 3)
        # The lane form takes its scalar from d0-d15 only; accumulators never double as operands.
        assert int(lane) < 16 and int(acc) >= 8 and int(weight) < 8
    assert lines[0].startswith("vldmia $0") and lines[-1].startswith("vstmia $0")


def test_definitions_replace_the_declarations_of_every_tile():
    names = [f32_gemm_name(*tile, steps) for tile in F32_GEMM_TILES for steps in (1, 2)]
    declares = "\n".join(f"declare i32 @{name}(ptr, ptr, i32, i32, i32, ptr, i32, i32) local_unnamed_addr"
                         for name in names)
    ir = with_microkernels(declares)
    assert not microkernel_calls(ir)
    for name in names:
        assert DEFINITIONS[name] in ir


def test_calls_become_the_assembly_statement_itself():
    name = f32_gemm_name(1, 4, 2, 2)
    ir = (f"define void @k(ptr %c, ptr %x, ptr %w) {{\n"
          f"  %3 = tail call i32 @{name}(ptr nonnull %c, ptr %x, i32 64, i32 -48, i32 -176, ptr %w, i32 512, i32 8), !dbg !7\n"
          f"  ret void\n}}\n\ndeclare i32 @{name}(ptr, ptr, i32, i32, i32, ptr, i32, i32) local_unnamed_addr\n")
    out = with_microkernels(ir)
    body = out[:out.index("\n}\n")]
    # No call is left in the kernel: the loop is its own statement, the result a constant.
    assert f"call i32 @{name}" not in body and "asm sideeffect" in body and "vmla.f32" in body
    assert "(ptr nonnull %c, ptr %x, i32 64, i32 -48, i32 -176, ptr %w, i32 512, i32 8), !dbg !7" in body
    assert "%3 = add i32 0, 0" in body


def pointwise_net(cin: int, cout: int, h: int, w: int, stride: int = 1, residual: bool = False, seed: int = 0):
    """1x1 conv + bias + PReLU [+ residual add], and a float64 numpy reference of it."""
    b = NetBuilder((1, cin, h, w), seed=seed)
    y = b.prelu(b.conv("input", cin, cout, 1, stride, pad=0), cout)
    if residual:
        y = b.node("Add", [y, "input"])
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    model = b.build(y, (1, cout, ho, wo))
    consts = {t.name: np.frombuffer(t.raw_data, np.float32).reshape(t.dims) if t.raw_data else None for t in model.graph.initializer}
    weight, bias, slope = (consts[n].astype(np.float64) for n in [*model.graph.node[0].input[1:], model.graph.node[1].input[1]])

    def reference(x: np.ndarray) -> np.ndarray:
        xs = x.astype(np.float64)[:, :, ::stride, ::stride]
        out = np.einsum("nchw,oc->nohw", xs, weight[:, :, 0, 0]) + bias.reshape(1, -1, 1, 1)
        out = np.where(out > 0, out, out * slope.reshape(1, -1, 1, 1))
        return out + xs if residual else out

    return model, reference


@pytest.mark.parametrize("cin,cout,h,w,tile", [
    (16, 16, 3, 8, "1x4x8"),     # width % 4
    (32, 16, 6, 6, "2x2x8"),     # the 14-wide stages: 2x2 pixels
    (16, 12, 2, 7, "1x7x4"),     # width 7, channels not a multiple of 8
])
def test_arm_pointwise_convs_take_the_tile_their_shape_allows(cin, cout, h, w, tile):
    model, _ = pointwise_net(cin, cout, h, w)
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    assert schedule_rule(compiled, "neon-gemm") and f"tile {tile} microkernel" in schedule_rule(compiled, "neon-gemm")


@pytest.mark.parametrize("net", [
    dict(cin=16, cout=16, h=4, w=8, stride=2),   # strided: a tile's pixels are not one contiguous run
    dict(cin=6, cout=16, h=4, w=8),              # depth not a multiple of 4
    dict(cin=16, cout=10, h=4, w=6),             # no tile divides 6 columns x 10 channels
])
def test_other_pointwise_convs_keep_the_register_tiled_schedule(net):
    model, _ = pointwise_net(**net)
    assert schedule_rule(edgetvm.compile(model, ARM, num_threads=1), "neon-gemm") is None


def test_host_never_takes_the_arm_microkernel():
    model, _ = pointwise_net(16, 16, 4, 8)
    assert schedule_rule(edgetvm.compile(model, "host", num_threads=1), "neon-gemm") is None


@pytest.mark.arm
@pytest.mark.parametrize("cin,cout,h,w,residual,threads", [
    (16, 16, 3, 8, True, 1),
    (32, 16, 6, 6, False, 1),
    (32, 32, 8, 16, False, 2),   # 4096 outputs: the tile loops run in parallel
    (16, 12, 2, 7, False, 1),
    (64, 24, 4, 14, False, 1),   # 2x2x8 over several tiles and channel blocks
])
def test_arm_microkernel_matches_numpy_and_the_host_build(cin, cout, h, w, residual, threads, tmp_path):
    model, reference = pointwise_net(cin, cout, h, w, residual=residual)
    x = np.random.default_rng(1).uniform(-1, 1, (1, cin, h, w)).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=threads)
    assert schedule_rule(compiled, "neon-gemm")
    assert_arm_matches_reference_and_host(compiled, model, reference, x, threads, tmp_path)


def test_int8_microkernel_calls_become_the_assembly_statement_too():
    from edgetvm.kernels.neon_q8_gemm import DEFINITIONS as Q8_DEFINITIONS

    name = next(iter(Q8_DEFINITIONS))
    ir = (f"define i32 @k(ptr %a) {{\n  %r = call i32 @{name}(ptr %a, ptr %a, ptr %a, ptr %a, i32 2)\n  ret i32 %r\n}}\n\n"
          f"declare i32 @{name}(ptr, ptr, ptr, ptr, i32) local_unnamed_addr\n")
    body = with_microkernels(ir).split("\n}\n")[0]
    assert f"call i32 @{name}(" not in body and "vmull.s8" in body and "%r = add i32 0, 0" in body

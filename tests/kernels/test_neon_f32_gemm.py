"""The ARMv7 fp32 GEMM microkernel of the 1x1 conv (kernels/neon_f32_gemm.py, schedules/cpu.py's
schedule_neon_f32_gemm): its assembly as documented, which convs take it, and its numbers against
a float64 numpy reference and the host build, under qemu."""

from __future__ import annotations

import re

import numpy as np
import pytest

import edgetvm
from edgetvm.backends.neon_microkernels import microkernel_calls, with_microkernels
from tvm import tirx

from edgetvm.kernels.neon_f32_gemm import (DEFINITIONS, F32_GEMM_TILES, Epilogue, epilogue_asm, epilogue_fits, f32_gemm_asm,
                                         f32_gemm_name, f32_gemm_tile_asm, f32_gemm_tile_call,
                                         f32_gemm_tile_definition_of, f32_gemm_tile_name, run_fits)

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


def _consts(model) -> dict[str, np.ndarray]:
    return {t.name: np.frombuffer(t.raw_data, np.float32).reshape(t.dims).astype(np.float64) for t in model.graph.initializer}


# The tails a 1x1 conv's epilogue is tested with: ONNX nodes after the conv, and their float64 reference.
TAILS = {
    "prelu": lambda y, slope: np.where(y > 0, y, y * slope),
    "relu6": lambda y, slope: np.clip(y, 0, 6),
    "leaky": lambda y, slope: np.where(y > 0, y, 0.1 * y),
    "sigmoid": lambda y, slope: 1 / (1 + np.exp(-y)),
    "none": lambda y, slope: y,
}


def pointwise_net(cin: int, cout: int, h: int, w: int, stride: int = 1, residual: bool = False, seed: int = 0,
                  tail: str = "prelu", bias: bool = True, relu_after_residual: bool = False):
    """1x1 conv [+ bias] + ``tail`` (a key of TAILS) [+ residual add [+ ReLU]], and a float64 numpy
    reference of it."""
    b = NetBuilder((1, cin, h, w), seed=seed)
    conv = b.conv("input", cin, cout, 1, stride, pad=0, bias=bias)
    y = {"prelu": lambda: b.prelu(conv, cout),
         "relu6": lambda: b.node("Clip", [conv, b.const(np.float32(0)), b.const(np.float32(6))]),
         "leaky": lambda: b.node("LeakyRelu", [conv], alpha=0.1),
         "sigmoid": lambda: b.node("Sigmoid", [conv]),
         "none": lambda: conv}[tail]()
    if residual:
        y = b.node("Add", [y, "input"])
        if relu_after_residual:
            y = b.node("Relu", [y])
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    model = b.build(y, (1, cout, ho, wo))
    consts = _consts(model)
    weight = consts[model.graph.node[0].input[1]][:, :, 0, 0]
    shift = consts[model.graph.node[0].input[2]] if bias else np.zeros(cout)
    slope = consts[model.graph.node[1].input[1]].reshape(1, -1, 1, 1) if tail == "prelu" else None

    def reference(x: np.ndarray) -> np.ndarray:
        xs = x.astype(np.float64)[:, :, ::stride, ::stride]
        out = TAILS[tail](np.einsum("nchw,oc->nohw", xs, weight) + shift.reshape(1, -1, 1, 1), slope)
        if residual:
            out = out + xs
        return np.maximum(out, 0) if relu_after_residual else out

    return model, reference


def epilogue_of(compiled) -> str | None:
    """The fused tile's name (``p4x8_b_prelu``, ...) in ``compiled``'s schedule report, None without one."""
    rule = schedule_rule(compiled, "neon-gemm")
    match = re.search(r"fused tile (\S+) microkernel", rule or "")
    return match.group(1) if match else None


@pytest.mark.parametrize("net,tile", [
    (dict(cin=16, cout=16, h=3, w=8), "p5x8_b_prelu"),
    (dict(cin=16, cout=16, h=6, w=6, residual=True), "p5x8_b_prelu_res"),
    (dict(cin=16, cout=12, h=2, w=7), "p7x4_b_prelu"),   # channels not a multiple of 8
    (dict(cin=16, cout=16, h=4, w=4, tail="relu6"), "p5x8_b_max00000000_min40c00000"),
    (dict(cin=16, cout=16, h=4, w=4, tail="leaky", bias=False), "p5x8_leaky3dcccccd"),
    (dict(cin=16, cout=16, h=4, w=4, tail="none", residual=True, relu_after_residual=True), "p5x8_b_res_max00000000"),
    (dict(cin=8, cout=16, h=3, w=8), "p5x8_b_prelu"),    # depth 8 (BlazeFace full's 8 -> 32 convs)
    (dict(cin=4, cout=8, h=3, w=8), "p5x8_b_prelu"),     # depth 4: one step
])
def test_arm_pointwise_convs_take_the_fused_tile_of_their_epilogue(net, tile):
    model, _ = pointwise_net(**net)
    assert epilogue_of(edgetvm.compile(model, ARM, num_threads=1)) == tile


@pytest.mark.parametrize("h,w,tile", [(3, 8, "tile 1x4x8"), (6, 6, "tile 2x2x8"), (2, 7, "tile 1x7x4")])
def test_a_tail_the_tile_cannot_compute_keeps_the_tensorized_tile(h, w, tile):
    model, _ = pointwise_net(16, 16 if w != 7 else 12, h, w, tail="sigmoid")
    rule = schedule_rule(edgetvm.compile(model, ARM, num_threads=1), "neon-gemm")
    assert rule and f"{tile} microkernel" in rule and "fused" not in rule


@pytest.mark.parametrize("epilogue", [
    Epilogue(True, (("prelu", None), ("res", None))),
    Epilogue(False, (("max", 0), ("min", 0x40C00000))),
    Epilogue(True, (("leaky", 0x3DCCCCCD), ("res", None), ("max", 0))),
])
@pytest.mark.parametrize("pixels,vectors", [(5, 2), (4, 2), (3, 2), (1, 2), (7, 1)])
def test_fused_tile_is_the_loop_then_the_epilogue_in_registers(epilogue, pixels, vectors):
    lines = f32_gemm_tile_asm(pixels, vectors, 2, epilogue)
    first, rest = lines[:lines.index("1:")], lines[lines.index("1:") + 1:]
    loop, tail = rest[:rest.index("bne 1b") + 1], rest[rest.index("bne 1b") + 1:]
    # With a bias the first step before the loop, its first depth's products starting every
    # accumulator once (no zeroing), then a branch into the loop's second step; without one the
    # accumulators zeroed (see test_a_zero_sum_keeps_its_sign_without_a_bias). Stored once per
    # pixel, never spilled.
    accumulators = list(range(16 - pixels * vectors, 16))
    if epilogue.bias:
        products = [line for line in first if line.startswith(("vmul.f32", "vmla.f32"))]
        assert not any(line.startswith("vmov") for line in first) and first[-1] == "b 3f"
        assert sorted(int(line.split(",")[0][10:]) for line in products[:len(accumulators)]) == accumulators
        assert all(line.startswith("vmul.f32") for line in products[:len(accumulators)])
        assert all(line.startswith("vmla.f32") for line in products[len(accumulators):])
        assert len(products) == 4 * pixels * vectors
    else:
        assert first == [f"vmov.i32 q{q}, #0" for q in accumulators]
    assert sum(line.startswith("vst1.32") for line in tail) == pixels and not any("vstm" in line for line in lines)
    assert sum(line.startswith("vmla.f32") for line in loop) == 2 * 4 * pixels * vectors
    per_vector = {"prelu": 3, "leaky": 2, "max": 1, "min": 1, "res": 1}
    ops = sum(per_vector[kind] for kind, _ in epilogue.ops) * pixels * vectors
    loads = pixels * ("res" in dict(epilogue.ops)) + ("prelu" in dict(epilogue.ops)) + epilogue.bias
    ops += pixels * vectors * epilogue.bias  # the bias added after the depth loop
    # 0 and 6.0 (a vmov.f32 immediate) one vmov each, 0.1 movw/movt/vdup.
    constants = sum(3 if bits == 0x3DCCCCCD else 1 for bits in epilogue.constants)
    assert len(tail) == ops + loads + constants + pixels
    # The accumulators are the top q registers, pixel-major; each pixel's row stored once.
    stored = [line.split("}")[0] for line in tail if line.startswith("vst1.32")]
    first = 16 - pixels * vectors
    assert stored == [f"vst1.32 {{d{2 * (first + p * vectors)}-d{2 * (first + (p + 1) * vectors) - 1}" for p in range(pixels)]


@pytest.mark.parametrize("depth,name,iterations", [
    (4, "p5x8_u0_b_prelu", 0), (32, "p5x8_s8_u0_b_prelu", 0), (40, "p5x8_u2_b_prelu", 5),
    (36, "p5x8_b_prelu", 9), (64, "p5x8_u4_b_prelu", 4),
])
def test_shallow_depths_run_straight_and_deep_ones_enter_the_loop_after_the_first_step(depth, name, iterations):
    epilogue = Epilogue(True, (("prelu", None),))
    addresses = {key: tirx.Var(key, "handle") for key in ("out", "x", "w", "bias", "slope")}
    call = f32_gemm_tile_call(5, 2, depth, 16, epilogue, addresses)
    assert call.args[0].value == f"edgetvm_neon_f32_gemm_{name}" and call.args[8].value == iterations
    match = re.fullmatch(r"p5x8(?:_s(\d+))?(?:_u(\d+))?_b_prelu", name)
    straight, steps = int(match.group(1) or 1), int(match.group(2) or 1)
    lines = f32_gemm_tile_asm(5, 2, steps, epilogue, straight)
    # Every depth multiplied once per accumulator; a loop only past the straight steps.
    lane_products = [line for line in lines if re.fullmatch(r"v(mla|mul)\.f32 q\d+, q\d+, d\d+\[[01]\]", line)]
    assert len(lane_products) == 40 * (straight + steps) and sum(line.startswith("vmul") for line in lane_products) == 10
    assert 4 * (steps * iterations if steps else straight) == depth
    if steps:
        # The first step, then a branch into the loop past its first step: the loop's code once more.
        assert lines[lines.index("b 3f") + 1] == "1:" and lines.index("3:") - lines.index("1:") - 1 == lines.index("b 3f")
    assert ("bne 1b" in lines) == (steps > 0) and f"edgetvm_neon_f32_gemm_{name}" in f32_gemm_tile_definition_of(
        f"edgetvm_neon_f32_gemm_{name}")


@pytest.mark.parametrize("depth,straight,steps,iterations", [(32, 8, 0, 0), (24, 6, 0, 0), (64, 1, 4, 4)])
def test_a_run_repeats_the_tile_stepping_x_on_and_w_back(depth, straight, steps, iterations):
    epilogue = Epilogue(True, (("prelu", None), ("res", None)))
    addresses = {key: tirx.Var(key, "handle") for key in ("out", "x", "w", "bias", "slope", "res")}
    call = f32_gemm_tile_call(5, 2, depth, 16, epilogue, addresses, tirx.Var("n", "int64"))
    name = f32_gemm_tile_name(5, 2, steps, epilogue, straight, iterations)
    assert call.args[0].value == name and name.endswith(f"_r{iterations}_b_prelu_res")
    lines = f32_gemm_tile_asm(5, 2, steps, epilogue, straight, iterations)
    definition = f32_gemm_tile_definition_of(name)
    # The tile count first, then (with a loop) the loop counter, set per tile from the name.
    assert ("i32 %it, i32 %n, ptr %bias" if steps else "i32 %it, ptr %bias") in definition
    tile = lines[lines.index("2:") + 1:lines.index("bne 2b") + 1]
    assert tile[:1] == ([f"mov $8, #{iterations}"] if steps else tile[:1])
    x_step, w_step = "$2", "$6"
    # x from one pixel on (where the depth left it) to the next tile, 4 pixels; w back by the depth.
    assert [line for line in tile if line.startswith("add $1")] == [f"add $1, $1, {x_step}, lsl #2"]
    back = [int(line.rsplit("#", 1)[1]) for line in tile if line.startswith("sub $5")]
    assert sum(1 << b for b in back) == depth and all(line.endswith(f"{w_step}, lsl #{b}") for line, b in zip(
        [line for line in tile if line.startswith("sub $5")], back))
    assert tile[-2:] == ["subs $7, $7, #1", "bne 2b"] and lines[-1] == "bne 2b"
    # Constants that need movw/movt have no register in a run.
    assert not run_fits(Epilogue(True, (("leaky", 0x3DCCCCCD),))) and run_fits(Epilogue(True, (("max", 0), ("min", 0x40C00000))))


def test_fused_tile_definition_round_trips_its_name_and_keeps_the_steps_read_only():
    epilogue = Epilogue(True, (("prelu", None), ("res", None)))
    name = f32_gemm_tile_name(5, 2, 2, epilogue)
    definition = f32_gemm_tile_definition_of(name)
    assert (f"@{name}(ptr %out, ptr %x, i32 %xs, i32 %xr, i32 %xb, ptr %w, i32 %ws, i32 %it, ptr %bias, ptr %slope, "
            "ptr %res)") in definition
    # Tied (stepped by the assembly): out, x, w, it, res; read-only: the steps, bias and slope.
    assert '"=&r,=&r,=&r,=&r,=&r,0,1,2,3,4,r,r,r,r,r,r,' in definition
    assert "(ptr %out, ptr %x, ptr %w, i32 %it, ptr %res, i32 %xs, i32 %xr, i32 %xb, i32 %ws, ptr %bias, ptr %slope)" in definition
    # $ws (operand 6) is $13 in the statement: 5 outputs, 5 tied inputs, then xs, xr, xb, ws.
    assert "vst1.32 {d28-d31}, [$0 :128], $13" in definition
    assert f32_gemm_tile_definition_of(name + "_sigmoid") is None


def test_inlined_call_passes_the_arguments_in_the_statement_order():
    name = f32_gemm_tile_name(5, 2, 2, Epilogue(True, (("prelu", None),)))
    ir = (f"define void @k(ptr %o, ptr %x, ptr %w, ptr %b, ptr %s) {{\n"
          f"  %3 = tail call i32 @{name}(ptr %o, ptr %x, i32 256, i32 -248, i32 -1016, ptr %w, i32 512, i32 4, "
          f"ptr %b, ptr %s)\n  ret void\n}}\n\ndeclare i32 @{name}(ptr, ptr, i32, i32, i32, ptr, i32, i32, ptr, ptr)\n")
    body = with_microkernels(ir).split("\n}\n")[0]
    assert "(ptr %o, ptr %x, ptr %w, i32 4, i32 256, i32 -248, i32 -1016, i32 512, ptr %b, ptr %s)" in body


@pytest.mark.parametrize("net", [
    dict(cin=16, cout=16, h=4, w=8, stride=2),   # strided: a tile's pixels are not one contiguous run
    dict(cin=6, cout=16, h=4, w=8),              # depth not a multiple of 4
    dict(cin=16, cout=10, h=4, w=6),             # channels not a multiple of 4
    dict(cin=8, cout=16, h=3, w=8, tail="sigmoid"),   # a tail the fused tile cannot compute, depth < 16
])
def test_other_pointwise_convs_keep_the_register_tiled_schedule(net):
    model, _ = pointwise_net(**net)
    assert schedule_rule(edgetvm.compile(model, ARM, num_threads=1), "neon-gemm") is None


def test_host_never_takes_the_arm_microkernel():
    model, _ = pointwise_net(16, 16, 4, 8)
    assert schedule_rule(edgetvm.compile(model, "host", num_threads=1), "neon-gemm") is None


@pytest.mark.arm
@pytest.mark.parametrize("net,threads", [
    (dict(cin=16, cout=16, h=3, w=8, residual=True), 1),        # bias, PReLU, residual
    (dict(cin=32, cout=16, h=6, w=6), 1),
    (dict(cin=32, cout=32, h=8, w=16), 2),                      # 4096 outputs: the tile loop runs in parallel
    (dict(cin=16, cout=12, h=2, w=7), 1),                       # 7x4 tiles
    (dict(cin=64, cout=24, h=7, w=7, tail="relu6"), 1),         # 49 pixels: a 1-pixel tile last; ReLU6
    (dict(cin=24, cout=16, h=5, w=3, tail="leaky", bias=False), 1),   # 15 pixels: a 3-pixel tile last
    (dict(cin=16, cout=16, h=4, w=6, tail="none", residual=True, relu_after_residual=True), 1),
    (dict(cin=16, cout=16, h=3, w=8, tail="sigmoid"), 1),       # the tensorized tile and its TIR tail
    (dict(cin=8, cout=8, h=6, w=6, tail="none", residual=True, relu_after_residual=True), 1),   # depth 8
    (dict(cin=4, cout=16, h=5, w=5), 1),                        # depth 4, 25 pixels
    (dict(cin=40, cout=16, h=3, w=5), 1),                       # 2 straight steps, then a loop of 2
    (dict(cin=36, cout=8, h=2, w=5, residual=False), 1),        # 1 straight step, then a loop of 1
    (dict(cin=32, cout=32, h=16, w=16, residual=True), 1),      # runs of 25, 25 and 1 tiles, 1 pixel left
    (dict(cin=64, cout=16, h=9, w=9, tail="relu6"), 1),         # runs of 12 and 4 tiles with a loop
])
def test_arm_microkernel_matches_numpy_and_the_host_build(net, threads, tmp_path):
    model, reference = pointwise_net(**net)
    x = np.random.default_rng(1).uniform(-1, 1, (1, net["cin"], net["h"], net["w"])).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=threads)
    assert schedule_rule(compiled, "neon-gemm")
    assert_arm_matches_reference_and_host(compiled, model, reference, x, threads, tmp_path, bit_exact=True)


@pytest.mark.arm
def test_a_zero_sum_keeps_its_sign_without_a_bias(tmp_path):
    # Zero pixels times a column of negative weights: every product -0. The host's sum starts at +0
    # (+0 + -0 = +0); a sum started by the first product would stay -0.
    model, reference = pointwise_net(4, 16, 3, 5, tail="none", bias=False, seed=3)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 4, 3, 5)).astype(np.float32)
    x[:, :, 1, :] = 0
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    assert epilogue_of(compiled) == "p5x8"
    weight = _consts(model)[model.graph.node[0].input[1]][:, :, 0, 0]
    assert (weight < 0).all(axis=1).any()
    assert_arm_matches_reference_and_host(compiled, model, reference, x, 1, tmp_path, bit_exact=True)


def test_int8_microkernel_calls_become_the_assembly_statement_too():
    from edgetvm.kernels.neon_q8_gemm import DEFINITIONS as Q8_DEFINITIONS

    name = next(iter(Q8_DEFINITIONS))
    ir = (f"define i32 @k(ptr %a) {{\n  %r = call i32 @{name}(ptr %a, ptr %a, ptr %a, ptr %a, i32 2)\n  ret i32 %r\n}}\n\n"
          f"declare i32 @{name}(ptr, ptr, ptr, ptr, i32) local_unnamed_addr\n")
    body = with_microkernels(ir).split("\n}\n")[0]
    assert f"call i32 @{name}(" not in body and "vmull.s8" in body and "%r = add i32 0, 0" in body


def test_an_epilogue_that_does_not_fit_beside_the_accumulators_is_refused():
    # 5x8: q0-q5 below the accumulators; slope, bias and two constants take them all, and the bias
    # registers become the PReLU's temporaries once every accumulator has taken the bias. 6x8 (q0-q3)
    # has no room for the constants.
    crowded = Epilogue(True, (("prelu", None), ("max", 0), ("min", 0x40C00000)))
    assert epilogue_fits(5, 2, crowded) and not epilogue_fits(6, 2, crowded)
    lines = f32_gemm_tile_asm(5, 2, 1, crowded)
    first_op = next(i for i, line in enumerate(lines) if line.startswith("vcgt.f32"))
    assert len([line for line in lines[:first_op] if line.startswith("vadd.f32")]) == 10
    assert {line.split(",")[0] for line in lines[first_op:] if line.startswith(("vcgt", "vmul"))} == {"vcgt.f32 q2", "vmul.f32 q3"}
    with pytest.raises(ValueError, match="does not fit"):
        epilogue_asm([[12, 13], [14, 15]], crowded, {}, free=range(4))


def dense_net(rows: int, depth: int, units: int, relu: bool = False):
    """Gemm (x @ W^T + b, ONNX's transB: a classifier) [+ ReLU] on a (rows, depth) input, and its float64 reference."""
    b = NetBuilder((rows, depth), seed=5)
    weight = b.rng.standard_normal((units, depth)) * np.sqrt(2.0 / depth)
    bias = 0.1 * b.rng.standard_normal(units)
    y = b.node("Gemm", ["input", b.const(weight, "w"), b.const(bias, "b")], transB=1)
    if relu:
        y = b.node("Relu", [y])
    model = b.build(y, (rows, units))
    w32, b32 = weight.astype(np.float32).astype(np.float64), bias.astype(np.float32).astype(np.float64)

    def reference(x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float64) @ w32.T + b32
        return np.maximum(out, 0) if relu else out

    return model, reference


@pytest.mark.arm
@pytest.mark.parametrize("rows,depth,units,relu", [
    (1, 128, 40, False),    # a classifier's one row: the 1-pixel tile per 8 outputs, depth in a loop
    (7, 32, 24, True),      # a 5-row run, then a 2-row tile; straight depth; ReLU
    (1, 64, 12, False),     # 12 outputs: the 7x4 tile's channels
])
def test_arm_dense_takes_the_fused_tile_and_matches_numpy_and_the_host_build(rows, depth, units, relu, tmp_path):
    model, reference = dense_net(rows, depth, units, relu)
    x = np.random.default_rng(2).uniform(-1, 1, (rows, depth)).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    assert schedule_rule(compiled, "neon-gemm:dense")
    assert_arm_matches_reference_and_host(compiled, model, reference, x, 1, tmp_path, bit_exact=True)


def test_host_dense_keeps_its_schedule():
    model, _ = dense_net(1, 128, 40)
    assert schedule_rule(edgetvm.compile(model, "host", num_threads=1), "neon-gemm") is None

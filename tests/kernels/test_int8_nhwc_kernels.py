"""The channels-last int8 kernels are bit-exact against numpy, on the host (portable microkernel) and on
ARMv7 under qemu (NEON microkernel: vmull.s8/vmlal.s8/vpadal.s16, vqrdmulh requantize)."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import relax

from edgetvm.kernels.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    quantize_multiplier,
    requantize_reference,
)
from edgetvm.kernels.int8_nhwc import (
    DWCONV_GROUP_PIXELS,
    KERNEL_ATTR,
    NEON_Q8_GEMM_2X8,
    IntegerVectorOps,
    int8_add_flat,
    make_kernel,
    neon_q8_dwconv_name,
    neon_q8_gemm_name,
    neon_q8_gemm_requantize_name,
    remake_kernel,
)

from .nhwc_reference import add_params, cases

ARM_TARGET = "cortex-a7"


def _run_host(func, inputs, consts, out_shape, out_dtype, target="llvm"):
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    out = tvm.runtime.tensor(np.zeros(out_shape, dtype=out_dtype))
    lib["main"](*[tvm.runtime.tensor(a) for a in list(inputs) + list(consts)], out)
    return out.numpy()


def _host_has_avx2() -> bool:
    from tvm.target import codegen

    from edgetvm.schedules.lower import codegen_target
    from edgetvm.targets import resolve_target

    return bool(codegen.target_has_features("avx2", codegen_target(resolve_target("host")).tvm_target))


@pytest.mark.parametrize("isa", ["portable", "avx2"])
@pytest.mark.parametrize("case", range(len(cases(np.random.default_rng(0)))))
def test_kernel_bit_exact_on_host(case, isa):
    if isa == "avx2" and not _host_has_avx2():
        pytest.skip("the host CPU has no AVX2")
    kind, params, inputs, consts, expected = cases(np.random.default_rng(3))[case]
    func = make_kernel(kind, isa=isa, **params)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"} if isa == "avx2" else {"kind": "llvm"})
    got = _run_host(func, inputs, consts, expected.shape, str(expected.dtype), target)
    if expected.dtype == np.float32:
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, expected)


def test_kernel_is_written_again_from_its_recipe():
    kind, params, *_ = cases(np.random.default_rng(0))[0]
    portable = make_kernel(kind, **params)
    assert KERNEL_ATTR in portable.attrs
    neon = remake_kernel(portable.with_attr("op_pattern", 8), isa="neon", parallel=True)
    assert neon.attrs["op_pattern"] == 8 and KERNEL_ATTR in neon.attrs
    # The paired GEMM (PReLU, int8 out) calls the assembly microkernel that requantizes its tile too:
    # no requantize left in TIR. The depthwise kernel's requantize is NEON intrinsics. Its clamp is the
    # int8 range: the spelling without vmax/vmin; a ReLU clamp keeps them.
    assert params["negative"] and not params["left_shift"] and params["out_dtype"] == "int8"
    assert params["clamp"] == [-128, 127] and params["right_shift"]  # multipliers < 0.5: only right shifts
    fused = neon_q8_gemm_requantize_name(negative=True, left_shift=False, unsigned=False, clamped=False,
                                         right_shift=True)
    assert f'"{fused}"' in neon.script() and NEON_Q8_GEMM_2X8 not in portable.script()
    relu = next(c for c in cases(np.random.default_rng(0)) if c[0] == "conv1x1" and c[1]["clamp"] == [-3, 127]
                and c[1]["channels_out"] % 8 == 0)
    assert f'"{neon_q8_gemm_requantize_name(False, True, False, clamped=True)}"' in \
        make_kernel("conv1x1", isa="neon", **relu[1]).script()
    # One call per pixel pair runs all the pair's tiles of 8 channels (the lone last pixel: one more).
    assert neon.script().count(f'"{fused}"') == 2 and ", 1, 0)" in neon.script()
    assert "vqrdmulh" not in neon.script() and "vqrdmulh" not in portable.script()
    # A 3x3 depthwise calls its assembly microkernel (groups of 3 pixels and the 1 or 2 left, PReLU);
    # a 5x5 one keeps the NEON intrinsics in TIR.
    depthwise = [c for c in cases(np.random.default_rng(0)) if c[0] == "depthwise"]
    three = make_kernel("depthwise", isa="neon", **depthwise[0][1]).script()
    assert depthwise[0][1]["kernel_size"] == [3, 3] and "vqrdmulh" not in three
    assert depthwise[0][1]["clamp"] == [-128, 127]  # the int8 range: no vmax/vmin
    assert all(f'"{neon_q8_dwconv_name(p, True, False, False, clamped=False, right_shift=True)}"' in three
               for p in (1, DWCONV_GROUP_PIXELS))
    # Multipliers in [0.5, 1) (exponent 0): the spelling whose fixup is gated by the shift.
    gated = next(c for c in depthwise if not c[1]["left_shift"] and not c[1]["right_shift"] and not c[1]["float_out"])
    assert f'"{neon_q8_dwconv_name(DWCONV_GROUP_PIXELS, False, False, False, True, False, False)}"' in \
        make_kernel("depthwise", isa="neon", **gated[1]).script()
    # Reduced-range weights: the microkernel that sums 4 taps per int16 product; a narrower clamp.
    reduced = next(c for c in depthwise if c[1]["reduced"] and c[1]["negative"] and c[1]["clamp"] == [-100, 90])
    assert f'"{neon_q8_dwconv_name(DWCONV_GROUP_PIXELS, True, True, False, reduced=True)}"' in \
        make_kernel("depthwise", isa="neon", **reduced[1]).script()
    five = next(c for c in depthwise if c[1]["kernel_size"] == [5, 5] and not c[1]["float_out"])
    assert "vqrdmulh" in make_kernel("depthwise", isa="neon", **five[1]).script()
    assert "T.parallel" in neon.script()
    assert remake_kernel(tvm.tirx.PrimFunc([], tvm.tirx.Evaluate(0)), isa="neon", parallel=False) is None


def test_add_halves_the_larger_scale_input_by_a_shift():
    # The input of the larger scale has the multiplier 0.5 exactly (m = 2^30, e = 0): its (q - z) << 20
    # rescaled is (q - z) << 19, no fixed-point multiply by 2^30; the other input's (m != 2^30) stays.
    for scales in ((0.05, 0.03), (0.03, 0.05), (0.04, 0.04)):
        params = add_params(a_scale=scales[0], b_scale=scales[1])
        assert [params[k][0] == 1 << 30 for k in ("a_mult", "b_mult")] == [s == max(scales) for s in scales]
        # The body (no recipe attr), NEON: the portable multiply has 2^30 as its rounding nudge.
        script = int8_add_flat(isa="neon", shape=[1, 2, 2, 8], **params).script()
        assert str(1 << 30) not in script, scales
        assert all(str(params[k][0]) in script for k in ("a_mult", "b_mult", "y_mult") if params[k][0] != 1 << 30)


def _requantize_func(size: int, neon: bool):
    """``out = requantize(acc)`` lane by lane with IntegerVectorOps (per-element multipliers)."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T

    ops = IntegerVectorOps("neon" if neon else "portable")
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("requantize")
            bufs = [T.arg(name, T.buffer((size,), "int32")) for name in ("acc", "mpos", "epos", "mneg", "eneg")]
            out = T.arg("out", T.buffer((size,), "int32"))
            with T.serial(0, size // 4) as i:
                at = tvm.tirx.Ramp(i * 4, 1, 4)
                value = ops.requantize(*[b[at] for b in bufs], zero_point=-3, clamp=(-128, 127), left_shift=True)
                T.buffer_store(out, value, [at])
    return ib.get()


def _requantize_case(rng, size=2048):
    acc = np.concatenate([rng.integers(INT32_MIN + 1, INT32_MAX, size // 2, dtype=np.int64),
                          rng.integers(-(2**16), 2**16, size // 2, dtype=np.int64)]).astype(np.int32)
    acc[:8] = [0, 1, -1, INT32_MAX, INT32_MIN + 1, 1 << 20, -(1 << 20), INT32_MIN]
    pairs = [quantize_multiplier(float(r)) for r in np.exp(rng.uniform(np.log(1e-9), np.log(0.99), 2 * size))]
    m = np.array([p[0] for p in pairs], dtype=np.int32).reshape(2, size)
    e = np.array([p[1] for p in pairs], dtype=np.int32).reshape(2, size)
    big = rng.random(size) < 0.1
    m[0, big], e[0, big] = quantize_multiplier(5.5)
    acc[big] = np.clip(acc[big], -(2**27), 2**27)
    # Ties: m = 2^30 halves acc, so odd acc is a tie of the doubling high multiply, and acc = 16k + 8
    # (halved: 8k + 4) a tie of the rounding shift by 3; both signs.
    m[:, 16:48], e[:, 16:48] = 1 << 30, -3
    acc[16:32] = np.arange(-8, 8) * 2 + 1
    acc[32:48] = np.arange(-8, 8) * 16 + 8
    # The epilogue without a clamp: compare the int32 value (z_y = -3 added, saturated).
    expected = np.clip(requantize_reference(acc, m[0], e[0], m[1], e[1], 0, INT32_MIN, INT32_MAX, "int32",
                                            channel_axis=0).astype(np.int64) - 3, INT32_MIN, INT32_MAX)
    return [acc, m[0], e[0], m[1], e[1]], expected.astype(np.int32)


def test_portable_requantize_bit_exact_on_host():
    inputs, expected = _requantize_case(np.random.default_rng(5))
    got = _run_host(_requantize_func(expected.size, neon=False), inputs, [], expected.shape, "int32")
    np.testing.assert_array_equal(got, expected)


# --- ARM (standalone build under qemu) ------------------------------------------------------------

def _export_arm(tmp_path, funcs_and_args, name):
    """One standalone ARM module whose ``main`` calls each (func, inputs, consts, out) in turn."""
    from edgetvm.backends.standalone import export_standalone
    from edgetvm.schedules.int8 import schedule_int8_kernels
    from edgetvm.schedules.lower import codegen_target, legalize_and_fuse
    from edgetvm.specs import ImportedModel, TensorSpec
    from edgetvm.targets import resolve_target

    target = codegen_target(resolve_target(ARM_TARGET))
    bb = relax.BlockBuilder()
    params, specs, outputs = [], [], []
    for i, (func, inputs, consts, out) in enumerate(funcs_and_args):
        args = []
        for j, array in enumerate(inputs):
            var = relax.Var(f"in{i}_{j}", relax.TensorType(array.shape, str(array.dtype)))
            params.append(var)
            specs.append(TensorSpec(var.name, tuple(array.shape), str(array.dtype)))
            args.append(var)
        outputs.append((func, args + [relax.const(c) for c in consts], out))
    with bb.function("main", params):
        with bb.dataflow():
            results = []
            for i, (func, args, out) in enumerate(outputs):
                gvar = bb.add_func(func.with_attr("op_pattern", 8).with_attr("tirx.is_scheduled", True), f"k{i}")
                results.append(bb.emit(relax.call_tir(gvar, relax.Tuple(args),
                                                      relax.TensorType(out.shape, str(out.dtype)))))
            result = bb.emit_output(relax.Tuple(results) if len(results) > 1 else results[0])
        bb.emit_func_output(result)
    mod = bb.get()
    scheduled = schedule_int8_kernels(legalize_and_fuse(mod, target), target, 1)
    out_specs = [TensorSpec(f"out{i}", tuple(o.shape), str(o.dtype)) for i, (_, _, o) in enumerate(outputs)]
    imported = ImportedModel(mod, specs, out_specs, "<kernels>", "onnx")
    return export_standalone(scheduled, imported, target, tmp_path / f"{name}.so", num_threads=1)[0]


@pytest.mark.arm
def test_neon_kernels_bit_exact_on_cortex_a7(tmp_path):
    from edgetvm import emulate

    rng = np.random.default_rng(11)
    all_cases = cases(rng)
    req_inputs, req_expected = _requantize_case(rng)
    items = [(make_kernel(kind, **params), inputs, consts, expected)
             for kind, params, inputs, consts, expected in all_cases]
    items.append((_requantize_func(req_expected.size, neon=True), req_inputs, [], req_expected))
    so = _export_arm(tmp_path, items, "nhwc_kernels")
    arrays = [a for _, inputs, _, _ in items for a in inputs]
    got = emulate.run_standalone_arm(so, arrays, cpu=ARM_TARGET).outputs
    assert len(got) == len(items)
    for (kind, *_), g, (_, _, _, expected) in zip(all_cases + [("requantize",)], got, items):
        if expected.dtype == np.float32:
            np.testing.assert_allclose(g, expected, rtol=1e-6, err_msg=kind)
        else:
            np.testing.assert_array_equal(g, expected, err_msg=kind)
    # The NEON microkernel is what ran: widening int8 multiply-accumulate and the fixed-point multiply.
    objdump = shutil.which("arm-linux-gnueabihf-objdump")
    assert objdump, "arm-linux-gnueabihf-objdump missing (binutils-arm-linux-gnueabihf)"
    text = subprocess.run([objdump, "-d", str(so)], capture_output=True, text=True, check=True).stdout
    for instruction in ("vmull.s8", "vmlal.s8", "vpadal.s16", "vaddw.s16", "vqrdmulh.s32", "vrshl.s32", "vqmovn.s32"):
        assert instruction in text, instruction
    # The reduced-range cases ran the 16-deep step: a row's 16 bytes as 4 splat d registers.
    assert re.search(r"vld4\.32\s+\{d0\[\]-d3\[\]\}", text)
    # The 3x3 depthwise cases ran its assembly microkernel: taps loaded aligned, stepped by a register.
    assert re.search(r"vld1\.8\s+\{d24\}, \[r\d+ :64\], r\d+", text)


def test_microkernel_declarations_become_inline_assembly():
    from edgetvm.backends.neon_microkernels import microkernel_calls, with_microkernels

    ir = (f"define i32 @k(ptr %a) {{\n  %r = call i32 @{NEON_Q8_GEMM_2X8}(ptr %a, ptr %a, ptr %a, ptr %a, i32 2)\n"
          f"  ret i32 %r\n}}\n\ndeclare i32 @{NEON_Q8_GEMM_2X8}(ptr, ptr, ptr, ptr, i32) local_unnamed_addr\n"
          "declare i32 @memcpy(ptr, ptr, i32)\n")
    assert microkernel_calls(ir) == {NEON_Q8_GEMM_2X8}
    out = with_microkernels(ir)
    assert f"define internal i32 @{NEON_Q8_GEMM_2X8}(" in out and "alwaysinline" in out
    assert "vpadal.s16" in out and "declare i32 @memcpy" in out and f"declare i32 @{NEON_Q8_GEMM_2X8}" not in out
    assert microkernel_calls(out) == set()
    # Every spelling of the requantizing tile has a definition (the names the kernels call).
    for negative, left_shift, unsigned, tail, reduced, clamped, right_shift in itertools.product((False, True),
                                                                                                 repeat=7):
        if left_shift and right_shift:
            continue
        name = neon_q8_gemm_requantize_name(negative, left_shift, unsigned, tail, reduced, clamped, right_shift)
        defined = with_microkernels(f"declare i32 @{name}(ptr, ptr, ptr, ptr, ptr, i32, ptr, i32, i32, i32, i32)\n")
        assert f"define internal i32 @{name}(" in defined
        assert ("vbsl" in defined) == negative and ("vshl.s32" in defined) == left_shift
        # PReLU: the second accumulator of each group of 4 channels selects in place (vbit into the
        # negative side's registers, dead after it); only the first copies the mask for its 2 vbsl.
        assert defined.count("vbit") == (4 if negative else 0) and defined.count("vmov q14, q13") == (
            2 if negative else 0)
        assert ("vqmovun.s16" in defined) == unsigned
        # Only right shifts: RoundingDivideByPOT's fixup is the product's own sign (one vsra per int32x4),
        # else gated by the shift (vand + vsra).
        assert defined.count("vand q15") == (0 if right_shift else 4)
        assert all(f"vsra.s32 q{a}, q{a}, #31" in defined for a in range(4)) == right_shift
        # The clamp to a narrower range than the output type's: 2 vdup, vmax, vmin (the narrows saturate).
        kind = "u8" if unsigned else "s8"
        assert (f"vmax.{kind}" in defined) == clamped and (f"vmin.{kind}" in defined) == clamped
        loop, after = defined.split("1:")[1].split("bne 1b")
        # Per 16 depth and row: 8 vpadal.s16 (two 8-deep steps), 4 with reduced-range weights (one 16-deep
        # step, 4 products per int16 lane: vmull + 3 vmlal per pair and row).
        assert loop.count("vpadal.s16") == (8 if reduced else 16)
        assert loop.count("vmlal.s8") == (24 if reduced else 16) and loop.count("vld4.32") == (2 if reduced else 0)
        # The 8-deep tail: one step (4 vpadal.s16 per row) after the loop.
        assert after.count("vpadal.s16") == (8 if tail else 0)
        # The first 16 depth peeled before the loop: its vpaddl.s16 start the 8 accumulators, none zeroed;
        # q7 (the left shift's bound) zeroed only where a left shift uses it.
        peeled = defined.split("1:")[0]
        assert peeled.count("vpaddl.s16") == 8 and "beq 2f" in peeled and "vmov.i32 q8, #0" not in defined
        assert ("vmov.i32 q7, #0" in defined) == left_shift
    for tail, reduced in itertools.product((False, True), repeat=2):
        name = neon_q8_gemm_name(tail, reduced)
        assert "vpadal.s16" in with_microkernels(f"declare i32 @{name}(ptr, ptr, ptr, ptr, i32)\n")
    with pytest.raises(ValueError, match="edgetvm_neon_unknown"):
        with_microkernels("declare i32 @edgetvm_neon_unknown(ptr)\n")

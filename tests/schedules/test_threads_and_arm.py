"""Thread count as a compile option, and NEON multiply-accumulate in the ARM conv kernels."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import tvm

import edgetvm

from . import nets


def _llvm_ir(executable) -> str:
    """The LLVM IR of every kernel of a VM executable (the host library and its imports)."""
    lib = executable.mod
    texts = []
    for module in [lib, *getattr(lib, "imports", [])]:
        try:
            texts.append(module.inspect_source("ll"))
        except Exception:  # noqa: BLE001 - the VM bytecode module has no LLVM source
            continue
    return "\n".join(texts)


@pytest.fixture(scope="module")
def mini():
    return nets.mini_mobilefacenet(hw=32)


def test_one_thread_schedules_no_parallel_launch(mini):
    compiled = edgetvm.compile(mini, "host", num_threads=1)
    ir = _llvm_ir(compiled.executable)
    assert "define" in ir and "fused_conv2d" in ir
    assert "TVMBackendParallelLaunch" not in ir


def test_two_threads_launch_parallel_kernels(mini):
    compiled = edgetvm.compile(mini, "host", num_threads=2)
    ir = _llvm_ir(compiled.executable)
    assert "TVMBackendParallelLaunch" in ir
    # The conv kernels themselves launch parallel work, not only the generic ones.
    bodies = re.split(r"^define ", ir, flags=re.M)
    conv_compute = [b for b in bodies if re.match(r"[^@]*@fused_conv2d\w*_compute_\(", b)]
    assert conv_compute, "no conv kernel in the LLVM IR"
    launching = [b for b in conv_compute if "TVMBackendParallelLaunch" in b]
    assert len(launching) == len(conv_compute), f"{len(launching)} of {len(conv_compute)} conv kernels run parallel"


def _functions(disassembly: str) -> dict[str, str]:
    """objdump -d text split into {symbol: body}."""
    parts = re.split(r"^[0-9a-f]+ <([^>]+)>:$", disassembly, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.arm
def test_arm_conv_kernels_use_neon_multiply_accumulate_on_q_registers(mini, tmp_path):
    compiled = edgetvm.compile(mini, "armv7-neon", num_threads=1)
    path = compiled.export(tmp_path / "mini_arm.so")
    objdump = shutil.which("arm-linux-gnueabihf-objdump")
    assert objdump, "arm-linux-gnueabihf-objdump missing (binutils-arm-linux-gnueabihf)"
    text = subprocess.run([objdump, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    conv_bodies = {name: body for name, body in _functions(text).items()
                   if "conv2d" in name and not name.startswith("__tvm_ffi")}
    assert conv_bodies, "no conv kernel symbols in the ARM library"
    mac = re.compile(r"\tv(?:mla|fma)\.f32\tq\d+, q\d+, (?:q\d+|d\d+\[\d\])")
    for name, body in conv_bodies.items():
        assert mac.search(body), f"{name}: no vmla.f32/vfma.f32 on q registers"
    # The float multiply-add is vectorized, not split into scalar vmul/vadd pairs.
    total_q = sum(len(mac.findall(body)) for body in conv_bodies.values())
    scalar = sum(len(re.findall(r"\tv(?:mla|fma|mul)\.f32\ts\d+", body)) for body in conv_bodies.values())
    assert total_q > 10 * max(scalar, 1)


def test_arm_codegen_target_allows_neon_fma_and_host_is_unchanged():
    from edgetvm.schedules.lower import ARM_FMA_MATTR, codegen_target, schedule_config
    from edgetvm.targets import resolve_target

    arm = codegen_target(resolve_target("cortex-a7"))
    assert arm.target_dict["fast-math-contract"] is True
    assert all(flag in arm.target_dict["mattr"] for flag in ARM_FMA_MATTR)
    assert "+neon" in arm.target_dict["mattr"]
    tvm.target.Target(arm.target_dict)  # LLVM accepts the flags
    host = resolve_target("host")
    assert codegen_target(host) == host
    assert schedule_config(arm, 1).lanes == 4 and schedule_config(arm, 1).accumulators == 8
    assert schedule_config(host, None).lanes in (4, 8, 16)


def _lane_kernels(compiled) -> set[str]:
    kernels = compiled.report.details["schedules"]["kernels"]
    return {name for name, rule in kernels.items() if "by lane" in rule}


@pytest.fixture(scope="module")
def dense3x3():
    """A 3x3 conv with 32 input channels (by lane on ARM, compiled direct: ``winograd=False``), then a
    strided one (not by lane)."""
    b = nets.NetBuilder((1, 32, 16, 16))
    y = b.prelu(b.conv("input", 32, 32, 3), 32)
    return b.build(b.conv(y, 32, 16, 3, 2), (1, 16, 8, 8))


def test_only_arm_stride_1_dense_convs_take_inputs_by_lane(mini, dense3x3):
    arm = edgetvm.compile(dense3x3, "armv7-neon", num_threads=1, winograd=False)
    lane = _lane_kernels(arm)
    assert len(lane) == 1 and "conv2d" in next(iter(lane)), arm.report.details["schedules"]["kernels"]
    assert not _lane_kernels(edgetvm.compile(dense3x3, "host", num_threads=1, winograd=False))
    # In mini the 1x1 convs take the NEON GEMM microkernel (tests/kernels/test_neon_f32_gemm.py);
    # the expand conv has 16 input channels (too few steps of 4), the rest are strided or windowed.
    arm = edgetvm.compile(mini, "armv7-neon", num_threads=1)
    rules = arm.report.details["schedules"]["kernels"].values()
    assert not _lane_kernels(arm) and sum(rule.startswith("neon-gemm") for rule in rules) == 2, rules


@pytest.mark.arm
@pytest.mark.parametrize("threads", [1, 2])
def test_arm_lane_kernels_multiply_accumulate_by_lane(dense3x3, tmp_path, threads):
    compiled = edgetvm.compile(dense3x3, "armv7-neon", num_threads=threads, winograd=False)
    (lane,) = _lane_kernels(compiled)
    path = compiled.export(tmp_path / "mini_arm.so")
    text = subprocess.run([shutil.which("arm-linux-gnueabihf-objdump"), "-d", str(path)], capture_output=True,
                          text=True, check=True).stdout
    functions = _functions(text)
    own = "".join(body for symbol, body in functions.items() if symbol.startswith(f"{lane}_compute_"))
    assert own, f"{lane}: not in the library"
    by_lane = re.compile(r"\tvmla\.f32\tq\d+, q\d+, d\d+\[[01]\]")
    # With two threads the loop body is a private parallel lambda, which objdump shows inside the
    # kernel's symbol: the lambda got the same code generation.
    assert len(by_lane.findall(own)) >= 16, f"{lane}: no vmla.f32 by lane"
    assert "vdup.32" not in own and "vfma.f32" not in own, lane
    # Every other kernel multiply-accumulates unfused too, as the host build does
    # (backends/unfused_products.py): no fused multiply-add anywhere in the library.
    assert "vfma.f32" not in text
    others = "".join(body for symbol, body in functions.items()
                     if "conv2d" in symbol and "_compute_" in symbol and not symbol.startswith(lane))
    assert "vmla.f32" in others


def test_vmla_ir_rewrite_touches_only_the_kernels_that_add_products_and_their_lambdas():
    from edgetvm.backends.neon_mla import fusable_kernels, with_vmla

    ir = "\n".join([
        "define internal fastcc void @conv_a_compute_(ptr %x) unnamed_addr #5 !dbg !1 {",
        "  call i32 @TVMBackendParallelLaunch(ptr @__tvm_parallel_lambda.3, ptr null, i32 0)",
        "}",
        "define private i32 @__tvm_parallel_lambda.3(i32 %t, ptr %p, ptr %c) #5 {",
        "  %1 = tail call <4 x float> @llvm.fmuladd.v4f32(<4 x float> %a, <4 x float> %b, <4 x float> %c)",
        "}",
        "define internal fastcc void @conv_b_compute_(ptr %x) unnamed_addr #5 !dbg !2 {",
        "  %2 = fmul <4 x float> %a, %b",
        "  %3 = select <4 x i1> %m, <4 x float> %a, <4 x float> %2",
        "}",
        "define internal fastcc void @conv_c_compute_(ptr %x) unnamed_addr #5 !dbg !3 {",
        "  %4 = fmul <4 x float> %a, %b",
        "  %5 = fadd <4 x float> %c, %4, !dbg !3",
        "}",
        'attributes #5 = { noinline "target-cpu"="cortex-a7" "target-features"="+neon,-slowfpvfmx,-slowfpvmlx" }',
        "",
    ])
    # conv_a adds a product in the lambda it launches, conv_c in its body; conv_b's product
    # (PReLU's negative side) is added to nothing.
    assert fusable_kernels(ir) == {"conv_a", "conv_c"}
    out = with_vmla(ir, {"conv_a"})
    assert "@conv_a_compute_(ptr %x) unnamed_addr #6 !dbg !1 {" in out
    assert "@__tvm_parallel_lambda.3(i32 %t, ptr %p, ptr %c) #6 {" in out
    assert "@conv_b_compute_(ptr %x) unnamed_addr #5 !dbg !2 {" in out
    assert 'attributes #6 = { minsize noinline "target-cpu"="cortex-a7" "target-features"="+slowfpvfmx,+neon,-slowfpvmlx" }' in out
    assert 'attributes #5 = { noinline "target-cpu"="cortex-a7" "target-features"="+neon,-slowfpvfmx,-slowfpvmlx" }' in out
    assert with_vmla(ir, {"conv_d"}) == ir


def test_arm_rgb_stem_runs_on_the_neon_microkernel(mini):
    def stem_script(compiled, channels: int) -> str:
        # The stem's HWIO weight: 3x3 window, 3 (ARM: padded to 4) input channels, 16 output channels.
        (script,) = [s for s in (compiled.scheduled[name].script() for name in compiled.report.details["schedules"]["kernels"])
                     if f"T.int64(3), T.int64(3), T.int64({channels}), T.int64(16)" in s]
        return script

    # ARM: a zero 4th channel (transform.PadStemChannels), one microkernel loop over the 3x3 window.
    assert '"edgetvm_neon_f32_gemm_1x4x8_win3_fused_b_prelu"' in stem_script(edgetvm.compile(mini, "armv7-neon", num_threads=1), 4)
    host = stem_script(edgetvm.compile(mini, "host", num_threads=1), 3)
    assert "T.int64(27)" not in host and "for rc in T.unroll(T.int64(3))" in host

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

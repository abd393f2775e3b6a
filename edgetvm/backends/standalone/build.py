"""Compile and link a standalone model: TVM kernels (.o) + runtime + call table + weights -> one .so.

    kernels.o   TVM's LLVM code for the TIR kernels the plan calls (``tvm.tirx.build``)
    runtime.o   edgetvm_runtime.c: the hooks the kernels import, thread pool, run loop
    huffman.o   edgetvm_huffman.c: the decoder of entropy-coded weights (a few hundred bytes)
    model.o     the generated call table and the prefixed C API
    weights.o   the constants, ``.incbin``-ed from a binary blob by the assembler

Linked with a version script that exports only the model's API, so the kernels and the runtime
hooks never collide with a TVM runtime (or another model) in the same process.

``optimize="size"`` (``--optimize size``) builds the same kernels for the fewest bytes. Each step on
RetinaFace 320 fp32, cortex-a7 (.so bytes; qemu instructions and a7 cycle estimate per inference):

    default                   2,405,992 B  152.40 M insn  262.4 M cycles
    tirx.disable_assert       2,053,736 B  152.39 M       262.4 M   TVM's packed-call wrapper checks
                              every argument's type, rank, shape, strides and device against a message
                              string (~5.8 KB of code and 0.7 KB of strings per kernel); the call table
                              comes from the same plan and the runtime checks the caller's buffers
                              (check_buffers), so the checks can only fail on a bug of edgetvm's own
    LLVM opt-level 2          1,975,912 B  147.74 M       256.5 M   O3 unrolls and inlines more
    tiles called, not inlined 1,885,800 B  148.40 M       257.8 M   (neon_microkernels.with_microkernels):
                              one copy of each microkernel instead of one per unrolled channel block
    C runtime at -Os          1,885,808 B  147.04 M                 (benchmarks/bench_compression.py)

The weights are 1,804,560 B of it: the code and tables go from ~600 KB to 81 KB. Outputs are
bit-exact with the default build (same TIR, same assembly statements); MobileFaceNet int8 likewise,
1,644,132 -> 1,222,200 B, 73.24 -> 74.77 M instructions a run. Not inlining alone at O3 measured 153.05 M.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import tvm

from ...errors import CompileError, InputError, ToolchainError, first_line
from ...targets import ARM_CROSS_CC, ResolvedTarget, require_tool
from ..neon_microkernels import recompile_for_neon
from ..unfused_products import recompile_unfused
from .plan import StaticPlan

RUNTIME_DIR = Path(__file__).resolve().parent
RUNTIME_SOURCE = RUNTIME_DIR / "edgetvm_runtime.c"
HUFFMAN_SOURCE = RUNTIME_DIR / "edgetvm_huffman.c"

OPTIMIZE_GOALS = ("speed", "size")


def check_optimize(goal: str) -> None:
    """Refuse an unknown build goal, in the flag's words."""
    if goal not in OPTIMIZE_GOALS:
        raise InputError(f"--optimize {goal!r}: choose speed (the default: fastest kernels) or size (smallest "
                         f"standalone .so, same results)")


def tvm_ffi_include() -> Path:
    """The C ABI headers (tvm/ffi/c_api.h, dlpack) shipped in the apache-tvm-ffi wheel."""
    import tvm_ffi

    path = Path(tvm_ffi.__file__).resolve().parent / "include"
    if not (path / "tvm" / "ffi" / "c_api.h").exists():
        raise ToolchainError(f"{path}: tvm/ffi/c_api.h is missing; reinstall the apache-tvm-ffi wheel")
    return path


def c_compiler(target: ResolvedTarget) -> str:
    if target.is_arm:
        return require_tool(ARM_CROSS_CC, f"building a standalone module for {target.preset}")
    return require_tool(os.environ.get("CC", "gcc"), "building a standalone module for the host")


def target_cflags(target: ResolvedTarget) -> list[str]:
    """Code generation flags matching the TVM target (the runtime must run on the same CPU)."""
    if not target.is_arm:
        return []
    attrs = target.target_dict.get("mattr", [])
    attrs = attrs.split(",") if isinstance(attrs, str) else list(attrs)
    fpu = "neon-vfpv4" if any(a in ("+vfp4", "+vfp4d16") for a in attrs) else "neon"
    flags = ["-mfloat-abi=hard", f"-mfpu={fpu}"]
    cpu = target.target_dict.get("mcpu")
    # LLVM and GCC share the ARM core names (cortex-a7, ...); LLVM's "generic" has no GCC twin.
    flags.append(f"-mcpu={cpu}" if cpu and cpu != "generic" else "-march=armv7-a")
    return flags


@dataclass
class StandaloneObjects:
    """The object files of one build, kept for size accounting (benchmarks)."""

    kernels: Path
    runtime: Path
    huffman: Path
    model: Path
    weights: Path


def _start(cmd: list[str], what: str) -> tuple[subprocess.Popen, list[str], str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), cmd, what


def _finish(started: tuple[subprocess.Popen, list[str], str]) -> None:
    proc, cmd, what = started
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        text = (stderr or stdout).strip()
        missing = sorted(set(re.findall(r"undefined reference to `([^']+)'", text)))
        if missing:
            raise CompileError(
                f"{what}: the kernels import runtime symbols the standalone runtime does not provide: "
                f"{', '.join(missing)}. Export without standalone=True to use TVM's runtime"
            )
        raise CompileError(f"{what} failed ({' '.join(cmd[:1])}): {text[-1500:]}")


def _run(cmd: list[str], what: str) -> None:
    _finish(_start(cmd, what))


def kernel_build_settings(target: ResolvedTarget, optimize: str) -> tuple[tvm.target.Target, dict]:
    """The TVM target and pass configuration of the kernels for the build goal (see the module docstring)."""
    check_optimize(optimize)
    if optimize == "speed":
        return target.tvm_target, {}
    return tvm.target.Target({**target.target_dict, "opt-level": 2}), {"tirx.disable_assert": True}


def build_kernel_object(plan: StaticPlan, target: ResolvedTarget, path: Path, optimize: str = "speed") -> None:
    """Compile exactly the kernels the plan calls, with TVM's default TIR pipeline, to an object file."""
    funcs = {name: func.with_attr("global_symbol", name) for name, func in plan.kernels.items()}
    tvm_target, config = kernel_build_settings(target, optimize)
    try:
        module = tvm.IRModule(funcs)
        current = tvm.transform.PassContext.current()
        context = (tvm.transform.PassContext(opt_level=current.opt_level, config={**current.config, **config})
                   if config else contextlib.nullcontext())
        with context:
            lib = tvm.tirx.build(module, target=tvm_target, pipeline="default")
        if target.is_arm:
            lib = recompile_for_neon(lib, path.parent, inline=optimize == "speed")
        else:
            lib = recompile_unfused(lib, path.parent)
        lib.write_to_file(str(path))
    except Exception as exc:  # noqa: BLE001 - TVM raises plain RuntimeError/ValueError through tvm_ffi
        raise CompileError(f"TVM failed to compile the kernels for {target.preset}: {first_line(exc)}") from exc


# The runtime symbols edgetvm_runtime.c defines. TVM's kernels reach the workspace and parallel
# hooks through the ``__``-prefixed pointers and call the error hooks directly.
PROVIDED_RUNTIME_SYMBOLS = frozenset(
    prefix + name
    for name in ("TVMBackendAllocWorkspace", "TVMBackendFreeWorkspace", "TVMBackendParallelLaunch",
                 "TVMBackendParallelBarrier", "TVMFFIErrorSetRaisedFromCStr", "TVMFFIErrorSetRaisedFromCStrParts")
    for prefix in ("", "__")
)


def check_kernel_imports(kernels: Path, target: ResolvedTarget) -> None:
    """Refuse kernels that need more of TVM's runtime than the standalone runtime provides.

    TVM declares most runtime hooks as weak, zero-initialised pointers in the kernel object
    (``__TVMFFIFunctionCall``, ``__tvm_ffi__library_ctx``, ...), so such a kernel links fine and
    would crash at its first call: the symbol table is the only place to catch it.
    """
    nm = require_tool("arm-linux-gnueabihf-nm" if target.is_arm else "nm", "checking the kernels' runtime imports")
    listing = subprocess.run([nm, str(kernels)], capture_output=True, text=True, check=True).stdout
    needed, packed = set(), set()
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        kind, name = parts[-2], parts[-1]
        if name.startswith(".tvm_func."):
            packed.add(name[len(".tvm_func."):])
        elif kind in "UVvWw" and (name.startswith(("TVM", "__TVM")) or name == "__tvm_ffi__library_ctx"):
            if name not in PROVIDED_RUNTIME_SYMBOLS:
                needed.add(name)
    if needed or packed:
        calls = f"the packed function(s) {', '.join(sorted(packed))} and " if packed else ""
        raise CompileError(
            f"the kernels call {calls}TVM runtime symbols the standalone runtime does not provide "
            f"({', '.join(sorted(needed))}); export without standalone=True to use TVM's runtime"
        )


def compile_and_link(plan: StaticPlan, target: ResolvedTarget, workdir: Path, model_c: Path, weights_s: Path,
                     prefix: str, out_so: Path, soname: str, optimize: str = "speed") -> StandaloneObjects:
    """Build all objects in ``workdir`` and link ``out_so`` (the caller makes it atomic)."""
    cc = c_compiler(target)
    objs = StandaloneObjects(workdir / "kernels.o", workdir / "edgetvm_runtime.o", workdir / "edgetvm_huffman.o",
                             workdir / "model.o", workdir / "weights.o")
    cflags = ["-O2" if optimize == "speed" else "-Os", "-std=gnu11", "-fPIC", "-fvisibility=hidden", "-ffunction-sections", "-fdata-sections",
              "-Wall", "-Wno-unused-function", *target_cflags(target),
              f"-I{RUNTIME_DIR}", f"-I{tvm_ffi_include()}"]
    # The C compiler runs on the other core while TVM and LLVM build the kernels in this process
    # (RetinaFace 320 fp32 on cortex-a7: export 5.97 -> 5.75 s wall, medians of 5 alternating runs on
    # this 2-core machine); the objects and the link are those of one compile after the other, so the
    # .so is the same bytes.
    compiling = [
        _start([cc, *cflags, "-c", str(RUNTIME_SOURCE), "-o", str(objs.runtime)], "compiling the standalone runtime"),
        _start([cc, *cflags, "-c", str(HUFFMAN_SOURCE), "-o", str(objs.huffman)], "compiling the weight decoder"),
        _start([cc, *cflags, "-c", str(model_c), "-o", str(objs.model)], "compiling the model table"),
        _start([cc, *target_cflags(target), "-c", str(weights_s), "-o", str(objs.weights)], "assembling the weights"),
    ]
    try:
        build_kernel_object(plan, target, objs.kernels, optimize)
        check_kernel_imports(objs.kernels, target)
    except BaseException:
        for proc, _, _ in compiling:  # none outlives the build; the kernels' error is the one to see
            proc.communicate()
        raise
    for started in compiling:
        _finish(started)
    version_script = workdir / "exports.map"
    version_script.write_text(f"{{\n  global: {prefix}_*; edgetvm_model_prefix;\n  local: *;\n}};\n")
    _run([cc, "-shared", *target_cflags(target), "-o", str(out_so),
          str(objs.kernels), str(objs.runtime), str(objs.huffman), str(objs.model), str(objs.weights),
          f"-Wl,--version-script={version_script}", "-Wl,--gc-sections", "-Wl,--no-undefined",
          "-Wl,-z,noexecstack", f"-Wl,-soname,{soname}", "-s", "-lm", "-lpthread"],
         f"linking {soname}")
    return objs

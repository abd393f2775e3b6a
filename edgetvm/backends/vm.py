"""The TVM-runtime backend: a Relax VM executable exported as a shared library.

For ARM targets the library is cross-compiled and linked with ``arm-linux-gnueabihf-g++``; the board
loads it with TVM's runtime (``tvm.runtime.load_module`` + ``relax.VirtualMachine``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tvm
from tvm import relax, tirx
from tvm.relax import vm_build
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from ..errors import ArtifactError, CompileError, first_line
from ..targets import ARM_CROSS_CXX, ResolvedTarget, require_tool
from .content_path import content_path
from .neon_microkernels import recompile_for_neon


def vm_lowering_pipeline(target: ResolvedTarget) -> tvm.transform.Pass:
    """What TVM's CPU pipeline does after legalization: dataflow lowering and memory planning."""
    tgt = target.tvm_target
    return tvm.transform.Sequential(cpu_pipeline.dataflow_lower_passes(tgt) + cpu_pipeline.finalize_passes(tgt))


def build_vm(scheduled: tvm.IRModule, target: ResolvedTarget) -> relax.VMExecutable:
    """Build a VM executable from a module whose kernels are already TIR (see schedules.lower)."""
    try:
        if not target.is_arm:
            return tvm.compile(scheduled, target=target.tvm_target, relax_pipeline=vm_lowering_pipeline(target))
        return _build_vm_neon(scheduled, target)
    except Exception as exc:  # noqa: BLE001 - TVM raises plain RuntimeError/ValueError through tvm_ffi
        raise CompileError(f"TVM failed to build the module for {target.preset}: {first_line(exc)}") from exc


def _build_vm_neon(scheduled: tvm.IRModule, target: ResolvedTarget) -> relax.VMExecutable:
    """``relax.build``'s steps, with the kernels' LLVM module recompiled by ``recompile_for_neon``
    (NEON microkernels, multiply-accumulate by lane) before linking."""
    tgt = target.tvm_target
    with tgt:
        mod = vm_lowering_pipeline(target)(scheduled)
    constants = dict(mod.attrs.get("const_name_to_constant", {})) if mod.attrs else {}
    builder = relax.ExecBuilder()
    mod = vm_build._vmcodegen(builder, mod, "bytecode")
    kernels = tvm.IRModule({gvar: func for gvar, func in mod.functions.items() if isinstance(func, tirx.PrimFunc)})
    lib = tvm.tirx.build(kernels, target=tgt, pipeline="default")
    with tempfile.TemporaryDirectory(prefix="edgetvm-neon-") as workdir:
        lib = recompile_for_neon(lib, kernels, Path(workdir))
    return relax.VMExecutable(vm_build._ffi_api.VMLink(builder, tgt, lib, [], constants))


def export_vm_library(executable: relax.VMExecutable, path: str | os.PathLike, target: ResolvedTarget) -> None:
    """Write the executable as a shared library at ``path`` (the caller makes it atomic)."""
    if target.is_arm:
        from tvm.support import cc

        cxx = require_tool(ARM_CROSS_CXX, f"exporting an ARM artifact for {target.preset}")
        fcompile = cc.cross_compiler(cxx, options=["-mfloat-abi=hard", "-mfpu=neon-vfpv4"])
        executable.export_library(str(path), fcompile=fcompile)
    else:
        executable.export_library(str(path))


def load_vm_library(path: str | os.PathLike, sha256: str) -> tvm.runtime.Module:
    """Load an exported library whose content has hash ``sha256`` (its sidecar's, already checked)
    through a copy named by that hash, so that what runs is what is on disk now (content_path.py)."""
    try:
        return tvm.runtime.load_module(str(content_path(path, sha256)))
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM raises plain RuntimeError through tvm_ffi
        raise ArtifactError(f"{path}: TVM's runtime could not load the library: {first_line(exc)}") from None

"""The TVM-runtime backend: a Relax VM executable exported as a shared library.

For ARM targets the library is cross-compiled and linked with ``arm-linux-gnueabihf-g++``; the board
loads it with TVM's runtime (``tvm.runtime.load_module`` + ``relax.VirtualMachine``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax import vm_build
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from ..errors import ArtifactError, CompileError, first_line
from ..relax_utils import is_tensor_constant
from ..targets import ARM_CROSS_CXX, ResolvedTarget, require_tool
from .content_path import content_path
from .neon_microkernels import recompile_for_neon
from .unfused_products import recompile_unfused
from .standalone.weights import is_float16_weight

# The library's function that widens its float16 weights, run once when the library is loaded.
WEIGHTS_FUNCTION = "edgetvm_weights"


def vm_lowering_pipeline(target: ResolvedTarget) -> tvm.transform.Pass:
    """What TVM's CPU pipeline does after legalization: dataflow lowering and memory planning."""
    tgt = target.tvm_target
    return tvm.transform.Sequential(cpu_pipeline.dataflow_lower_passes(tgt) + cpu_pipeline.finalize_passes(tgt))


@relax.expr_functor.mutator
class _WeightsToParameters(relax.PyExprMutator):
    """Each float16-storable constant of a function becomes a new parameter (one per distinct tensor)."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.params: list[relax.Var] = []
        self.values: list[np.ndarray] = []
        self._seen: dict = {}

    def visit_generic_const_(self, const):
        if not is_tensor_constant(const):
            return const
        if const in self._seen:
            return self._seen[const]
        value = const.value.numpy()
        if not is_float16_weight(str(value.dtype), value.shape, value):
            return const
        param = relax.Var(f"weight{len(self.params)}", relax.TensorType(list(value.shape), "float32"))
        self.params.append(param)
        self.values.append(value)
        self._seen[const] = param
        return param


def store_weights_as_float16(scheduled: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """``scheduled`` with its conv and dense weights stored as float16 (``--weights fp16``), and how
    many tensors that is.

    ``main(inputs...)`` becomes ``main(inputs..., w_0, ..., w_n)`` (``num_input`` still counts the
    inputs) and a new function ``edgetvm_weights()`` returns ``astype(w16_i, float32)`` for each, from
    float16 constants. The loader calls ``edgetvm_weights`` once and passes its tensors to every
    ``main`` call (``host.vm_runner``). The same tensors as the standalone runtime's float16 storage
    (standalone/weights.py), and as lossy (10-bit mantissa).

    One widening kernel per weight shape: packing all weights into one buffer and handing out views
    would need no kernel per shape, but TVM's kernels refuse a tensor with a byte offset, and one
    kernel writing every weight compiled to a larger library than the per-shape kernels (Iris:
    3.17 MB against 1.84 MB, 3.02 MB in float32; most of it LLVM's debug locations of the kernel)."""
    main = scheduled["main"]
    rewrite = _WeightsToParameters(scheduled)
    body = rewrite.visit_expr(main.body)
    if not rewrite.params:
        return scheduled, 0
    mod = tvm.IRModule(dict(scheduled.functions), attrs=scheduled.attrs)
    mod["main"] = relax.Function(list(main.params) + rewrite.params, body, main.ret_ty, main.is_pure, main.attrs)
    bb = relax.BlockBuilder(mod)
    with bb.function(WEIGHTS_FUNCTION, []):
        with bb.dataflow():
            widened = [bb.emit(relax.op.astype(relax.const(v.astype(np.float16)), "float32")) for v in rewrite.values]
            out = bb.emit_output(relax.Tuple(widened))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    return mod, len(rewrite.params)


def build_vm(scheduled: tvm.IRModule, target: ResolvedTarget) -> relax.VMExecutable:
    """Build a VM executable from a module whose kernels are already TIR (see schedules.lower).

    ``relax.build``'s steps, with the kernels' LLVM module recompiled before linking: for ARM by
    ``recompile_for_neon`` (NEON microkernels, multiply-accumulate unfused), for the host by
    ``recompile_unfused`` (products rounded as on ARM, see ``unfused_products``).
    """
    try:
        tgt = target.tvm_target
        with tgt:
            mod = vm_lowering_pipeline(target)(scheduled)
        constants = dict(mod.attrs.get("const_name_to_constant", {})) if mod.attrs else {}
        builder = relax.ExecBuilder()
        mod = vm_build._vmcodegen(builder, mod, "bytecode")
        kernels = tvm.IRModule({gvar: func for gvar, func in mod.functions.items() if isinstance(func, tirx.PrimFunc)})
        lib = tvm.tirx.build(kernels, target=tgt, pipeline="default")
        with tempfile.TemporaryDirectory(prefix="edgetvm-kernels-") as workdir:
            if target.is_arm:
                lib = recompile_for_neon(lib, Path(workdir))
            else:
                lib = recompile_unfused(lib, Path(workdir))
        return relax.VMExecutable(vm_build._ffi_api.VMLink(builder, tgt, lib, [], constants))
    except Exception as exc:  # noqa: BLE001 - TVM raises plain RuntimeError/ValueError through tvm_ffi
        raise CompileError(f"TVM failed to build the module for {target.preset}: {first_line(exc)}") from exc


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

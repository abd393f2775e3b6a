"""From a Relax graph to a Relax module whose kernels are scheduled TIR PrimFuncs.

layout (NHWC/HWIO) -> legalize (Relax ops -> TIR) -> fold constant weights (incl. their layout
change) -> fuse ops into kernels -> schedule each kernel. The result is still a Relax module with
``call_tir`` calls: the backends take it from there (TVM VM or standalone C).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import tvm
from tvm import relax, tirx

from ..progress import bar
from ..targets import ResolvedTarget
from .conv_channel_slices import keep_conv_channel_slices_apart
from .cpu import CpuScheduleConfig, schedule_kernel
from .nan_propagation import NAN_PROPAGATING_LEGALIZATIONS
from .residual_pads import keep_residual_channel_pads_apart
from ..transform.arm_quantize import legalize_quantize
from ..transform.const_fold import FoldConstantsWithNumpy
from ..transform.layout import channels_last
from ..transform.pad_conv_output_channels import PadConvOutputChannels
from ..transform.pad_stem_channels import PadStemChannels
from ..transform.space_to_depth_conv import SpaceToDepthConv
from ..transform.winograd_conv import WinogradConv

# Vector registers of the float unit: 16 q registers on ARMv7 NEON, 16 ymm with AVX2, 32 zmm with
# AVX-512. Half of them hold a register tile's accumulators.
_ARM_VECTOR_REGISTERS = 16


# LLVM's tuning for in-order ARMv7 cores (Cortex-A7/A9) keeps NEON multiply-accumulate out of the
# code (slow-VMLA/VFMA and VMLx-hazard features) and contracts fmul + fadd into an FMA only when
# allowed to: without these the conv kernels get a vmul.f32 + vadd.f32 pair per MAC, not one vfma.f32.
ARM_FMA_MATTR = ("-slowfpvfmx", "-slowfpvmlx", "-vmlx-hazards")


def codegen_target(target: ResolvedTarget) -> ResolvedTarget:
    """``target`` with the LLVM flags the default schedules rely on (ARM: NEON FMA on q registers)."""
    if not target.is_arm:
        return target
    target_dict = dict(target.target_dict)
    mattr = [str(a) for a in target_dict.get("mattr", [])]
    mattr += [a for a in ARM_FMA_MATTR if a not in mattr]
    target_dict["mattr"] = mattr
    target_dict["fast-math-contract"] = True
    return dataclasses.replace(target, target_dict=target_dict)


def legalize_and_fuse(mod: tvm.IRModule, target: ResolvedTarget, winograd: bool = False) -> tvm.IRModule:
    """Relax ops to TIR, then group elementwise tails with their producer into one kernel each.

    ``winograd``: dense 3x3 stride-1 float32 convs become Winograd F(m,3) where its cost rule (measured
    on ARMv7, the same on every target) says it pays (``transform.WinogradConv``), after the layout
    change: its transforms are channels last."""
    seq = tvm.transform.Sequential(
        [
            # Inference batch norm becomes a per-channel scale and shift the conv's tail absorbs.
            relax.transform.DecomposeOpsForInference(),
            # ... and its (y, mean, var) tuple must go, or the tuple blocks fusing the activation.
            relax.transform.CanonicalizeBindings(),
            # int8: a float tensor with several int8 consumers is quantized once, not once per consumer.
            relax.transform.EliminateCommonSubexpr(),
            relax.transform.DeadCodeElimination(),
            # ARMv7: the RGB stem gets a zero 4th channel, the depth step of the NEON GEMM microkernel.
            *([PadStemChannels()] if target.is_arm else []),
            channels_last(),
            # ARMv7: a conv whose window is its stride (2x2 s2) becomes a 1x1 conv on the NEON GEMM tile.
            *([SpaceToDepthConv()] if target.is_arm else []),
            # ... and a 1x1 conv into channels that are not whole vectors (Iris's 213) gets zero columns.
            *([PadConvOutputChannels()] if target.is_arm else []),
            # The weights' layout change (OIHW -> HWIO) and bias reshapes become plain constants.
            FoldConstantsWithNumpy(),
            relax.transform.DeadCodeElimination(),
            *([WinogradConv()] if winograd else []),
            # ARMv7 NEON cannot vectorize TVM's round(): quantize gets a rounding it can. relu, clip and
            # max/min by a constant keep a NaN input NaN, as onnxruntime does (nan_propagation.py).
            relax.transform.LegalizeOps({**NAN_PROPAGATING_LEGALIZATIONS,
                                         **({"relax.quantize": legalize_quantize} if target.is_arm else {})}),
            relax.transform.AnnotateTIROpPattern(),
            # ARMv7: a channel pad on a conv's residual path stays its own kernel (the conv's tail
            # then runs on the fused NEON GEMM tile).
            *([keep_residual_channel_pads_apart] if target.is_arm else []),
            # ... and the slice after a padded conv (PadConvOutputChannels) its own kernel too.
            *([keep_conv_channel_slices_apart] if target.is_arm else []),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ]
    )
    with target.tvm_target:
        return seq(mod)


def schedule_config(target: ResolvedTarget, num_threads: int | None = None) -> CpuScheduleConfig:
    """Vector lanes and register budget of ``target``, from LLVM's view of its CPU."""
    tgt = target.tvm_target
    lanes = target.vector_lanes
    registers = _ARM_VECTOR_REGISTERS
    if not target.is_arm:
        try:
            width = int(tvm.get_global_func("target.llvm_get_vector_width")(tgt))
            has_feature = tvm.get_global_func("target.llvm_cpu_has_feature")
            if width >= 128:
                lanes = width // 32
            registers = 32 if bool(has_feature("avx512f", tgt)) else 16
        except Exception:  # noqa: BLE001 - a TVM built without these hooks: keep the preset's lanes
            pass
    # ARMv7 multiplies by a vector lane (vmla.f32 q, q, d[x]); x86 FMA takes a broadcast from memory.
    # Its 1x1 convs run on the assembly GEMM microkernel.
    return CpuScheduleConfig(lanes=lanes, accumulators=registers // 2, num_threads=num_threads,
                             lane_broadcast=target.is_arm, neon_f32_gemm=target.is_arm)


def schedule_kernels(mod: tvm.IRModule, target: ResolvedTarget, num_threads: int | None = None,
                     report: dict | None = None) -> tvm.IRModule:
    """Apply the default schedule to every TIR kernel of ``mod`` (see :mod:`.cpu`).

    Kernels that already carry a schedule (``tirx.is_scheduled``, e.g. from a tuning database) are
    left alone. ``report`` (optional) receives per-kernel rules and a rule histogram.
    """
    config = schedule_config(target, num_threads)
    updates = {}
    kernels = {}
    for gvar, func in bar(list(mod.functions.items()), desc="scheduling kernels", unit="function"):
        if not isinstance(func, tirx.PrimFunc):
            continue
        if func.attrs is not None and "tirx.is_scheduled" in func.attrs and bool(func.attrs["tirx.is_scheduled"]):
            kernels[gvar.name_hint] = "pre-scheduled"
            continue
        result = schedule_kernel(func, config)
        kernels[gvar.name_hint] = result.rule + (f" ({result.detail})" if result.detail else "")
        if result.rule != "unscheduled":
            updates[gvar] = result.func.with_attr("tirx.is_scheduled", True)
    for gvar, func in updates.items():
        mod[gvar] = func
    if report is not None:
        report["lanes"] = config.lanes
        report["accumulators"] = config.accumulators
        report["num_threads"] = num_threads
        report["kernels"] = kernels
        report["rules"] = dict(Counter(rule.split(" ")[0] for rule in kernels.values()))
    return mod

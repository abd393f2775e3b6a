"""Schedules of the integer kernels that ``passes.fold_quant_scales`` emits.

The channels-last kernels (``kernels.int8_nhwc``: 1x1, im2col and depthwise convolution,
residual ADD) are written loop by loop already; they carry their recipe in a func attr and are
written again here for the target: on ARM with the NEON microkernel (``vmull.s8``/``vmlal.s8``/
``vpadal.s16``, ``vqrdmulh`` requantize), with parallel outer loops when threads are wanted.

The NCHW TE kernels that remain (uint8 inputs, weights of -128, shapes the channels-last kernels do
not take, dense layers) are found by block name and scheduled as follows.
Convolution (NCHW) and dense share one shape of schedule: the output row is cut into vectors of
``lanes`` int16 lanes (8 on ARMv7 NEON, a q register; 16 with AVX2), and each vector's int32
accumulator is computed right where the requantize epilogue consumes it::

    for n, o, y, x_o:                      # n, o fused and parallel
      acc[lanes] = 0                       # a few q registers
      for c, r, s:                         # reduction (c in pairs when the kernel pairs products)
        acc[:] += int32(int16(x[.., x_o*lanes : +lanes]) * int16(w[o, c, r, s]))
      out[.., x_o*lanes : +lanes] = requantize(acc + bias[o])

The int8 loads are widened once and multiplied in int16 (``vmovl.s8``/``vmull.s8``; the pair of
products per step becomes ``vmull``+``vmlal``), then widened into int32 (``vaddw.s16``): the NEON
int8 -> int16 -> int32 multiply-accumulate class, half the loaded bytes of the float kernel.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.target import codegen

from ..kernels.int8_nhwc import remake_kernel
from ..targets import ResolvedTarget

CONV_ACC = "int8_conv2d_acc"
DENSE_ACC = "int8_dense_acc"
REQUANTIZE = "int8_requantize"
PAD = "int8_pad"
ELEMENTWISE = ("int8_add", "int8_add_lhs", "int8_add_rhs", "int8_requantize_tensor")


def _block_names(func: tirx.PrimFunc) -> set[str]:
    sch = s_tir.Schedule(func)
    return {sch.get(block).name_hint for block in sch.get_child_blocks(sch.get_sblock("root"))}


def int16_lanes(target: ResolvedTarget) -> int:
    """int16 lanes of one vector register: NEON q = 128 bits, x86 = the preset's float lanes x 2."""
    return 8 if target.is_arm else max(8, 2 * int(target.vector_lanes))


def _vector_width(extent: int, lanes: int) -> int:
    """The widest divisor of ``extent`` up to ``2 * lanes`` (a 14-wide row is one 8+4+2 vector
    group, better than seven 2-wide ones)."""
    return max(d for d in range(1, min(extent, 2 * lanes) + 1) if extent % d == 0)


def _extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _schedule_accumulate(sch: s_tir.Schedule, acc_name: str, lanes: int, parallel: bool) -> None:
    req = sch.get_sblock(REQUANTIZE)
    acc = sch.get_sblock(acc_name)
    loops = sch.get_loops(req)
    inner = loops[-1]
    width = _vector_width(_extent(sch, inner), lanes)
    if width > 1:
        outer, vec = sch.split(inner, [None, width])
    else:
        outer, vec = inner, None
    # Register tile over output channels: each loaded input vector feeds ``block`` accumulators.
    channel_loop = loops[1]
    channels = _extent(sch, channel_loop)
    block = next(b for b in (4, 2, 1) if channels % b == 0)
    if block > 1 and acc_name == CONV_ACC and len(loops) == 4:
        c_o, c_i = sch.split(channel_loop, [None, block])
        sch.reorder(c_o, loops[2], outer, c_i)
    else:
        c_i = None
    sch.compute_at(acc, outer)
    sch.set_scope(acc, 0, "local")
    block = sch.get(acc)
    # compute_at creates no loop for a unit axis (the kh, kw of a 1x1 conv).
    num_reduction = sum(1 for iv in block.iter_vars
                        if iv.iter_type == tirx.IterVar.CommReduce and int(iv.dom.extent) > 1)
    acc_loops = sch.get_loops(acc)
    reduction = list(acc_loops[len(acc_loops) - num_reduction:])
    outer_depth = len(sch.get_loops(req)) - (1 if vec is not None else 0) - (1 if c_i is not None else 0)
    acc_spatial = list(acc_loops[outer_depth:len(acc_loops) - num_reduction])
    spatial = [lp for lp in acc_spatial if width > 1 and _extent(sch, lp) == width][-1:]
    tile = [lp for lp in acc_spatial if c_i is not None and _extent(sch, lp) == block and lp not in spatial][:1]
    if reduction and (spatial or tile):
        sch.reorder(*reduction, *tile, *spatial)
    for lp in tile:
        sch.unroll(lp)
    # parallel and vectorize first: both need the reduction block whole (with its init).
    if parallel:
        outer_loops = sch.get_loops(req)[:2]
        sch.parallel(sch.fuse(*outer_loops) if len(outer_loops) > 1 else outer_loops[0])
    if vec is not None:
        sch.vectorize(vec)
    if spatial:
        sch.vectorize(spatial[0])
    for loop in reduction[1:]:
        if _extent(sch, loop) <= 7:
            sch.unroll(loop)
    if reduction:
        # The init loop is a copy of the vectorized spatial loop, kind included.
        sch.decompose_reduction(acc, reduction[0])


def _schedule_pad(sch: s_tir.Schedule, parallel: bool) -> None:
    try:
        pad = sch.get_sblock(PAD)
    except Exception:  # noqa: BLE001 - a kernel without padding
        return
    loops = sch.get_loops(pad)
    if parallel:
        sch.parallel(sch.fuse(*loops[:2]))


def _schedule_elementwise(sch: s_tir.Schedule, names: set[str], lanes: int, parallel: bool) -> None:
    """Each stage: loops fused, cut into vectors of ``lanes`` int32 lanes, the outer part parallel."""
    for name in ELEMENTWISE:
        if name not in names:
            continue
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        extent = _extent(sch, fused)
        if extent % lanes == 0 and extent > lanes:
            outer, inner = sch.split(fused, [None, lanes])
            sch.vectorize(inner)
            if parallel:
                sch.parallel(outer)
        elif parallel:
            sch.parallel(fused)


def kernel_isa(target: ResolvedTarget) -> str:
    """The instruction set the channels-last kernels are written for (``kernels.int8_nhwc``)."""
    if target.is_arm:
        return "neon"
    if codegen.target_has_features("avx2", target.tvm_target):
        return "avx2"
    return "portable"


def schedule_int8_kernel(func: tirx.PrimFunc, target: ResolvedTarget, num_threads: int | None = None) -> tirx.PrimFunc | None:
    """The scheduled kernel, or None when ``func`` is not one of edgetvm's integer kernels."""
    parallel = num_threads is None or num_threads > 1
    # The channels-last kernels are written loop by loop already: they are written again for the
    # target (ARM: the NEON microkernels; x86 with AVX2: vpmaddwd), with threads if wanted.
    remade = remake_kernel(func, isa=kernel_isa(target), parallel=parallel)
    if remade is not None:
        return remade.with_attr("tirx.is_scheduled", True)
    try:
        names = _block_names(func)
    except Exception:  # noqa: BLE001 - a function s_tir cannot schedule is not one of ours
        return None
    acc_name = CONV_ACC if CONV_ACC in names else DENSE_ACC if DENSE_ACC in names else None
    sch = s_tir.Schedule(func)
    if acc_name is None or REQUANTIZE not in names:
        if not names & set(ELEMENTWISE) or not names <= set(ELEMENTWISE):
            return None
        _schedule_elementwise(sch, names, int16_lanes(target) // 2, parallel)
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    try:
        _schedule_accumulate(sch, acc_name, int16_lanes(target), parallel)
        _schedule_pad(sch, parallel)
    except Exception:  # noqa: BLE001 - a shape the vector schedule does not fit: keep it correct, serial
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def schedule_int8_kernels(mod: tvm.IRModule, target: ResolvedTarget, num_threads: int | None = None,
                          report: dict | None = None) -> tvm.IRModule:
    """Schedule every integer kernel (conv, dense, add, requantize) of ``mod``; other kernels are left to the default
    schedules (which skip ``tirx.is_scheduled`` functions)."""
    updates = {}
    for gvar, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        scheduled = schedule_int8_kernel(func, target, num_threads)
        if scheduled is not None:
            updates[gvar] = scheduled
    for gvar, func in updates.items():
        mod[gvar] = func
    if report is not None:
        report["int8_scheduled"] = sorted(g.name_hint for g in updates)
    return mod

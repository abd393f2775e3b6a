"""Default CPU schedules: deterministic, register-blocked and vectorized, one per kernel.

Every kernel is scheduled by the first rule that applies:

0. :func:`schedule_neon_f32_gemm` on ARMv7 for a stride-1 1x1 conv: per tile of 5 pixels x 8
   channels one hand-scheduled assembly statement (``kernels/neon_f32_gemm.py``) from the bias
   through the channel reduction and the tail (``gemm_epilogue``) to the stores;
   :func:`schedule_neon_f32_stem` for the RGB stem padded to 4 channels (``transform.PadStemChannels``):
   the same tile, one assembly loop over the whole window;
   :func:`schedule_neon_f32_dwconv` for a depthwise 3x3 or 5x5 conv at stride 1 or 2: per output
   row and 4 channels one assembly loop (5x5: one per window row; ``kernels/neon_f32_dwconv.py``),
   the 3x3's tail in its registers when ``gemm_epilogue`` reads it, else the row's tail;
   :func:`schedule_neon_f32_dense` for a dense layer whose tail ``gemm_epilogue`` reads (a classifier): its rows as
   the 1x1 conv's pixels (MobileNetV2's 1280 -> 1000: 1.20 -> 0.54 M instructions, 2.01 -> 1.38 M
   a7 cycles, 0.94 -> 0.42 per MAC);
   :func:`schedule_neon_f32_batch_gemm` for a batched matmul of parameters (Winograd's GEMM per
   transform point, ``transform.WinogradConv``): the 1x1 conv's fused tile per batch, no epilogue.
   (Winograd's input and output transforms come pre-scheduled from ``kernels.winograd``.)
1. :func:`schedule_register_tiled` for a reduction block that :mod:`.analysis` can vectorize along
   the output's last axis (conv2d, 1x1 conv = GEMM, depthwise, dense, pooling, mean). The output is
   computed in register tiles of ``rows x (vectors * lanes)``::

       for n, h, w_o, c_o:                 # fused and parallel when num_threads != 1
         acc[rows, vectors*lanes] = init   # registers
         for r_0, ..., r_m:                # reduction (kh, kw, ci); ci unrolled by 2
           for w_i in rows, c_v in vectors:     # unrolled
             acc[w_i, c_v*lanes : +lanes] (+)= in[...] * wt[..., c_v*lanes : +lanes]   # one FMA
         out[tile] = tail(acc[tile])       # bias, BN, PReLU, residual add: computed at the tile

   ``rows * vectors`` accumulators are half the vector register file (8 of the 16 q registers of
   ARMv7 NEON, 16 of the 32 zmm of AVX-512), the other half holds weights and broadcast inputs.
   Depthwise conv and pooling (a window per channel) sweep one channel vector over the plane
   instead (``for c_o, n, h, w_o``, up to 4 rows): the kh*kw weight vectors stay in registers.

   On ARMv7 (``lane_broadcast``) a conv2d whose input channels are a multiple of the lanes takes
   its inputs a vector of ``lanes`` channels at a time and multiplies each weight vector by one
   lane of it (``vmla.f32 q, q, d[x]``): per ``lanes`` channels one input load per row instead of
   one broadcast load per channel and row::

         for r_0, ..., ci_o:                      # ci in steps of ``lanes``
           x[rows, lanes] = in[rows, ci_o*lanes : +lanes]         # one vector load per row
           for c_v, ci_i, w_i (or w_i, c_v, ci_i):                 # unrolled
             acc[w_i, c_v*lanes : +lanes] += wt[ci_o*lanes + ci_i, c_v*lanes : +lanes] * x[w_i, ci_i]

   ARMv7 has no fused multiply-accumulate by lane, so these kernels, like every ARM kernel, are
   compiled to the unfused ``vmla.f32`` (``edgetvm.backends.neon_mla``); x86 multiplies by a
   broadcast memory operand and rounds the product before adding it, as ARM does
   (``edgetvm.backends.unfused_products``).
2. :func:`schedule_constant_pad` for a kernel that only pads (``relax.nn.pad``, TFLite PAD, a chain of
   them): row by row a copy of the interior and a fill of the border (:mod:`.padding`; on ARMv7
   the ``kernels.neon_f32_copy`` assembly), not a bounds test per element;
   :func:`schedule_space_to_depth` on ARMv7 for the space-to-depth copy of ``transform.SpaceToDepthConv``:
   one NEON copy per output pixel and window row (:mod:`.space_to_depth`).
3. :func:`schedule_generic` for everything else: elementwise producers inlined, each remaining
   block's outer spatial loops fused and parallel, its innermost loop vectorized when it divides
   by the vector width.

Parallel loops (``num_threads`` not 1): the fewest outer loops that give enough tasks are fused
into the parallel one, the rest stay serial inside it (``_parallel_outer``): no division per
iteration to recover indices, and a resize computes its source pixel and weights per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

from ..kernels.neon_f32_dwconv import (DWCONV_STRIDES, dwconv5_row_intrin, dwconv_epilogue_fits, dwconv_fused_call,
                                       dwconv_intrin, zero_row_intrin)
from ..kernels.neon_f32_gemm import (F32_GEMM_DEPTH_STEP, F32_GEMM_TILE_PIXELS, F32_GEMM_TILES, F32_STEM_TILE,
                                    Epilogue,
                                    F32_STEM_WINDOWS, epilogue_fits, f32_gemm_intrin, f32_gemm_tile_call, f32_gemm_tile_name,
                                    f32_stem_intrin, f32_stem_tile_call, f32_stem_tile_name, run_fits)
from .analysis import (ReductionKernel, analyse_reduction, const_int, has_if_then_else, is_spatial, trivial_loops,
                       unit_stride_last)
from .gemm_epilogue import MatchedEpilogue, match_gemm_epilogue
from .padding import copy_and_fill, copy_and_fill_loops, match_constant_pad, single_pad
from .space_to_depth import match_space_to_depth, space_to_depth_copies

# A run of fused 1x1 conv tiles (one assembly call over several tiles of the same channels) reads
# at most this many bytes of input: half a Cortex-A7's 32 KB data cache. Its loop counter
# is a ``mov`` immediate: depths up to 4096.
F32_GEMM_RUN_BYTES = 16384
F32_GEMM_RUN_DEPTH = 4096
# Below this many output elements a parallel launch costs more than it saves.
PARALLEL_MIN_ELEMENTS = 4096
# Parallel tasks enough to balance a 4-core board within a sixteenth of the work.
PARALLEL_MIN_TASKS = 16


@dataclass(frozen=True)
class CpuScheduleConfig:
    """What the schedules need to know about the machine.

    ``lanes``: float32 lanes of one vector register (4 NEON, 8 AVX2, 16 AVX-512).
    ``accumulators``: vector registers a register tile may use for its accumulators.
    ``num_threads``: 1 schedules no parallel loop at all; None or > 1 parallelizes outer loops.
    ``window_accumulators``: the same for depthwise conv and pooling, whose window weights also
    stay in registers (9 of them for 3x3: 4 accumulators + 9 weights + inputs fill 16 q registers).
    ``lane_broadcast``: the multiply-accumulate takes its input operand from one lane of a
    register (ARMv7 ``vmla.f32 q, q, d[x]``), so a conv2d tile loads ``lanes`` input channels
    with one vector load instead of one broadcast load per channel (see ``schedule_register_tiled``).
    ``neon_f32_gemm``: 1x1 convs run on the ARMv7 NEON assembly microkernel
    (``schedule_neon_f32_gemm``), depthwise 3x3 convs on the depthwise one (``schedule_neon_f32_dwconv``).
    """

    lanes: int
    accumulators: int
    num_threads: int | None = None
    window_accumulators: int = 4
    lane_broadcast: bool = False
    neon_f32_gemm: bool = False

    @property
    def parallel(self) -> bool:
        return self.num_threads is None or self.num_threads > 1


@dataclass
class ScheduleResult:
    func: tirx.PrimFunc
    rule: str  # "register-tiled:<kind>", "generic" or "unscheduled"
    detail: str = ""


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def vector_lanes(kernel: ReductionKernel, config: CpuScheduleConfig) -> int:
    """The widest power of two up to ``config.lanes`` dividing the kernel's channel count."""
    lanes = config.lanes
    while lanes > 1 and kernel.vector_extent % lanes:
        lanes //= 2
    return lanes


def choose_tile(kernel: ReductionKernel, config: CpuScheduleConfig, lane_broadcast: bool = False) -> tuple[int, int, int]:
    """(lanes, vectors, rows) of the register tile for ``kernel``.

    The tile with the most accumulators ``rows * vectors <= config.accumulators``; rows must divide
    the row extent (no tail). Ties go to more vectors: a row costs a broadcast load of its input
    and an address register per reduction step, while a tile's weight vectors are contiguous
    (post-incremented loads); on ARMv7 2x4 runs MobileFaceNet in 4% fewer instructions than 4x2.

    ``lane_broadcast`` (see :func:`schedule_register_tiled`): each row holds ``lanes`` input
    channels in one register, so a step of ``lanes`` channels loads ``rows + lanes * vectors``
    vectors for ``lanes * rows * vectors`` multiply-accumulates. The tile with the fewest loads per
    multiply-accumulate wins among those that hold their accumulators and resident operands
    (inputs, or weights when fewer) in all but ``LANE_STREAM_REGISTERS`` registers: ARMv7 takes
    2x4 (18 loads per 32) on even rows and 7x1 (11 per 28) on rows of 7 or 14.
    """
    lanes = vector_lanes(kernel, config)
    windowed = kernel.kind in ("depthwise", "pool")
    # Windowed kernels keep one channel vector's window weights in registers: fewer accumulators.
    budget = config.window_accumulators if windowed else config.accumulators
    best_score, best = None, (1, 1)
    for vectors in ([1] if windowed else _divisors(kernel.vector_extent // lanes, 4)):
        for rows in _divisors(kernel.row_extent, 2 * budget if lane_broadcast else budget):
            accs = rows * vectors
            if lane_broadcast:
                resident = min(rows, lanes * vectors)
                if accs > budget or accs + resident > 2 * config.accumulators - LANE_STREAM_REGISTERS:
                    continue
                score = (-(rows + lanes * vectors) / (lanes * accs), accs, vectors)
            else:
                if accs > budget:
                    continue
                score = (0.0, accs, vectors)
            if best_score is None or score > best_score:
                best_score, best = score, (vectors, rows)
    return lanes, best[0], best[1]


# Weight dtypes a float kernel widens as it reads them (weight-only int8).
NARROW_WEIGHTS = ("int8", "uint8")

# Vector registers a lane-broadcast tile leaves to its streamed operands (see choose_tile): with
# fewer, LLVM's scheduler hoists the streamed loads above the multiply-accumulates and spills.
# ARMv7 MobileFaceNet: 7x1 and 2x4 tiles (11 and 10 registers held) run spill-free, 8x1 and 4x2
# (12 held) spill and cost 1% and 15% more instructions.
LANE_STREAM_REGISTERS = 5
# Fewer channel steps than this and LLVM unrolls the step loop whole, hoists and spills the
# weights, and splats every lane with a vdup: 16 input channels cost 2.5x the instructions of 32.
LANE_MIN_STEPS = 8

# Steps of the innermost channel-reduction loop (conv2d, dense) unrolled around the register tile:
# loop counter, compare and branch are paid once per this many steps. More than 2 lets LLVM hoist
# the loads of later steps above the FMAs of earlier ones, and the ARM tile then spills.
REDUCTION_UNROLL = 2
# A channel reduction this short (the RGB input of a first conv) is unrolled whole.
SMALL_REDUCTION = 4
# A sliding window's inner loop (kw of depthwise conv and pooling) is unrolled whole: with the row
# loop unrolled inside it, the input column of (kw, w_i) equals that of (kw + 1, w_i - 1) and LLVM
# loads it once (rows + kw - 1 loads per row of the window instead of rows * kw).
WINDOW_UNROLL_MAX = 7


def _unroll_innermost_reduction(sch: s_tir.Schedule, reduction: list, windowed: bool) -> tuple[list, list]:
    """Split the innermost reduction loop with extent > 1 into (outer, unrolled inner)."""
    for index in range(len(reduction) - 1, -1, -1):
        extent = int(sch.get(reduction[index]).extent)
        if extent == 1:
            continue
        rest = reduction[:index] + reduction[index + 1:]
        if windowed:
            return (rest, [reduction[index]]) if extent <= WINDOW_UNROLL_MAX else (reduction, [])
        if REDUCTION_UNROLL <= 1:
            return reduction, []
        if extent <= max(REDUCTION_UNROLL, SMALL_REDUCTION):
            return rest, [reduction[index]]
        if extent % REDUCTION_UNROLL == 0:
            outer, inner = sch.split(reduction[index], [None, REDUCTION_UNROLL])
            return reduction[:index] + [outer] + reduction[index + 1:], [inner]
        return reduction, []
    return reduction, []


def schedule_register_tiled(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult | None:
    """Rule 1 (see the module docstring); None when the kernel does not fit its pattern."""
    sch = s_tir.Schedule(func)
    parts = _reduction_and_tail(sch)
    if parts is None:
        return None
    kernel, main, tail, padded = parts
    windowed = kernel.kind in ("depthwise", "pool")
    lane_input = _lane_input_read(sch, main, kernel, config) if config.lane_broadcast else None
    lanes, vectors, rows = choose_tile(kernel, config, lane_broadcast=lane_input is not None)
    if lanes < 2:
        return None
    if (config.lane_broadcast and kernel.kind == "dense"
            and any(r.source.dtype in NARROW_WEIGHTS for r in sch.get(main).reads)):
        # A weight-only int8 dense (SFace's embedding layer) widens every weight to float: one vector
        # of the tile's 16 channels is one 16-byte load widened in registers, where 4 vectors of 4 cost
        # a load and a widening each. SFace's 50176 x 128 layer on ARMv7: 20.88 -> 16.26 M a7 cycles
        # (10.84 -> 10.64 M instructions; LLVM still widens with vzip/vshl/vshr, not vmovl.s8). x86
        # keeps its tile: not measured there.
        lanes, vectors = lanes * vectors, 1
    loops = sch.get_loops(main)
    spatial = [loops[i] for i in kernel.spatial]
    reduction = [loops[i] for i in kernel.reduction]
    c_o, c_v, c_l = sch.split(spatial[-1], [None, vectors, lanes])
    if len(spatial) >= 2:
        w_o, w_i = sch.split(spatial[-2], [None, rows])
        outer = spatial[:-2]
    else:
        w_o = w_i = None
        outer = []
    if lane_input is not None:
        ci_o, ci_i = sch.split(reduction[-1], [None, lanes])
        reduction, unrolled_reduction = reduction[:-1] + [ci_o], [ci_i]
    else:
        reduction, unrolled_reduction = _unroll_innermost_reduction(sch, reduction, windowed)
        window = 1
        for index in kernel.reduction[:-1]:
            window *= kernel.extents[index]
        if (config.lane_broadcast and kernel.kind == "conv2d" and len(reduction) > 1
                and kernel.extents[kernel.reduction[-1]] <= SMALL_REDUCTION and window <= 9):
            # The RGB stem on ARMv7: with its 3 channels unrolled LLVM also unrolls a 3x3 kh and kw
            # and loads all 27 steps' weights ahead, spilling them; one rolled loop over kh*kw*ci
            # does not (MobileFaceNet 88.99 -> 86.99 M instructions, 182.0 -> 177.9 M a7 cycles).
            # A 5x5 stem (palm detection) was not unrolled and loses by the rolled loop's overhead
            # (128.0 -> 130.7 M): it keeps its schedule.
            reduction, unrolled_reduction = [sch.fuse(*reduction, *unrolled_reduction)], []
    if windowed:
        # One channel vector swept over the whole plane: its kh*kw weight vectors stay in
        # registers (LLVM hoists them out of the row loops), only the input is loaded.
        tile_loop = w_o if w_o is not None else c_o
        tile_loops = [c_o, *outer] + ([w_o] if w_o is not None else [])
    else:
        # Channel blocks innermost among the tile loops: each weight load then varies with the loop
        # around it, so LLVM cannot hoist a whole tile's weights out (they do not fit in registers
        # and would be spilled and reloaded from the stack, costing an address computation each).
        tile_loop = c_o
        tile_loops = [*outer] + ([w_o] if w_o is not None else []) + [c_o]
    if lane_input is not None:
        # Per step the smaller operand set stays in registers and the other streams through: the
        # rows' input vectors (each weight vector loaded once, feeding every row, dead after it),
        # or, for tall tiles, the weight vectors (each row's input loaded once, used
        # ``lanes * vectors`` times). Other orders make LLVM hoist the streamed loads and spill.
        if lanes * vectors < rows:
            order = tile_loops + reduction + [w_i, c_v, ci_i, c_l]
        else:
            order = tile_loops + reduction + [c_v, ci_i, w_i, c_l]
    else:
        order = tile_loops + reduction + unrolled_reduction + ([w_i] if w_i is not None else []) + [c_v, c_l]
    sch.reorder(*order)
    if lane_input is not None:
        # The rows' inputs for one step: ``rows`` vectors of ``lanes`` channels, loaded once.
        cache = sch.cache_read(main, lane_input, "local")
        sch.compute_at(cache, reduction[-1])
        cache_loops = sch.get_loops(cache)[len(tile_loops) + len(reduction):]
        sch.vectorize(cache_loops[-1])
        for lp in cache_loops[:-1]:
            sch.unroll(lp)

    sch.reverse_compute_at(tail, tile_loop, preserve_unit_loops=True)
    # Loop kinds first, decompose_reduction last: vectorize and parallel need the update block to
    # still carry its init, and decompose_reduction copies the kinds onto the init block's loops.
    for lp in unrolled_reduction + ([w_i] if w_i is not None else []) + [c_v]:
        sch.unroll(lp)
    sch.vectorize(c_l)

    # The tail reads the accumulators: its tile loops are unrolled too, so every accumulator index
    # is a constant and LLVM keeps the whole tile in registers (one variable index would leave the
    # tile in stack memory, with a load and a store around every FMA).
    _unroll_and_vectorize(sch, sch.get_loops(tail)[len(tile_loops):], lanes)

    if config.parallel:
        total = 1
        for e in kernel.extents[: len(kernel.spatial)]:
            total *= e
        if total >= PARALLEL_MIN_ELEMENTS:
            _parallel_outer(sch, tile_loops)

    sch.decompose_reduction(main, reduction[0])
    sch.set_scope(main, 0, "local")

    for block in padded:
        _schedule_spatial_block(sch, block, config)
    return ScheduleResult(sch.mod["main"], f"register-tiled:{kernel.kind}",
                          f"tile {rows}x{vectors}x{lanes}{' by lane' if lane_input is not None else ''}, {kernel.macs} MAC")


def _unroll_and_vectorize(sch: s_tir.Schedule, loops: list, lanes: int) -> None:
    """A tile's loops (tail or init): the innermost vectorized by ``lanes``, the others unrolled."""
    if not loops:
        return
    last = loops[-1]
    extent = int(sch.get(last).extent)
    if extent % lanes == 0 and extent > lanes:
        last_outer, vec = sch.split(last, [None, lanes])
        sch.vectorize(vec)
        loops = loops[:-1] + [last_outer]
    elif extent == lanes:
        sch.vectorize(last)
        loops = loops[:-1]
    for lp in loops:
        sch.unroll(lp)


def schedule_neon_f32_gemm(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult | None:
    """A stride-1 1x1 conv (NHWC x HWIO: a GEMM over pixels) on the hand-scheduled ARMv7 microkernels
    (``kernels.neon_f32_gemm``): the fused tile when ``gemm_epilogue`` reads the kernel's tail
    (``_fused_gemm_tiles``), else per tile of ``rows`` pixels of one image row and ``4 * vectors``
    channels the whole depth in one inline-assembly loop, then the tail (bias, PReLU, residual)
    from the tile's accumulators::

        for n, h, w_o, c_o:
          acc[rows, 4*vectors] = 0
          acc += x[n, h, w_o*rows : +rows, :] @ wt[0, 0, :, c_o*4*vectors : +4*vectors]   # microkernel
          out[tile] = tail(acc)

    None (the register-tiled rule then applies) for other kernels, or when no tile divides the
    image width and the channels, or the depth is not a multiple of 4. The fused tile takes any
    depth of 4 or more (BlazeFace full's two 8 -> 32 convs over 96x96 pixels with a residual: 4.37
    -> 1.58 M instructions each, 1.85 -> 0.67 per MAC; the model 53.73 -> 48.2 M); the tensorized
    one a depth of 16 or more.
    """
    sch = s_tir.Schedule(func)
    parts = _neon_conv_parts(sch, config, "conv2d")
    if parts is None or parts[3]:
        return None  # not a 1x1 conv, or one with padding
    kernel, main, tail, _ = parts
    kh, kw, depth = (kernel.extents[i] for i in kernel.reduction)
    if (kh, kw) != (1, 1) or depth % F32_GEMM_DEPTH_STEP:
        return None
    if _channels_last_input_read(sch, main, kernel) is None:
        return None  # a strided 1x1 conv: its tile's pixels are not one contiguous run
    fused = _fused_gemm_tiles(func, sch, kernel, main, tail, config)
    if fused is not None or depth < 4 * F32_GEMM_DEPTH_STEP:
        return fused
    height, width, channels = (kernel.extents[i] for i in kernel.spatial[1:])
    tiles = [t for t in F32_GEMM_TILES if height % t[0] == 0 and width % t[1] == 0 and channels % (4 * t[2]) == 0]
    if not tiles:
        return None
    tile_h, tile_w, vectors = tiles[0]
    loops = sch.get_loops(main)
    n, h, w, c = (loops[i] for i in kernel.spatial)
    ry, rx, rc = (loops[i] for i in kernel.reduction)
    # A one-row tile keeps no unit loop over rows (the intrinsic has none to match).
    h_o, h_i = sch.split(h, [None, tile_h]) if tile_h > 1 else (h, None)
    w_o, w_i = sch.split(w, [None, tile_w])
    c_o, c_i = sch.split(c, [None, 4 * vectors])
    tile_loops = [n, h_o, w_o, c_o]
    sch.reorder(*tile_loops, ry, rx, *([h_i] if h_i is not None else []), w_i, c_i, rc)
    _gemm_tile_tail_and_init(sch, main, tail, tile_loops, ry, config, height * width * channels)
    sch.tensorize(h_i if h_i is not None else w_i, f32_gemm_intrin(tile_h, tile_w, vectors, depth))
    return ScheduleResult(sch.mod["main"], f"neon-gemm:{kernel.kind}",
                          f"tile {tile_h}x{tile_w}x{4 * vectors} microkernel, {kernel.macs} MAC")


def schedule_neon_f32_dense(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult | None:
    """A dense layer ``x (M, K) @ w (K, N)`` whose tail ``gemm_epilogue`` reads (MobileNetV2's
    classifier: the matmul and its bias) as the 1x1 conv's fused tiles (``_fused_gemm_tiles``), its
    M rows the pixels: one row takes the 1-pixel tile, per 4 depths 1 input load, 4 weight loads and
    8 ``vmla.f32`` (13 instructions per 32 MACs; the register-tiled schedule ran 0.94 per MAC).
    None for other kernels, K not a multiple of 4, or N not of 4."""
    if not config.neon_f32_gemm:
        return None
    sch = s_tir.Schedule(func)
    parts = _reduction_and_tail(sch)
    if parts is None or parts[3]:
        return None
    kernel, main, tail, _ = parts
    if kernel.kind != "dense" or len(kernel.spatial) != 2 or len(kernel.reduction) != 1:
        return None
    depth = kernel.extents[kernel.reduction[0]]
    rows = kernel.extents[kernel.spatial[0]]
    if depth % F32_GEMM_DEPTH_STEP:
        return None
    stmt = sch.get(main)
    inputs = [i for i, r in enumerate(stmt.reads) if [const_int(d) for d in r.source.shape] == [rows, depth]]
    if len(inputs) != 1:
        return None  # none, or the weight is shaped like the input too: which is which is not read here
    return _fused_gemm_tiles(func, sch, kernel, main, tail, config, inputs[0])


def schedule_neon_f32_batch_gemm(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult | None:
    """A batched matmul of parameters, ``C[b] = A[b] @ W[b]`` ((B, P, K) @ (B, K, N), nothing fused:
    Winograd's GEMM per transform point, ``transform.WinogradConv``), on ARMv7 as the 1x1 conv's fused
    tiles (``kernels.neon_f32_gemm``, no epilogue): per batch, 5 rows x 8 columns per assembly call
    (7 x 4 when N is not a multiple of 8), the last ``P % 5`` rows a smaller tile::

        for b, t (parallel):
          for c_o:
            C[b, t*5 : +5, c_o*8 : +8] = A[b, t*5 : +5, :] @ W[b, :, c_o*8 : +8]

    The rows of A are contiguous (K floats apart) and W's rows N floats apart, as the 1x1 conv's
    pixels and HWIO weight rows are. None for other kernels, or K not a multiple of 4 of at least 16."""
    if not config.neon_f32_gemm:
        return None
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    kernel = analyse_reduction(sch, blocks[0]) if len(blocks) == 1 else None
    if kernel is None or kernel.kind != "dense" or len(kernel.spatial) != 3 or len(kernel.reduction) != 1:
        return None
    stmt = sch.get(kernel.block)
    if len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    a, w, c = stmt.reads[0].source, stmt.reads[1].source, stmt.writes[0].source
    shapes = [[const_int(d) for d in buf.shape] for buf in (a, w, c)]
    batch, rows, depth = shapes[0]
    channels = shapes[1][2] if len(shapes[1]) == 3 else None
    if shapes[1] != [batch, depth, channels] or shapes[2] != [batch, rows, channels] or not _all_parameters(func, [a, w, c]):
        return None
    if depth % F32_GEMM_DEPTH_STEP or depth < 4 * F32_GEMM_DEPTH_STEP or channels % 4:
        return None
    vectors = 2 if channels % 8 == 0 else 1
    pixels = F32_GEMM_TILE_PIXELS[vectors]
    b = tirx.Var("b", "int64")

    def tiles(count: int, first, name: str) -> tirx.Stmt:
        c_o = tirx.Var(f"c_o{name}", "int64")
        channel = c_o * (4 * vectors)
        zero = tirx.const(0, "int64")
        addresses = {"out": tirx.address_of(tirx.BufferLoad(c, [b, first, channel])),
                     "x": tirx.address_of(tirx.BufferLoad(a, [b, first, zero])),
                     "w": tirx.address_of(tirx.BufferLoad(w, [b, zero, channel]))}
        call = f32_gemm_tile_call(count, vectors, depth, channels, Epilogue(), addresses)
        return tirx.For(c_o, 0, channels // (4 * vectors), tirx.ForKind.SERIAL, tirx.Evaluate(call))

    loops = []
    if rows >= pixels:
        t = tirx.Var("tile", "int64")
        loops.append(tirx.For(t, 0, rows // pixels, tirx.ForKind.SERIAL, tiles(pixels, t * pixels, "")))
    if rows % pixels:
        loops.append(tiles(rows % pixels, tirx.const(rows - rows % pixels, "int64"), "_rest"))
    body = loops[0] if len(loops) == 1 else tirx.SeqStmt(loops)
    parallel = config.parallel and batch * rows * channels >= PARALLEL_MIN_ELEMENTS
    body = tirx.For(b, 0, batch, tirx.ForKind.PARALLEL if parallel else tirx.ForKind.SERIAL, body)
    realize = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", body))
    name = f32_gemm_tile_name(pixels, vectors, 1, Epilogue()).removeprefix("edgetvm_neon_f32_gemm_")
    return ScheduleResult(func.with_body(realize), "neon-gemm:batch",
                          f"fused tile {name} microkernel per batch, {kernel.macs} MAC")


def _all_parameters(func: tirx.PrimFunc, buffers: list) -> bool:
    """Whether every buffer is one of ``func``'s parameters (a fused tile addresses only those)."""
    return all(any(b.same_as(p) for p in func.params) for b in buffers)


def _root_and_producers(sch: s_tir.Schedule) -> tuple[s_tir.SBlock, list]:
    """The root block and the statements before the conv's two blocks (its padding passes)."""
    root = sch.mod["main"].body.block
    return root, list(root.body)[:-2] if isinstance(root.body, tirx.SeqStmt) else []


def _tile_addresses(main: s_tir.SBlock, tail: s_tir.SBlock, origin: list, x_read, w_read,
                    matched: MatchedEpilogue) -> dict[str, tirx.PrimExpr]:
    """The addresses a fused tile takes (``out``, ``x``, ``w`` and the epilogue's operands): the
    blocks' accesses with their spatial iterators at ``origin`` (n, h, w, c), the reduced ones 0."""
    def at(block, buffer, indices):
        analyzer = tvm.sym.Analyzer()
        for i, iv in enumerate(block.iter_vars):
            analyzer.bind(iv.var, tirx.const(0, str(iv.var.ty)) if i >= len(origin) else origin[i])
        return tirx.address_of(tirx.BufferLoad(buffer, [analyzer.simplify(i) for i in indices]))

    return {"out": at(tail, tail.body.buffer, tail.body.indices),
            "x": at(main, x_read.source, [r.min for r in x_read.region]),
            "w": at(main, w_read.source, [r.min for r in w_read.region]),
            **{name: at(tail, load.source, load.indices) for name, load in matched.loads.items()}}


def _fused_gemm_tiles(func: tirx.PrimFunc, sch: s_tir.Schedule, kernel: ReductionKernel, main, tail,
                      config: CpuScheduleConfig, x_index: int | None = None) -> ScheduleResult | None:
    """The 1x1 conv as fused tiles (``kernels.neon_f32_gemm.f32_gemm_tile_asm``): each tile's
    accumulators run the whole depth, take the tail (bias first, ``gemm_epilogue``) in registers
    and are stored once, one assembly statement per tile::

        for r in runs (parallel):                   # R tiles of P consecutive pixels of the flat n*h*w image
          for c_o:
            for t in r*R .. r*R + R:                # one assembly statement (kernels: ``run``)
              out[t*P : +P, c_o*4V : +4V] = epilogue(bias + x[t*P : +P, :] @ wt[:, c_o*4V : +4V])
        the last n*h*w % P pixels: the same with a tile of that many pixels

    A run (R tiles whose inputs fit ``F32_GEMM_RUN_BYTES``, the last run shorter) pays LLVM's
    address code once per channel block instead of per tile: each tile steps x and w itself in 2 to
    4 instructions, and its loop 2 to 4 more (LLVM took 7 to 23, spilling the 11 operands). An epilogue whose constants need
    ``movw``/``movt`` (LeakyReLU 0.1) keeps one call per tile.

    The pixels of a 1x1 conv at stride 1 are independent and contiguous in NHWC, so a tile ignores
    image rows: every image takes the 5x8 tile (V = 2; 7x4 when the channels are not a multiple of
    8). A dense layer's rows are its pixels (``x_index``: its input among the reads; by default the
    conv's channels-last input). None when the tail is not an epilogue the tile computes, or a
    buffer is not a parameter of the kernel (then the tensorized tile and its TIR tail apply)."""
    stmt, tail_block = sch.get(main), sch.get(tail)
    extents = [kernel.extents[i] for i in kernel.spatial]
    grid, channels = extents[:-1], extents[-1]
    depth = kernel.extents[kernel.reduction[-1]]
    if channels % 4:
        return None
    vectors = 2 if channels % 8 == 0 else 1
    matched = match_gemm_epilogue(tail_block, stmt.writes[0].source, extents)
    if matched is None or not epilogue_fits(F32_GEMM_TILE_PIXELS[vectors], vectors, matched.epilogue):
        return None
    if x_index is None:
        x_index = _channels_last_input_read(sch, main, kernel)
    x_read = stmt.reads[x_index]
    w_read = next((r for r in stmt.reads if not r.source.same_as(x_read.source)), None)
    out = tail_block.body.buffer
    buffers = [out, x_read.source, *(load.source for load in matched.loads.values())]
    if w_read is None or not _all_parameters(func, [*buffers, w_read.source]):
        return None
    if any(str(b.dtype) != "float32" for b in [*buffers, w_read.source]):
        return None  # the assembly reads float32 (a weight-only int8 dense widens its weights)
    if ([int(d) for d in x_read.source.shape] != [*grid, depth]
            or [int(d) for d in w_read.source.shape][-2:] != [depth, channels]):
        return None

    def tiles(pixels: int, first, name: str, run=None) -> tirx.Stmt:
        """The loop over channel blocks of the tile of ``pixels`` pixels from pixel ``first`` (with
        ``run``, of that many such tiles one after the other)."""
        c_o = tirx.Var(f"c_o{name}", "int64")
        channel = c_o * (4 * vectors)
        # The flat pixel index ``first`` as indices of the pixel grid (n, h, w; a dense layer's rows).
        origin = [tirx.floormod(tirx.floordiv(first, math.prod(grid[i + 1:])), extent) if i else
                  tirx.floordiv(first, math.prod(grid[1:])) for i, extent in enumerate(grid)] + [channel]
        origin = [value if extent > 1 else tirx.const(0, "int64") for value, extent in zip(origin, extents)]
        addresses = _tile_addresses(stmt, tail_block, origin, x_read, w_read, matched)
        call = f32_gemm_tile_call(pixels, vectors, depth, channels, matched.epilogue, addresses, run)
        return tirx.For(c_o, 0, channels // (4 * vectors), tirx.ForKind.SERIAL, tirx.Evaluate(call))

    pixels = F32_GEMM_TILE_PIXELS[vectors]
    total = math.prod(grid)
    loops = []
    parallel = config.parallel and total * channels >= PARALLEL_MIN_ELEMENTS
    kind = tirx.ForKind.PARALLEL if parallel else tirx.ForKind.SERIAL
    count = total // pixels
    if count and run_fits(matched.epilogue) and depth <= F32_GEMM_RUN_DEPTH:
        # Runs of tiles whose inputs fit F32_GEMM_RUN_BYTES, each channel block one assembly call.
        length = max(1, F32_GEMM_RUN_BYTES // (pixels * depth * 4))
        r = tirx.Var("run", "int64")
        loops.append(tirx.For(r, 0, (count + length - 1) // length, kind,
                              tiles(pixels, r * (length * pixels), "", tirx.min(length, count - r * length))))
    elif count:
        t = tirx.Var("tile", "int64")
        loops.append(tirx.For(t, 0, count, kind, tiles(pixels, t * pixels, "")))
    if total % pixels:
        loops.append(tiles(total % pixels, tirx.const(total - total % pixels, "int64"), "_rest"))
    body = loops[0] if len(loops) == 1 else tirx.SeqStmt(loops)
    root = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", body))
    name = f32_gemm_tile_name(pixels, vectors, 1, matched.epilogue).removeprefix("edgetvm_neon_f32_gemm_")
    return ScheduleResult(func.with_body(root), f"neon-gemm:{kernel.kind}",
                          f"fused tile {name} microkernel, {kernel.macs} MAC")


def schedule_neon_f32_stem(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult | None:
    """A k x k conv of 4 input channels (the RGB stem after ``transform.PadStemChannels``), NHWC x
    HWIO, on the GEMM microkernel (``kernels.neon_f32_gemm.f32_stem_intrin``): per tile of 4 pixels
    and 8 channels one assembly loop over the whole window, the accumulators in registers::

        pad = zero-padded x                                   # its own vectorized pass
        for n, h, w_o, c_o:
          acc[4, 8] = 0
          for ky: for kx:                                     # microkernel, depth 4 per tap
            acc += pad[n, h*s + ky, (w_o*4 + 0:4)*s + kx, 0:4] @ wt[ky, kx, 0:4, c_o*8 : +8]
          out[tile] = tail(acc)

    Per tap 4 pixel and 4 weight loads and 32 ``vmla.f32 q, q, d[x]`` (40 instructions per 128
    multiply-accumulates, 96 of them the model's: 0.42 per MAC), per window row ``subs``/``bne``.
    Measured worse: one microkernel call per tap (the accumulators through memory with a 16-register
    ``vldm``/``vstm`` per tap): MobileFaceNet's stem 3.83 M instructions, 8.65 M a7 cycles. None for
    other kernels, or when the width is not a multiple of 4 or the output channels of 8.
    """
    sch = s_tir.Schedule(func)
    parts = _neon_conv_parts(sch, config, "conv2d")
    if parts is None:
        return None
    kernel, main, tail, padded = parts
    kh, kw, depth = (kernel.extents[i] for i in kernel.reduction)
    height, width, channels = (kernel.extents[i] for i in kernel.spatial[1:])
    _, tile_w, vectors = F32_STEM_TILE  # transform.PadStemChannels pads only for this tile
    if depth != F32_GEMM_DEPTH_STEP or kh * kw == 1 or kw not in F32_STEM_WINDOWS:
        return None
    if width % tile_w or channels % (4 * vectors):
        return None
    stride = _window_stride(sch, main, kernel)
    if stride is None:
        return None
    fused = _fused_stem_tiles(func, sch, kernel, main, tail, padded, stride, config)
    if fused is not None:
        return fused
    loops = sch.get_loops(main)
    n, h, w, c = (loops[i] for i in kernel.spatial)
    ry, rx, rc = (loops[i] for i in kernel.reduction)
    w_o, w_i = sch.split(w, [None, tile_w])
    c_o, c_i = sch.split(c, [None, 4 * vectors])
    tile_loops = [n, h, w_o, c_o]
    sch.reorder(*tile_loops, w_i, c_i, ry, rx, rc)
    outer = _gemm_tile_tail_and_init(sch, main, tail, tile_loops, w_i, config, height * width * channels)
    sch.tensorize(sch.get_loops(main)[outer], f32_stem_intrin(kh, kw, stride))
    for block in padded:
        _schedule_spatial_block(sch, block, config)
    return ScheduleResult(sch.mod["main"], f"neon-stem:{kernel.kind}",
                          f"{kh}x{kw} stride {stride}, tile 1x{tile_w}x{4 * vectors} microkernel over the window, "
                          f"{kernel.macs} MAC")


def _fused_stem_tiles(func: tirx.PrimFunc, sch: s_tir.Schedule, kernel: ReductionKernel, main, tail, padded: list,
                      stride: int, config: CpuScheduleConfig) -> ScheduleResult | None:
    """The stem as fused tiles (``kernels.neon_f32_gemm.f32_stem_tile_asm``): per tile of 4 pixels
    x 8 channels one assembly statement through the window, the epilogue and the stores, after the
    padding pass::

        pad = zero-padded x                                   # its own vectorized pass
        for n, h, w_o (parallel), c_o:
          out[n, h, w_o*4 : +4, c_o*8 : +8] = epilogue(bias + window(pad) @ wt[..., c_o*8 : +8])

    None when the tail is not an epilogue the tile computes (then the tensorized stem tile and its
    TIR tail apply)."""
    stmt, tail_block = sch.get(main), sch.get(tail)
    batch, height, width, channels = (kernel.extents[i] for i in kernel.spatial)
    kh, kw, _ = (kernel.extents[i] for i in kernel.reduction)
    matched = match_gemm_epilogue(tail_block, stmt.writes[0].source, [batch, height, width, channels])
    if matched is None or len(padded) != 1 or not epilogue_fits(F32_STEM_TILE[1], F32_STEM_TILE[2], matched.epilogue):
        return None
    pad = sch.get(padded[0]).writes[0].source
    x_read = next((r for r in stmt.reads if r.source.same_as(pad)), None)
    w_read = next((r for r in stmt.reads if not r.source.same_as(pad)), None)
    out = tail_block.body.buffer
    buffers = [out, w_read.source if w_read else pad, *(load.source for load in matched.loads.values())]
    if x_read is None or not _all_parameters(func, buffers):
        return None
    _schedule_spatial_block(sch, padded[0], config)
    root, producers = _root_and_producers(sch)
    if len(producers) != 1:
        return None
    _, pad_rows, pad_width, pad_channels = (int(d) for d in pad.shape)
    _, tile_w, vectors = F32_STEM_TILE
    t, c_o = tirx.Var("tile", "int64"), tirx.Var("c_o", "int64")
    columns = width // tile_w
    origin = [tirx.floordiv(t, height * columns), tirx.floormod(tirx.floordiv(t, columns), height),
              tirx.floormod(t, columns) * tile_w, c_o * (4 * vectors)]
    origin = [value if extent > 1 else tirx.const(0, "int64") for value, extent in zip(origin, (batch, height, width, channels))]
    call = f32_stem_tile_call(kh, kw, stride, pad_channels, pad_width * pad_channels, channels, matched.epilogue,
                              _tile_addresses(stmt, tail_block, origin, x_read, w_read, matched))
    parallel = config.parallel and height * width * channels >= PARALLEL_MIN_ELEMENTS
    loops = tirx.For(t, 0, batch * height * columns, tirx.ForKind.PARALLEL if parallel else tirx.ForKind.SERIAL,
                     tirx.For(c_o, 0, channels // (4 * vectors), tirx.ForKind.SERIAL, tirx.Evaluate(call)))
    body = tirx.SeqStmt([*producers, loops])
    block = s_tir.SBlock([], [], [], "root", body, alloc_buffers=[b for b in root.alloc_buffers if b.same_as(pad)])
    name = f32_stem_tile_name(kw, matched.epilogue).removeprefix("edgetvm_neon_f32_gemm_")
    return ScheduleResult(func.with_body(s_tir.SBlockRealize([], True, block)), f"neon-stem:{kernel.kind}",
                          f"{kh}x{kw} stride {stride}, fused tile {name} microkernel over the window, {kernel.macs} MAC")


def _gemm_tile_tail_and_init(sch: s_tir.Schedule, main, tail, tile_loops: list, first_inner, config: CpuScheduleConfig,
                             outputs: int) -> int:
    """The part the GEMM microkernel schedules share once their loops are ``tile_loops`` (n, rows,
    column tiles, channel tiles) then the tile: the tail computed per tile, unrolled and vectorized;
    the pixel tiles parallel when the kernel is large enough; the accumulators zeroed before
    ``first_inner`` and kept local. Returns how many loops are left outside the tile."""
    sch.reverse_compute_at(tail, tile_loops[-1], preserve_unit_loops=True)
    _unroll_and_vectorize(sch, sch.get_loops(tail)[len(tile_loops):], config.lanes)
    # Loop kinds before decompose_reduction, as in schedule_register_tiled.
    if config.parallel and outputs >= PARALLEL_MIN_ELEMENTS:
        tile_loops = _parallel_outer(sch, tile_loops[:-1]) + tile_loops[-1:]
    init = sch.decompose_reduction(main, first_inner)
    _unroll_and_vectorize(sch, sch.get_loops(init)[len(tile_loops):], config.lanes)
    sch.set_scope(main, 0, "local")
    return len(tile_loops)


# Output pixels of a depthwise row's tail per iteration (see schedule_neon_f32_dwconv).
DWCONV_TAIL_UNROLL = 8


def schedule_neon_f32_dwconv(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult | None:
    """A depthwise 3x3 or 5x5 conv (NHWC, stride 1 or 2, channels a multiple of 4) on the hand-scheduled
    ARMv7 microkernel (``kernels.neon_f32_dwconv``): per output row and 4 channels one assembly loop
    that keeps the 9 window weights in registers; a 3x3 whose tail is an epilogue the row computes
    in registers takes the fused row (``_fused_dwconv_rows``), any other the row's tail from its
    accumulators::

        pad = zero-padded x                                   # its own vectorized pass
        for n, c_o, h:
          acc[w, 4] = sum_{ky,kx} pad[n, h*s + ky, w*s + kx, c_o*4 : +4] * wt[ky, kx, c_o*4 : +4]
          out[n, h, :, c_o*4 : +4] = tail(acc)

    None (the register-tiled rule then applies) for other kernels.
    """
    sch = s_tir.Schedule(func)
    parts = _neon_conv_parts(sch, config, "depthwise")
    if parts is None:
        return None
    kernel, main, tail, padded = parts
    ky, kx, group = (kernel.extents[i] for i in kernel.reduction)
    height, width, channels = (kernel.extents[i] for i in kernel.spatial[1:])
    if (ky, kx, group) not in ((3, 3, 1), (5, 5, 1)) or channels % 4:
        return None
    stride = _window_stride(sch, main, kernel)
    if stride not in DWCONV_STRIDES:
        return None
    fused = _fused_dwconv_rows(func, sch, kernel, main, tail, padded, stride, config) if ky == 3 else None
    if fused is not None:
        return fused
    loops = sch.get_loops(main)
    n, h, w, c = (loops[i] for i in kernel.spatial)
    ry, rx, rc = (loops[i] for i in kernel.reduction)
    c_o, c_i = sch.split(c, [None, 4])
    tile_loops = [n, c_o, h]
    # 3x3: the whole window per call (its 9 weights in registers); 5x5: one call per window row
    # (25 weights do not fit beside the accumulators, a row's 5 do).
    window = (w, c_i, ry, rx) if ky == 3 else (ry, w, c_i, rx)
    sch.reorder(*tile_loops, rc, *window)
    sch.reverse_compute_at(tail, h, preserve_unit_loops=True)
    tail_loops = sch.get_loops(tail)[len(tile_loops):]
    # The row's pixels stay a loop (the accumulators are in memory anyway), unrolled by up to
    # DWCONV_TAIL_UNROLL pixels so that its counter and branch are paid once per that many vectors.
    sch.vectorize(tail_loops[-1])
    unroll = max(_divisors(width, DWCONV_TAIL_UNROLL))
    if unroll > 1:
        sch.unroll(sch.split(tail_loops[-2], [None, unroll])[1])
    # Loop kinds before decompose_reduction, as in schedule_register_tiled.
    if config.parallel and height * width * channels >= PARALLEL_MIN_ELEMENTS:
        tile_loops = _parallel_outer(sch, tile_loops)
    init = sch.decompose_reduction(main, rc)
    sch.set_scope(main, 0, "local")
    sch.tensorize(sch.get_loops(init)[len(tile_loops)], zero_row_intrin(width))
    sch.tensorize(w, dwconv_intrin(stride, width) if ky == 3 else dwconv5_row_intrin(stride, width))
    pad = single_pad(sch, padded[0]) if len(padded) == 1 else None
    if pad is None:
        _schedule_dwconv_padding(sch, padded, config)
    scheduled = sch.mod["main"]
    root = scheduled.body.block
    if pad is not None and isinstance(root.body, tirx.SeqStmt) and len(root.body) == 2:
        body = tirx.SeqStmt([*_padding_by_copy(pad, config), root.body[1]])
        block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                             alloc_buffers=root.alloc_buffers)
        scheduled = scheduled.with_body(s_tir.SBlockRealize([], True, block))
    elif pad is not None:
        return None
    return ScheduleResult(scheduled, f"neon-dwconv:{kernel.kind}",
                          f"{ky}x{kx} stride {stride} row of {width} microkernel, {kernel.macs} MAC")


def _padding_by_copy(pad, config: CpuScheduleConfig) -> list:
    """A depthwise conv's padding pass as a copy of each row's interior and a fill of its border
    (``.padding``; on ARMv7 the NEON copy assembly), not a bounds test per vector: the padding of
    MobileNetV2's 3x3 depthwise convs 19.3 -> 15.9 M instructions, the model 115.6 ->
    112.2 M; hand landmark lite 60.8 -> 58.8 M. The conv reads the padded buffer through
    addresses only, which TVM takes for one element each: it would shrink the buffer to the box of
    those (13 of 16 channels). A store of the pad value to its last element, which the copy then
    rewrites, keeps it whole."""
    corner = tirx.BufferStore(pad.out, pad.value, [tirx.const(int(d) - 1, "int64") for d in pad.out.shape])
    return [corner, copy_and_fill_loops(pad, config.lanes, PARALLEL_MIN_ELEMENTS if config.parallel else None,
                                        config.neon_f32_gemm)]


def _schedule_dwconv_padding(sch: s_tir.Schedule, padded: list, config: CpuScheduleConfig) -> None:
    """The padding pass, its channel loop unrolled (left rolled LLVM made it a ``memcpy`` per pixel)."""
    for block in padded:
        _schedule_spatial_block(sch, block, config)
        pad_loops = sch.get_loops(block)
        if len(pad_loops) >= 2 and int(sch.get(pad_loops[-2]).extent) <= 64:
            sch.unroll(pad_loops[-2])


def _fused_dwconv_rows(func: tirx.PrimFunc, sch: s_tir.Schedule, kernel: ReductionKernel, main, tail, padded: list,
                       stride: int, config: CpuScheduleConfig) -> ScheduleResult | None:
    """The depthwise 3x3 as fused rows (``kernels.neon_f32_dwconv.dwconv_fused_asm``): per output row
    and 4 channels one assembly statement through the taps, the epilogue (``gemm_epilogue``: bias
    after the sum, then PReLU, ReLU/ReLU6, the residual) and one store per pixel, after the padding
    pass::

        pad = zero-padded x                                   # its own vectorized pass
        for n, c_o (parallel), h:
          out[n, h, :, c_o*4 : +4] = epilogue(bias + sum_{ky,kx} pad[n, h*s + ky, :*s + kx, c_o*4 : +4] * wt[ky, kx])

    None when the tail is not an epilogue the row computes in q4-q6, or a buffer is not a parameter
    of the kernel (then the row's accumulators go through memory to the TIR tail)."""
    stmt, tail_block = sch.get(main), sch.get(tail)
    batch, height, width, channels = (kernel.extents[i] for i in kernel.spatial)
    matched = match_gemm_epilogue(tail_block, stmt.writes[0].source, [batch, height, width, channels])
    if matched is None or len(padded) > 1 or not dwconv_epilogue_fits(matched.epilogue):
        return None
    source = sch.get(padded[0]).writes[0].source if padded else None
    x_read = _window_input_read(sch, main, kernel)
    w_read = next((r for r in stmt.reads if x_read is not None and not r.source.same_as(x_read.source)), None)
    if x_read is None or w_read is None or (source is not None and not x_read.source.same_as(source)):
        return None
    out = tail_block.body.buffer
    buffers = [out, w_read.source, *(load.source for load in matched.loads.values())]
    buffers += [] if padded else [x_read.source]
    if not _all_parameters(func, buffers):
        return None
    _, _, x_width, x_channels = (int(d) for d in x_read.source.shape)
    w_shape = [int(d) for d in w_read.source.shape]
    # One pixel step for the input, the output and the residual; the weight's taps C floats apart.
    if x_channels != channels or [int(d) for d in out.shape][-1] != channels or w_shape[2] * w_shape[3] != channels:
        return None
    pad = single_pad(sch, padded[0]) if padded else None
    if padded and pad is None:
        _schedule_dwconv_padding(sch, padded, config)
    root, producers = _root_and_producers(sch)
    if len(producers) != len(padded):
        return None
    if pad is not None:
        producers = _padding_by_copy(pad, config)
    # Nested loops, not one flat index: the row's addresses then step by constants (a flat index
    # split by division cost instructions per row).
    n, c_o, h = (tirx.Var(name, "int64") for name in ("n", "c_o", "h"))
    zero = tirx.const(0, "int64")
    origin = [n if batch > 1 else zero, h if height > 1 else zero, zero, c_o * 4]
    call = dwconv_fused_call(stride, width, channels, x_width * channels, matched.epilogue,
                             _tile_addresses(stmt, tail_block, origin, x_read, w_read, matched),
                             (w_shape[1] * channels, channels))
    parallel = config.parallel and height * width * channels >= PARALLEL_MIN_ELEMENTS
    rows = tirx.For(c_o, 0, channels // 4, tirx.ForKind.PARALLEL if parallel else tirx.ForKind.SERIAL,
                    tirx.For(h, 0, height, tirx.ForKind.SERIAL, tirx.Evaluate(call)))
    rows = tirx.For(n, 0, batch, tirx.ForKind.SERIAL, rows) if batch > 1 else rows
    body = tirx.SeqStmt([*producers, rows]) if producers else rows
    block = s_tir.SBlock([], [], [], "root", body,
                         alloc_buffers=[b for b in root.alloc_buffers if source is not None and b.same_as(source)])
    return ScheduleResult(func.with_body(s_tir.SBlockRealize([], True, block)), f"neon-dwconv:{kernel.kind}",
                          f"3x3 stride {stride} row of {width} microkernel, fused epilogue "
                          f"{'_'.join(matched.epilogue.tokens)}, {kernel.macs} MAC")


def _window_stride(sch: s_tir.Schedule, main, kernel: ReductionKernel) -> int | None:
    """The stride of a depthwise conv: the coefficient of the output column in its input's column
    index (the same for rows); None when the input read is not of that form."""
    read = _window_input_read(sch, main, kernel)
    if read is None:
        return None
    col = sch.get(main).iter_vars[kernel.spatial[-2]].var
    return const_int(tvm.sym.detect_linear_equation(read.region[2].min, [col])[0])


def _window_input_read(sch: s_tir.Schedule, main, kernel: ReductionKernel):
    """The input read of a windowed conv: NHWC, its row and column indices the output's times the
    same stride; None when no read is of that form."""
    stmt = sch.get(main)
    row = stmt.iter_vars[kernel.spatial[-3]].var
    col = stmt.iter_vars[kernel.spatial[-2]].var
    for read in stmt.reads:
        region = read.region
        if len(region) != 4:
            continue
        by_col = tvm.sym.detect_linear_equation(region[2].min, [col])
        by_row = tvm.sym.detect_linear_equation(region[1].min, [row])
        if len(by_col) == 2 and len(by_row) == 2 and const_int(by_col[0]) and const_int(by_col[0]) == const_int(by_row[0]):
            return read
    return None


def _neon_conv_parts(sch: s_tir.Schedule, config: CpuScheduleConfig, kind: str):
    """``_reduction_and_tail`` of an NHWC conv of ``kind`` (4 spatial loops, kh, kw and the input
    channels reduced) when the ARMv7 microkernels are on; None otherwise."""
    if not config.neon_f32_gemm:
        return None
    parts = _reduction_and_tail(sch)
    if parts is None:
        return None
    kernel = parts[0]
    if kernel.kind != kind or len(kernel.spatial) != 4 or len(kernel.reduction) != 3:
        return None
    return parts


def _reduction_and_tail(sch: s_tir.Schedule):
    """(kernel, main block, tail block, padding producers) of a kernel with one analysable
    reduction, its plain producers inlined and its elementwise tail collapsed into one block; None
    when the kernel does not have that shape."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    kernels = [k for k in (analyse_reduction(sch, b) for b in blocks if not is_spatial(sch, b)) if k is not None]
    reductions = [b for b in blocks if not is_spatial(sch, b)]
    if len(reductions) != 1 or len(kernels) != 1:
        return None
    kernel = kernels[0]
    main = kernel.block
    main_name = sch.get(main).name_hint
    position = [sch.get(b).name_hint for b in blocks].index(main_name)
    producers = blocks[:position]
    consumers = blocks[position + 1:]

    # Producers (padding, layout copies): inline plain copies; padding stays a separate, vectorized
    # pass over the input, so the FMA loop never tests a border condition.
    padded = []
    for block in producers:
        if has_if_then_else(sch.get(block)):
            padded.append(block)
        else:
            sch.compute_inline(block)

    # The elementwise tail collapses into its last block, computed per output tile. That needs the
    # tail to index its input by the reduction's output iterators: a consumer that changes the shape
    # (a channel pad after pooling, as in BlazeFace's blocks) would be computed for the wrong region.
    if not _tail_keeps_shape(sch, main, consumers):
        return None
    for block in consumers[:-1]:
        sch.compute_inline(block)
    if consumers:
        tail = consumers[-1]
        if not is_spatial(sch, tail):
            return None
    else:
        tail = sch.cache_write(main, 0, "global")

    return kernel, main, tail, padded


def _lane_input_read(sch: s_tir.Schedule, main, kernel: ReductionKernel, config: CpuScheduleConfig) -> int | None:
    """Which read of ``main`` is a conv2d input that a lane-broadcast tile can load as vectors.

    That is the read not indexed by the output channel, whose last dimension is the innermost
    reduction (input channels, a multiple of the lanes) and whose row dimension follows the
    output row with stride 1: a tile's rows are then ``rows`` contiguous vectors per step. At
    least ``LANE_MIN_STEPS`` steps of ``lanes`` channels.
    """
    if kernel.kind != "conv2d" or len(kernel.spatial) < 2:
        return None
    lanes = vector_lanes(kernel, config)
    channels = kernel.extents[kernel.reduction[-1]]
    if lanes < 2 or channels % lanes or channels < LANE_MIN_STEPS * lanes:
        return None
    return _channels_last_input_read(sch, main, kernel)


def _channels_last_input_read(sch: s_tir.Schedule, main, kernel: ReductionKernel) -> int | None:
    """Which read of the conv2d ``main`` is its input, channels innermost (the innermost
    reduction) and rows following the output rows with stride 1; None when no read is."""
    stmt = sch.get(main)
    vec = stmt.iter_vars[kernel.spatial[-1]].var
    row = stmt.iter_vars[kernel.spatial[-2]].var
    channel = stmt.iter_vars[kernel.reduction[-1]].var
    for index, read in enumerate(stmt.reads):
        region = read.region
        if len(region) < 2 or unit_stride_last(region, vec) is not None or not unit_stride_last(region, channel):
            continue
        coef = tvm.sym.detect_linear_equation(region[-2].min, [row])
        if len(coef) == 2 and const_int(coef[0]) == 1:
            return index
    return None


def _tail_keeps_shape(sch: s_tir.Schedule, main, consumers: list) -> bool:
    """Whether every consumer reading ``main``'s result (directly or through another consumer)
    writes a buffer of the same shape as ``main``'s output, without a padding condition."""
    out = sch.get(main).writes[0].source  # TVM 0.27: a region's buffer is its source
    shape = [const_int(d) for d in out.shape]
    derived = [out]
    for block in consumers:
        stmt = sch.get(block)
        if not any(r.source.same_as(b) for r in stmt.reads for b in derived):
            continue  # e.g. the padding of a residual input: read by the tail, not fed by main
        written = stmt.writes[0].source
        if [const_int(d) for d in written.shape] != shape or has_if_then_else(stmt):
            return False
        derived.append(written)
    return True


def _schedule_spatial_block(sch: s_tir.Schedule, block, config: CpuScheduleConfig) -> None:
    loops = trivial_loops(sch, block)
    if loops is None:
        loops = sch.get_loops(block)
        if not loops:
            return
    extents = [int(sch.get(lp).extent) if isinstance(sch.get(lp).extent, tirx.IntImm) else None for lp in loops]
    if any(e is None for e in extents):
        return
    inner = loops[-1]
    lanes = config.lanes
    while lanes > 1 and extents[-1] % lanes:
        lanes //= 2
    outer = list(loops[:-1])
    if lanes >= 2 and is_spatial(sch, block):
        if extents[-1] > lanes:
            o, inner = sch.split(inner, [None, lanes])
            outer.append(o)
        sch.vectorize(inner)
    elif is_spatial(sch, block):
        outer.append(inner)
    total = 1
    for e in extents:
        total *= e
    if config.parallel and outer and total >= PARALLEL_MIN_ELEMENTS and is_spatial(sch, block):
        _parallel_outer(sch, outer)


def _parallel_outer(sch: s_tir.Schedule, loops: list) -> list:
    """The fewest outer ``loops`` that give :data:`PARALLEL_MIN_TASKS` tasks fused into one parallel
    loop, the rest left serial inside it; the loops after. Fusing them all made every iteration
    recover its indices by 64-bit division and modulo (``i // 96``, ``i % 2``): on ARMv7 each a long
    sequence, per vector in the generic kernels and per tile in the register-tiled ones. The
    default (multi-thread) ARM builds, instructions per inference under qemu (cortex-a7): BlazeFace
    full 80.8 -> 53.8 M (its three bilinear upsamples 19.2 -> 1.93 M, a 96x96x32 1x1 conv with a
    residual 7.99 -> 4.37 M), FaceMesh 23.4 -> 17.3 M, MobileFaceNet 89.1 -> 82.4 M, MobileNetV2
    135.1 -> 120.2 M, hand landmark lite 77.3 -> 65.5 M; their 1-thread builds, which fuse
    nothing, 53.7, 16.7, 80.3, 115.6 and 60.8 M."""
    count, tasks = 0, 1
    while count < len(loops) and tasks < PARALLEL_MIN_TASKS:
        tasks *= int(sch.get(loops[count]).extent)
        count += 1
    fused = sch.fuse(*loops[:count]) if count > 1 else loops[0]
    sch.parallel(fused)
    return [fused, *loops[count:]]


def schedule_constant_pad(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult | None:
    """A kernel that only pads (one pad or a chain) as a copy of the interior and a fill of the rest,
    row by row (:mod:`.padding`), not a bounds test per element."""
    pad = match_constant_pad(func)
    if pad is None:
        return None
    # The NEON copy assembly goes wherever the NEON GEMM microkernel does (ARMv7).
    rewritten = copy_and_fill(func, pad, config.lanes, PARALLEL_MIN_ELEMENTS if config.parallel else None,
                              config.neon_f32_gemm)
    return ScheduleResult(rewritten, "pad", f"pad {list(pad.before)} of {[int(d) for d in pad.x.shape]}, row-wise copy and fill")


def schedule_space_to_depth(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult | None:
    """ARMv7: the space-to-depth copy of ``transform.SpaceToDepthConv`` (its gather proven, :mod:`.space_to_depth`)
    as one NEON copy per output pixel and window row, not a gather per element."""
    matched = match_space_to_depth(func) if config.neon_f32_gemm else None
    if matched is None:
        return None
    rewritten = space_to_depth_copies(func, *matched, PARALLEL_MIN_ELEMENTS if config.parallel else None)
    if rewritten is None:
        return None
    x, _, kh, kw = matched
    return ScheduleResult(rewritten, "space-to-depth",
                          f"{kh}x{kw} blocks of {[int(d) for d in x.shape]}, one NEON copy per window row")


def schedule_generic(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult:
    """Rule 2: inline what inlines, then parallel outer loops and a vectorized inner loop."""
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        if is_spatial(sch, block):
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001 - an output block or a non-injective read: stays
                pass
    for block in sch.get_child_blocks(root):
        if is_spatial(sch, block):
            _schedule_spatial_block(sch, block, config)
        else:
            _schedule_reduction_outer(sch, block, config)
    return ScheduleResult(sch.mod["main"], "generic")


def _schedule_reduction_outer(sch: s_tir.Schedule, block, config: CpuScheduleConfig) -> None:
    loops = trivial_loops(sch, block)
    if loops is None or not config.parallel:
        return
    kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
    lead = []
    for lp, kind in zip(loops, kinds):
        if kind != 0:
            break
        lead.append(lp)
    total = 1
    for lp in lead:
        total *= int(sch.get(lp).extent)
    if lead and total >= 4:
        _parallel_outer(sch, lead)


def schedule_kernel(func: tirx.PrimFunc, config: CpuScheduleConfig) -> ScheduleResult:
    """Schedule one kernel with the first rule that applies; the unscheduled kernel as last resort."""
    for rule in (schedule_neon_f32_gemm, schedule_neon_f32_dense, schedule_neon_f32_batch_gemm, schedule_neon_f32_stem,
                 schedule_neon_f32_dwconv, schedule_register_tiled, schedule_constant_pad, schedule_space_to_depth, schedule_generic):
        try:
            result = rule(func, config)
        except Exception as exc:  # noqa: BLE001 - a primitive refused: the next, simpler rule
            last = f"{rule.__name__}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            continue
        if result is not None:
            return result
        last = f"{rule.__name__}: pattern does not apply"
    return ScheduleResult(func, "unscheduled", last)

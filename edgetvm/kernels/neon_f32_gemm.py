"""The ARMv7 NEON fp32 GEMM microkernels of the 1x1 conv (channels last) and the RGB stem, in inline
assembly that ``backends.neon_microkernels`` places at each call site.

``out[p, j] = epilogue(b[j] + sum_k A[p, k] * B[k, j])``: A is the NHWC input (one pixel's ``K``
channels contiguous), B the HWIO weight (``K`` rows of ``N`` channels, read in place: a
post-increment by a register steps a row, so nothing is packed).

**The fused tile** (``f32_gemm_tile_asm``, called by ``schedules.cpu``'s ``schedule_neon_f32_gemm``
per run of tiles): 5 consecutive pixels of the flat ``n*h*w`` image (a 1x1 conv's pixels are
independent, so a tile ignores image rows; the last ``n*h*w % 5`` pixels take a smaller tile) x 8
channels, the whole tile in one assembly statement: the first step of 4 depths (with a bias, its
first depth's ``vmul.f32 q, q, d[x]`` starts the accumulators instead of 10 ``vmov.i32 #0``), the
rest of the depth as straight code up to ``F32_GEMM_STRAIGHT_STEPS`` steps (32 depths) in all, else
a ``b`` into the depth loop's second step, the epilogue (``Epilogue``: PReLU, LeakyReLU, ReLU/ReLU6
as max/min by a constant, the residual add; ``schedules.gemm_epilogue`` reads it off the kernel's
TIR tail) in registers, one store per pixel; a *run* (``run``: $it tiles along the pixels, the
same channels) repeats the tile, x stepped 4 pixels on (``add x, x, xs, lsl #2``) and w back by
the depth (one ``sub w, w, ws, lsl #b`` per set bit of K: 1 to 3), with a depth loop its counter
$n set by a ``mov`` and the ``b`` into it, ``subs``/``bne`` per tile: 4 to 8 instructions where
LLVM's code between two calls took 7 to 23 (11 operands in 13 registers: it spilled).
Registers (5x8)::

    q6-q15   accumulators, q(6 + 2p + v) = pixel p, channels 4v..4v+3
    q0-q2    pixels 0-2's inputs at depths k..k+3 (lane i of pixel p is A[p, k+i])
    d6, d7   pixels 3-4's inputs at depths k, k+1, loaded again for k+2, k+3
    q4-q5    one depth's weights B[k, 0:8]

Per step of 4 depths::

    vld1.32  {d0-d1}, [x :128], xs   x 3, vld1.32 {d6}, [x :64], xs|xr|xb  x 4
    vld1.32  {d8-d11}, [w :128], ws  x 4 (one depth's 8 weights, next depth N floats on)
    vmla.f32 q6, q4, d0[0]           x 40 (10 accumulators x 4 depths, the depth from an input lane)

160 multiply-accumulates in 51 instructions (0.319 per MAC) and 106 estimated Cortex-A7 issue
cycles (neon_cycles.md: a load one cycle per D register, a q multiply-accumulate two: 10 + 16 +
80), 0.6625 per MAC; ``subs``/``bne`` once per 4 steps. The lane form needs its scalar in d0-d15,
which is why the inputs, not the weights, sit at the bottom. Against the 4x8 tile (q8-q15
accumulators, 4 pixels' inputs in q0-q3, two weight sets q4-q7: 40 instructions and 88 cycles per
128 MACs, 0.3125 and 0.6875 per MAC) 5x8 loads a weight once per 5 pixels instead of 4: more
instructions per MAC in the loop (2 d loads for 2 pixels), fewer cycles. 6x8 does not fit (12
accumulators leave 4 registers for 6 pixels' inputs and 8 weights). When the channels are not a
multiple of 8, 7 pixels x 4 channels (q9-q15, inputs q0-q6, weights q7-q8).

The epilogue after the loop uses the registers below the accumulators (the loop is done with them):
the bias 1 load per tile and 1 ``vadd`` per vector, after the depth (``(sum_k x w) + b`` rounds as
the host build does); PReLU ``select(0 < v, v, v*s)`` as ``vcgt``/``vmul``/``vbif`` (3 per vector,
exact, NaN stays NaN); LeakyReLU ``max(v, v*a)`` as ``vmul``/``vmax``; max/min by a constant 1
(``vmax.f32`` turns a NaN into the default NaN: still NaN); residual 1 load per pixel and 1
``vadd`` per vector; a constant costs ``movw``/``movt``/``vdup`` once per tile, 0 and the
``vmov.f32`` immediates (6.0) one ``vmov``.

Measured (cortex-a7, 1 thread, standalone, ``benchmarks/bench_arm.py --per-kernel``), the 1x1 convs
of MobileFaceNet / MobileNetV2 (instructions, a7 cycles, per MAC):

- tensorized 1x4x8 / 2x2x8 / 1x7x4 tiles, accumulators zeroed in TIR, stored with ``vstm`` and read
  back by the TIR tail: 73.7 M, 155.7 M (0.358, 0.757) / 104.4 M, 214.5 M (0.390, 0.801)
- fused 4x8 tile, accumulators loaded from the bias: 70.5 M, 150.6 M (0.343, 0.732) / 94.7 M,
  200.7 M (0.354, 0.749)
- fused 5x8: 71.4 M, 145.1 M (0.347, 0.706) / 95.7 M, 193.1 M (0.357, 0.721)
- 4 steps per loop iteration instead of 2, and the steps, bias and slope read-only operands (LLVM
  keeps them in registers from tile to tile): 70.6 M, 144.3 M (0.343, 0.702) / 94.5 M, 191.9 M
- the bias added after the depth instead of loaded as the accumulators' start: 71.3 M, 145.5 M
  (0.347, 0.708) / 96.1 M, 194.3 M. Loading it first was 1.3 M a7 cycles faster on MobileFaceNet
  (164.8 M against 166.1 M for the model, under the issue's 165 M) but put the general selfie
  segmenter's ARM build 2.07e-5 from the host build (1.22e-5 before; its test holds it to 1.5e-5):
  ``b + sum_k x w`` loses the products' low bits to a large bias.
- the first depth's products start the accumulators (``vmul``, no 10 ``vmov.i32 #0`` per tile) and
  a depth of up to 32 straight, no loop (deeper, at first: the first iteration of 4 steps
  straight, the loop one shorter): Iris 19.92 -> 19.69 M instructions, 41.26 -> 40.84 M a7 cycles
  (its 1x1 convs 0.370 -> 0.365 per MAC), MobileNetV2 112.18 -> 110.87 M, 232.19 -> 229.88 M (0.358 -> 0.353). The host's
  sum starts at +0, so a sum of -0 products is +0 there and -0 here: only a bias after the depth
  (any but -0) makes the two equal, so an epilogue without one keeps the zeroing.
- runs of tiles (inputs up to 16 KB a run): Iris 19.50 M, 40.66 M (0.361 per MAC), MobileNetV2
  110.74 M, 229.75 M (0.352); runs of 8 KB 19.53 M / 110.82 M, a whole column of the image per run
  19.48 M / 110.64 M (the estimate sees no cache: 16 KB keeps a run's inputs in the A7's L1).
  MobileFaceNet 78.75 -> 77.99 M, 163.13 -> 161.89 M a7 cycles (0.347 -> 0.343); BlazeFace short
  14.29 -> 14.06 M, FaceMesh 15.86 -> 15.47 M.
- deeper than 32: the first step, then a ``b`` into the loop's second step (one branch per tile
  more) instead of the whole first iteration (4 steps) straight before the loop: the code of every
  inlined copy (LLVM copies the tile per channel block) one step longer instead of four. Iris's
  library code (``.text`` less its weights) 409 KB on main, 567 KB with the straight iteration,
  476 KB with the branch (MobileNetV2 434, 679, 572 KB; zeroing and the plain loop: 451 / 542 KB,
  19.56 M / 109.74 M instructions) for 19.42 -> 19.46 M instructions, 40.50 -> 40.54 M a7 cycles
  (MobileNetV2 109.38 -> 109.47 M, 227.76 -> 227.85 M; MobileFaceNet 77.65 -> 77.79 M, 161.23 ->
  161.37 M): the branch kept, the cycle estimate sees no instruction cache.

Tried and measured worse: 5x8 with each weight vector loaded on its own into q5 (all 5 pixels'
inputs in q0-q4): 73.9 M instructions (0.359 per MAC) for the same cycles. Remaining per tile
of a run: the epilogue (bias 1 load + 10 ``vadd``, PReLU 1 load + 30, residual 5 loads + 10,
ReLU6 2 ``vmov`` + 20, 5 stores: one per output vector and op, nothing to share), the run's 4 to
8, and LLVM's address code once per run and channel block. Against the loop's 0.319 per MAC that
leaves K = 32 with bias, residual and PReLU at (408 + 62 + 4) / 1280 = 0.370, K = 64 at
(816 + 62 + 14) / 2560 = 0.348.
Not built for the shallow depths, by estimate: the 4x8 tile (above: 0.3125 per MAC in the loop
but 0.6875 a7 cycles against 0.6625), 6x8 (12 accumulators leave 4 registers for 6 pixels' inputs
and 8 weights: 2 depths of d-register inputs and single weight vectors make 34 instructions per 96
MACs, 0.354), 3x12 (a depth's 12 weights take two loads: 47 per 144, 0.326). No ``pld``: qemu and
the issue-cycle estimate cannot see a prefetch, the instruction count can.

**The tensorized tile** (``f32_gemm_asm``, ``f32_gemm_intrin``): a kernel whose tail the fused tile
cannot compute (``schedules.gemm_epilogue`` declines it: a sigmoid, a bias after the activation)
keeps the earlier microkernel, ``C[p, j] += sum_k A[p, k] * B[k, j]`` over a rectangle of
``tile_h x tile_w`` pixels (1x4x8 when the width is a multiple of 4, 2x2x8 for even sizes, 1x7x4)
whose accumulators C are loaded and stored with one ``vldm``/``vstm``, the TIR tail reading them
back.

The RGB stem (``f32_stem_intrin``; its input padded to 4 channels by ``transform.PadStemChannels``)
runs the 1x4x8 tile with each window tap one step of depth 4: the tap's 4 pixels ``stride`` apart
($2 = stride pixels), the last pixel stepping to the next tap ($4) or, after a window row's last
tap, to the next window row ($3); the loop runs once per window row (``_win<kw>``: ``kw`` steps
per iteration). The weight is the dense HWIO constant, so its pointer steps one row per depth
across taps. 40 instructions per tap of 128 multiply-accumulates (96 the model's), 0.42 per MAC.
The fused stem tile (``f32_stem_tile_asm``) with a bias runs its first window row before the loop,
the first tap's ``vmul`` starting the 8 accumulators (no zeroing; $it one row less): MobileNetV2's
stem 6.18 -> 6.06 M instructions, 12.37 -> 12.14 M a7 cycles (0.571 -> 0.559 per MAC),
MobileFaceNet's 3.00 -> 2.93 M, BlazeFace short's 5x5 3.48 -> 3.45 M.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .neon_asm import inline_asm_definition

# (tile rows, tile columns, vectors) of the supported tiles, best first (see the module docstring).
F32_GEMM_TILES = ((1, 4, 2), (2, 2, 2), (1, 7, 1))
# Depths per loop iteration of the assembly.
F32_GEMM_DEPTH_STEP = 4


def f32_gemm_name(tile_h: int, tile_w: int, vectors: int, steps: int = 1) -> str:
    """The microkernel of a tile whose loop does ``steps`` steps of 4 depths per iteration."""
    return f"edgetvm_neon_f32_gemm_{tile_h}x{tile_w}x{4 * vectors}" + (f"_u{steps}" if steps > 1 else "")


def _registers(pixels: int, vectors: int) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """(input q per pixel, weight q sets [set][vector], accumulator q [pixel][vector])."""
    if pixels * vectors > 8 or pixels + vectors > 8:
        raise ValueError(f"a {pixels}-pixel x {4 * vectors}-channel fp32 tile does not fit the 16 NEON q registers")
    inputs = list(range(pixels))
    sets = (8 - pixels) // vectors
    weights = [[pixels + s * vectors + v for v in range(vectors)] for s in range(sets)]
    accs = [[8 + p * vectors + v for v in range(vectors)] for p in range(pixels)]
    return inputs, weights, accs


def _dlist(q: int, count: int) -> str:
    return f"{{d{2 * q}-d{2 * (q + count) - 1}}}"


# One weight load of a depth step: (q registers, the vectors they hold, the pointer's step after it:
# an operand, or "!" for the bytes loaded).
WeightLoad = tuple[list[int], list[int], str]


def _weight_sets(weights: list[list[int]], step: str) -> list[list[WeightLoad]]:
    """Per depth one load of all the vectors, into the register sets in turn."""
    return [[(weights[k % len(weights)], list(range(len(weights[0]))), step)] for k in range(F32_GEMM_DEPTH_STEP)]


def _depth_step(inputs: list[list[str]], scalars: list[list[str]], weight_loads: list[list[WeightLoad]],
                accs: list[list[int]], w: str) -> list[str]:
    """One step of 4 depths: per depth ``k`` the input loads ``inputs[k]``, then the weight loads
    ``weight_loads[k]`` from ``w``, each followed by the multiply-accumulates of the vectors it
    loaded by every pixel ``p``'s input lane ``scalars[p][k]``."""
    lines = []
    for k in range(F32_GEMM_DEPTH_STEP):
        lines += inputs[k]
        for regs, vectors, step in weight_loads[k]:
            lines.append(f"vld1.32 {_dlist(regs[0], len(regs))}, [{w} :128]" + ("!" if step == "!" else f", {step}"))
            for p, row in enumerate(scalars):
                lines += [f"vmla.f32 q{accs[p][v]}, q{r}, {row[k]}" for r, v in zip(regs, vectors)]
    return lines


def _lanes(q: int) -> list[str]:
    """The 4 depths' scalars of an input held in q register ``q``."""
    return [f"d{2 * q + k // 2}[{k % 2}]" for k in range(F32_GEMM_DEPTH_STEP)]


def f32_gemm_asm(tile_h: int, tile_w: int, vectors: int, steps: int = 1, window_row: bool = False) -> list[str]:
    """The assembly of the ``tile_h x tile_w`` pixels x ``4*vectors`` channels tile. Operands: $0 the
    accumulators (dense, pixel-major), $1 x, $2 x's step to the next pixel of a tile row, $3 to the
    first pixel of the next tile row, $4 back to the first pixel 4 channels on, $5 w, $6 w's step
    to the next depth, $7 iterations of ``steps`` steps (steps in bytes). ``window_row`` (the stem,
    one-row tiles): an iteration is one window row of ``steps`` taps, and its last tap's last pixel
    steps by $3 to the next window row instead of $4 to the next tap."""
    pixels = tile_h * tile_w
    inputs, weights, accs = _registers(pixels, vectors)
    acc_regs = f"{{d{2 * accs[0][0]}-d{2 * accs[-1][-1] + 1}}}"

    def step(last: str) -> list[str]:
        x_steps = ["$3" if p % tile_w == tile_w - 1 else "$2" for p in range(pixels - 1)] + [last]
        loads = [f"vld1.32 {_dlist(q, 1)}, [$1 :128], {after}" for q, after in zip(inputs, x_steps)]
        return _depth_step([loads, [], [], []], [_lanes(q) for q in inputs], _weight_sets(weights, "$6"), accs, "$5")

    body = step("$4") * (steps - 1) + step("$3" if window_row else "$4")
    return [f"vldmia $0, {acc_regs}", "1:", *body, "subs $7, $7, #1", "bne 1b", f"vstmia $0, {acc_regs}"]


_OPERANDS = ("ptr %c", "ptr %x", "i32 %xs", "i32 %xr", "i32 %xb", "ptr %w", "i32 %ws", "i32 %it")


@dataclass(frozen=True)
class Epilogue:
    """What a fused tile (:func:`f32_gemm_tile_asm`) does to its accumulators before its one store.

    ``bias``: the per-channel bias ``b`` is added first, ``v = (sum_k x[p, k] w[k, c]) + b[c]``
    (the host build's order). ``ops``, in order, each ``(kind, bits)`` with ``bits`` a
    float32 constant's bit pattern (None for the kinds that take a tensor):

    - ``prelu``: ``select(0 < v, v, v * s[c])``, ``s`` a per-channel vector (an operand)
    - ``leaky``: ``max(v, v * a)``, ``0 <= a <= 1`` (then the same as ``select(0 < v, v, v * a)``)
    - ``max`` / ``min``: ``max(a, v)`` / ``min(a, v)`` (ReLU is ``max 0``, ReLU6 ``max 0`` then ``min 6``)
    - ``res``: ``v + r[p, c]``, ``r`` a tensor shaped like the output (the residual add)
    """

    bias: bool = False
    ops: tuple[tuple[str, int | None], ...] = ()

    @property
    def constants(self) -> list[int]:
        """The distinct constants, in order of first use: each gets a q register (q2, q3)."""
        return list(dict.fromkeys(bits for _, bits in self.ops if bits is not None))

    @property
    def operands(self) -> tuple[str, ...]:
        """The tensor operands after the GEMM's: ``bias``, ``slope``, ``res``, those it has."""
        kinds = {kind for kind, _ in self.ops}
        return tuple(name for name, present in (("bias", self.bias), ("slope", "prelu" in kinds), ("res", "res" in kinds))
                     if present)

    @property
    def tokens(self) -> list[str]:
        return ["b"] * self.bias + [kind if bits is None else f"{kind}{bits:08x}" for kind, bits in self.ops]


# Constants an epilogue may take (each a q register beside the slope and two temporaries).
EPILOGUE_CONSTANTS = 2
# Pixels of a fused tile by vectors of 4 channels (see the module docstring).
F32_GEMM_TILE_PIXELS = {2: 5, 1: 7}
# Steps of 4 depths a fused tile runs as straight code, without a loop (see the module docstring).
F32_GEMM_STRAIGHT_STEPS = 8


def f32_gemm_tile_name(pixels: int, vectors: int, steps: int, epilogue: Epilogue, straight: int = 1,
                       run: int | None = None) -> str:
    """The fused microkernel of ``pixels`` consecutive pixels x ``4 * vectors`` channels: a loop of
    ``steps`` steps of 4 depths per iteration, or (``steps`` 0) ``straight`` steps and no loop; with
    ``run`` a run of such tiles, each running its loop ``run`` times (:func:`f32_gemm_tile_asm`)."""
    return "_".join([f"edgetvm_neon_f32_gemm_p{pixels}x{4 * vectors}", *([f"s{straight}"] if straight != 1 else []),
                     *([f"u{steps}"] if steps != 1 else []), *([f"r{run}"] if run is not None else []),
                     *epilogue.tokens])


_TILE_NAME = re.compile(r"edgetvm_neon_f32_gemm_p(\d+)x(\d+)((?:_s\d+)?)((?:_u\d+)?)((?:_r\d+)?)((?:_[a-z]+[0-9a-f]*)*)")
_TOKEN = re.compile(r"(prelu|res)|(leaky|max|min)([0-9a-f]{8})")


def _tile_registers(pixels: int, vectors: int) -> tuple[int, list[int], list[list[int]]]:
    """(pixels whose input is a q register of 4 depths, the weights' q registers, accumulator q
    [pixel][vector]) of a fused tile. The accumulators take the top registers; the inputs, whose
    lanes are the scalar operands (d0-d15 only), the bottom: as many pixels as fit 4 depths to a q
    register, the rest 2 depths to a d register (loaded twice per step) so that one depth's weight
    vectors still fit in one load; the weights the registers in between."""
    first_acc = 16 - pixels * vectors
    full = next((a for a in range(pixels, -1, -1) if a + (pixels - a + 1) // 2 + vectors <= first_acc), None)
    if pixels > 8 or full is None:
        raise ValueError(f"a {pixels}-pixel x {4 * vectors}-channel fp32 tile does not fit the 16 NEON q registers")
    accs = [[first_acc + p * vectors + v for v in range(vectors)] for p in range(pixels)]
    return full, list(range(full + (pixels - full + 1) // 2, first_acc)), accs


def half_depth_pixels(pixels: int, vectors: int) -> int:
    """How many pixels of a fused tile take their input 2 depths at a time (the 5x8 tile: 2)."""
    return pixels - _tile_registers(pixels, vectors)[0]


def f32_gemm_tile_asm(pixels: int, vectors: int, steps: int, epilogue: Epilogue, straight: int = 1,
                      run: int | None = None) -> list[str]:
    """The fused tile: ``pixels`` consecutive pixels (one flat run of the NHWC image, rows ignored:
    a 1x1 conv's pixels are independent) x ``4 * vectors`` channels, accumulators initialised,
    the whole depth, the epilogue in registers, one store per pixel. Operands: $0 out, $1 x, $2 x's
    step to the next pixel, [$xr from the last half-depth pixel back to the first, 8 bytes on, when
    ``half_depth_pixels``], $xb from the last pixel back to the first, 16 bytes on, $w, $ws its
    step to the next depth (also the output's and the residual's to the next pixel: both have as
    many channels as w has columns), $it iterations of a loop of ``steps`` steps (with a bias its
    first step before the loop, the first depth's ``vmul`` starting the accumulators, then into
    the loop's second step), or ``straight`` steps and no loop when ``steps`` is 0, then
    ``epilogue.operands``. After the depth the registers below the accumulators are free: the slope
    takes the first, then the constants (materialised through $it, free once the loop is done), then
    temporaries and the residual.

    ``run`` (the loop's iterations per tile): $it tiles one after the other along the pixels, the
    same channels (a run pays LLVM's address code and the call once for all its tiles); $n after
    $it counts the loop, set to ``run`` per tile. The output and the residual are at the next tile
    after the stores; x steps ``pixels - 1`` pixels on (its depth ended one pixel on), w back by
    the depth. The constants must then be ``vmov`` immediates (:func:`run_fits`)."""
    full, weights, accs = _tile_registers(pixels, vectors)
    half = pixels - full
    counter = "n" if run is not None and steps else "it"
    names = ("out", "x", "xs", *(("xr",) if half else ()), "xb", "w", "ws", "it", *(("n",) if counter == "n" else ()),
             *epilogue.operands)
    op = {name: f"${i}" for i, name in enumerate(names)}
    # Pixel p < full: q{p}. The half-depth pixels: d{2 * full + j}, loaded again for depths 2-3
    # ($xr steps back from the last of them to the first, 8 bytes on).
    d_regs = [2 * full + j for j in range(half)]
    steps_to = [op["xs"]] * (pixels - 1)
    first = [f"vld1.32 {_dlist(q, 1)}, [{op['x']} :128], {after}"
             for q, after in zip(range(full), steps_to + [op["xb"]])]
    first += [f"vld1.32 {{d{d}}}, [{op['x']} :64], {after}"
              for d, after in zip(d_regs, steps_to[full:] + [op["xr"] if half else ""])]
    again = [f"vld1.32 {{d{d}}}, [{op['x']} :64], {after}" for d, after in zip(d_regs, [op["xs"]] * (half - 1) + [op["xb"]])]
    scalars = [_lanes(q) for q in range(full)] + [[f"d{d}[{k % 2}]" for k in range(F32_GEMM_DEPTH_STEP)] for d in d_regs]
    sets = [weights[i:i + vectors] for i in range(0, len(weights) - vectors + 1, vectors)]
    step = _depth_step([first, [], again, []], scalars, _weight_sets(sets, op["ws"]), accs, op["w"])
    # With a bias after the depth, the first depth's products start the accumulators (vmul for
    # vmla, no zeroing): the host's sum starts at +0, and the two differ only in the sign of a zero
    # sum, which adding any bias but -0 erases. Without one the accumulators are zeroed.
    first = _products_start(step, len(accs) * vectors) if epilogue.bias else accumulator_init(accs) + step
    loop_end = [f"subs {op[counter]}, {op[counter]}, #1", "bne 1b"]
    if not steps:
        lines = first + step * (straight - 1)
    elif epilogue.bias:
        # The first step, then into the loop's second step: only the loop's code once more than the
        # zeroed loop's (a whole straight first iteration copied 4 steps per channel block: +39% code).
        lines = [*first, "b 3f", "1:", *step, "3:", *step * (steps - 1), *loop_end]
    else:
        lines = [*accumulator_init(accs), "1:", *step * steps, *loop_end]
    if run is None:
        return lines + epilogue_asm(accs, epilogue, op)
    if not run_fits(epilogue):
        raise ValueError(f"a run of fused tiles has no register for the constants of {'_'.join(epilogue.tokens)}")
    depth = F32_GEMM_DEPTH_STEP * (steps * run if steps else straight)
    # Shifted adds: the pixels' and the depth's multiples of a step, one instruction per set bit.
    x_on = [f"add {op['x']}, {op['x']}, {op['xs']}, lsl #{b}" for b in range(8) if (pixels - 1) >> b & 1]
    w_back = [f"sub {op['w']}, {op['w']}, {op['ws']}, lsl #{b}" for b in range(16) if depth >> b & 1]
    return (["2:", *([f"mov {op['n']}, #{run}"] if steps else []), *lines, *epilogue_asm(accs, epilogue, op),
             *x_on, *w_back, f"subs {op['it']}, {op['it']}, #1", "bne 2b"])


def run_fits(epilogue: Epilogue) -> bool:
    """Whether a run of fused tiles computes ``epilogue``: its constants ``vmov`` immediates (the
    run's counter holds the register that would materialise the others)."""
    return all(bits == 0 or _vmov_immediate(bits) for bits in epilogue.constants)


def _products_start(lines: list[str], count: int) -> list[str]:
    """``lines`` with their first ``count`` multiply-accumulates (one per accumulator, the first
    depth's) a ``vmul``: the products start the accumulators, nothing zeroes them."""
    first = [i for i, line in enumerate(lines) if line.startswith("vmla.f32")][:count]
    return [line.replace("vmla.f32", "vmul.f32") if i in first else line for i, line in enumerate(lines)]


def accumulator_init(accs: list[list[int]]) -> list[str]:
    """The accumulators zeroed (the bias comes after the depth loop: ``epilogue_asm``)."""
    return [f"vmov.i32 q{q}, #0" for row in accs for q in row]


def _temporaries(vectors: int, epilogue: Epilogue) -> int:
    """The temporaries the ops need: PReLU a mask and a product, LeakyReLU a product, the residual
    one per vector (consecutive: one load)."""
    kinds = {kind for kind, _ in epilogue.ops}
    return max([0, *[2] * ("prelu" in kinds), *[1] * ("leaky" in kinds), *[vectors] * ("res" in kinds)])


def epilogue_registers(free: Sequence[int], vectors: int,
                       epilogue: Epilogue) -> tuple[list[int], list[int], dict[int, int], list[int]] | None:
    """(slope, bias, constant -> register, temporaries) among the q registers ``free``; None when
    they do not fit. When the rest is short of temporaries the bias registers serve as ones too:
    ``epilogue_asm`` then adds the bias to every accumulator before the ops."""
    free = iter(free)
    slope = [next(free, None) for _ in range(vectors)] if "slope" in epilogue.operands else []
    bias = [next(free, None) for _ in range(vectors)] if epilogue.bias else []
    constant = {bits: next(free, None) for bits in epilogue.constants}
    temps = list(free)
    needed = _temporaries(vectors, epilogue)
    if len(temps) < needed:
        temps += bias
    if None in slope + bias + list(constant.values()) or len(temps) < needed:
        return None
    if "res" in epilogue.operands and temps[:vectors] != list(range(temps[0], temps[0] + vectors)):
        return None
    return slope, bias, constant, temps


def epilogue_fits(pixels: int, vectors: int, epilogue: Epilogue) -> bool:
    """Whether ``epilogue`` fits beside the accumulators of a fused tile of ``pixels`` x ``4 * vectors``."""
    return epilogue_registers(range(16 - pixels * vectors), vectors, epilogue) is not None


def _vmov_immediate(bits: int) -> bool:
    """Whether the float32 ``bits`` is a ``vmov.f32`` immediate, ``+-(16 + n) / 16 * 2^r`` (n < 16,
    -3 <= r <= 4: 6.0 is, 0.1 is not): sign, exponent ``NOT b, b, b, b, b, b`` and 4 fraction bits
    of the 8-bit encoding ``a:b:cdefgh``, the rest zero."""
    b = (bits >> 29) & 1
    return bits & 0x7FFFF == 0 and (bits >> 30) & 1 == 1 - b and (bits >> 25) & 0x1F == 0x1F * b


def epilogue_asm(accs: list[list[int]], epilogue: Epilogue, op: dict[str, str], free: Sequence[int] | None = None) -> list[str]:
    """The epilogue of a fused tile on the accumulators ``accs`` (q registers [pixel][vector]), then
    one store per pixel, using the q registers ``free`` (by default those below the accumulators).
    ``op`` names the operands: ``out`` (stepped by ``ws`` per pixel, as is ``res``), ``bias``,
    ``slope``, ``res`` and ``it``, a general register free to materialise the constants. The bias
    is added here, not loaded as the accumulators' start: ``(sum_k x w) + b`` rounds as the host
    build does, where ``b + sum_k x w`` loses the products' low bits to a large bias (measured: the
    general selfie segmenter's ARM build 2.07e-5 from the host's, against 1.22e-5)."""
    vectors = len(accs[0])
    registers = epilogue_registers(range(accs[0][0]) if free is None else free, vectors, epilogue)
    if registers is None:
        raise ValueError(f"the epilogue {'_'.join(epilogue.tokens)} does not fit beside {len(accs)}x{vectors} accumulators")
    slope, bias, constant, temps = registers
    lines = [f"vld1.32 {_dlist(slope[0], vectors)}, [{op['slope']}]"] if slope else []
    lines += [f"vld1.32 {_dlist(bias[0], vectors)}, [{op['bias']}]"] if bias else []
    for bits, q in constant.items():
        if bits == 0:
            lines.append(f"vmov.i32 q{q}, #0")
        elif _vmov_immediate(bits):
            lines.append(f"vmov.f32 q{q}, #{struct.unpack('<f', struct.pack('<I', bits))[0]!r}")
        else:
            lines += [f"movw {op['it']}, #{bits & 0xFFFF}", f"movt {op['it']}, #{bits >> 16}", f"vdup.32 q{q}, {op['it']}"]
    # The bias registers are temporaries: every accumulator takes the bias before any op.
    bias_first = bool(set(bias) & set(temps))
    if bias_first:
        lines += [f"vadd.f32 q{q}, q{q}, q{b}" for row in accs for q, b in zip(row, bias)]
    for row in accs:
        if not bias_first:
            lines += [f"vadd.f32 q{q}, q{q}, q{b}" for q, b in zip(row, bias)]
        for kind, bits in epilogue.ops:
            if kind == "prelu":
                # select(0 < v, v, v * s): the product inserted where the compare is false (NaN too).
                for v, q in enumerate(row):
                    mask, product = temps[(2 * v) % len(temps)], temps[(2 * v + 1) % len(temps)]
                    lines += [f"vcgt.f32 q{mask}, q{q}, #0", f"vmul.f32 q{product}, q{q}, q{slope[v]}",
                              f"vbif q{q}, q{product}, q{mask}"]
            elif kind == "leaky":
                for v, q in enumerate(row):
                    product = temps[v % len(temps)]
                    lines += [f"vmul.f32 q{product}, q{q}, q{constant[bits]}", f"vmax.f32 q{q}, q{q}, q{product}"]
            elif kind in ("max", "min"):
                lines += [f"v{kind}.f32 q{q}, q{q}, q{constant[bits]}" for q in row]
            else:
                lines.append(f"vld1.32 {_dlist(temps[0], vectors)}, [{op['res']} :128], {op['ws']}")
                lines += [f"vadd.f32 q{q}, q{q}, q{temps[v]}" for v, q in enumerate(row)]
        lines.append(f"vst1.32 {_dlist(row[0], vectors)}, [{op['out']} :128], {op['ws']}")
    return lines


def f32_gemm_tile_definition_of(name: str) -> str | None:
    """The LLVM IR definition of the fused tile (or fused stem tile) called ``name``; None for another name."""
    match = _TILE_NAME.fullmatch(name)
    if match is None:
        return _stem_tile_definition_of(name)
    pixels, channels = int(match.group(1)), int(match.group(2))
    straight = int(match.group(3)[2:]) if match.group(3) else 1
    steps = int(match.group(4)[2:]) if match.group(4) else 1
    run = int(match.group(5)[2:]) if match.group(5) else None
    epilogue = epilogue_of_tokens(match.group(6))
    if epilogue is None or (run is not None and not run_fits(epilogue)):
        return None
    half = half_depth_pixels(pixels, channels // 4)
    operands = ("ptr %out", "ptr %x", "i32 %xs", *(("i32 %xr",) if half else ()), "i32 %xb", "ptr %w", "i32 %ws",
                "i32 %it", *(("i32 %n",) if run is not None and steps else ()),
                *(f"ptr %{name}" for name in epilogue.operands))
    lines = f32_gemm_tile_asm(pixels, channels // 4, steps, epilogue, straight, run)
    return inline_asm_definition(name, operands, lines, _read_only(operands))


def _read_only(operands: tuple[str, ...]) -> frozenset[int]:
    """The operands a fused tile never writes (the steps, bias and slope): LLVM may keep them in
    registers from one tile to the next instead of copying them for each."""
    return frozenset(i for i, operand in enumerate(operands)
                     if operand.split()[-1] in ("%xs", "%xr", "%xb", "%ws", "%bias", "%slope"))


def epilogue_of_tokens(text: str) -> Epilogue | None:
    """The epilogue whose ``tokens`` are ``text`` (``"_b_prelu_res"``); None when one is unknown."""
    tokens = text.split("_")[1:]
    bias = tokens[:1] == ["b"]
    ops = []
    for token in tokens[bias:]:
        parsed = _TOKEN.fullmatch(token)
        if parsed is None:
            return None
        ops.append((parsed.group(1), None) if parsed.group(1) else (parsed.group(2), int(parsed.group(3), 16)))
    return Epilogue(bias, tuple(ops))


def f32_gemm_tile_call(pixels: int, vectors: int, depth: int, channels: int, epilogue: Epilogue,
                       addresses: dict[str, tirx.PrimExpr], tiles: tirx.PrimExpr | None = None) -> tirx.PrimExpr:
    """The call of the fused tile over ``depth`` input and ``channels`` output channels; ``addresses``
    gives ``out``, ``x``, ``w`` and ``epilogue.operands`` at the tile's first pixel and channel.
    ``tiles``: the call runs that many tiles one after the other along the pixels (``run_fits``)."""
    if depth % F32_GEMM_DEPTH_STEP:
        raise ValueError(f"the fp32 GEMM microkernel needs a depth divisible by {F32_GEMM_DEPTH_STEP}, got {depth}")
    # Up to 4 steps per iteration as the depth allows: the loop's subs/bne paid per 16 depths (8 steps
    # measured 0.3 M instructions and a7 cycles fewer on MobileFaceNet for twice the loop code, which
    # LLVM copies for every channel block). A depth of F32_GEMM_STRAIGHT_STEPS steps or fewer has no
    # loop.
    total = depth // F32_GEMM_DEPTH_STEP
    steps = max(n for n in (1, 2, 4) if total % n == 0)
    straight = total if total <= F32_GEMM_STRAIGHT_STEPS else 1
    if straight == total:
        steps = 0
    half = half_depth_pixels(pixels, vectors)
    # From the last pixel back to the first, 4 depths on (8 bytes short when the last pixel loaded
    # a d register); from the last half-depth pixel back to the first, 2 depths on.
    back = 16 - 8 * (half > 0) - (pixels - 1) * depth * 4
    steps_back = [tirx.const(8 - (half - 1) * depth * 4, "int32")] * (half > 0) + [tirx.const(back, "int32")]
    iterations = total // steps if steps else 0
    run = None if tiles is None else iterations
    if tiles is None:
        counts = [tirx.const(iterations, "int32")]
    else:
        counts = [tirx.Cast("int32", tiles), *([tirx.const(0, "int32")] if steps else [])]
    return tirx.call_extern(
        "int32", f32_gemm_tile_name(pixels, vectors, steps, epilogue, straight, run), addresses["out"], addresses["x"],
        tirx.const(depth * 4, "int32"), *steps_back, addresses["w"], tirx.const(channels * 4, "int32"),
        *counts, *(addresses[name] for name in epilogue.operands))


# The stem's tile (one image row: a window tap's pixels are ``stride`` apart) and window widths.
F32_STEM_TILE = F32_GEMM_TILES[0]
F32_STEM_WINDOWS = range(2, 8)


def f32_stem_name(window_w: int) -> str:
    """The microkernel of a stem tile whose loop runs one window row of ``window_w`` taps per iteration."""
    return f32_gemm_name(*F32_STEM_TILE) + f"_win{window_w}"


def f32_stem_tile_name(window_w: int, epilogue: Epilogue) -> str:
    """The fused stem tile: the stem tile's window loop with the fused tile's init and epilogue."""
    return "_".join([f32_stem_name(window_w), "fused", *epilogue.tokens])


_STEM_TILE_NAME = re.compile(r"edgetvm_neon_f32_gemm_1x4x8_win(\d)_fused((?:_[a-z]+[0-9a-f]*)*)")


def f32_stem_tile_asm(window_w: int, epilogue: Epilogue) -> list[str]:
    """The stem tile (``f32_gemm_asm(..., window_row=True)``: $0-$7 as there, $0 now the output)
    with its accumulators zeroed and the epilogue of :func:`f32_gemm_tile_asm` in q0-q7 instead of
    a ``vldm``/``vstm`` of a tile the TIR tail reads back; ``epilogue.operands`` from $8."""
    _, _, accs = _registers(F32_STEM_TILE[0] * F32_STEM_TILE[1], F32_STEM_TILE[2])
    loop = f32_gemm_asm(*F32_STEM_TILE, window_w, True)[1:-1]
    op = {name: f"${i}" for i, name in enumerate(("out", "x", "xs", "xr", "xb", "w", "ws", "it", *epilogue.operands))}
    # With a bias the first window row runs before the loop (then $it is one less), its first tap's
    # products starting the accumulators, as in the fused 1x1 tile.
    start = _products_start(loop[1:-2], sum(map(len, accs))) if epilogue.bias else accumulator_init(accs)
    return start + loop + epilogue_asm(accs, epilogue, op)


def _stem_tile_definition_of(name: str) -> str | None:
    match = _STEM_TILE_NAME.fullmatch(name)
    epilogue = epilogue_of_tokens(match.group(2)) if match else None
    if epilogue is None:
        return None
    operands = ("ptr %out", *_OPERANDS[1:], *(f"ptr %{name}" for name in epilogue.operands))
    return inline_asm_definition(name, operands, f32_stem_tile_asm(int(match.group(1)), epilogue), _read_only(operands))


def f32_stem_tile_call(window_h: int, window_w: int, stride: int, pixel: int, row: int, channels: int,
                       epilogue: Epilogue, addresses: dict[str, tirx.PrimExpr]) -> tirx.PrimExpr:
    """The call of the fused stem tile (the padded input ``pixel`` and ``row`` floats apart, the
    steps of ``f32_stem_intrin``); ``addresses`` as for :func:`f32_gemm_tile_call`."""
    tile_w = F32_STEM_TILE[1]
    last = (tile_w - 1) * stride * pixel
    steps = [stride * pixel * 4, (row - (window_w - 1) * pixel - last) * 4, (pixel - last) * 4]
    if epilogue.bias and window_h < 2:
        raise ValueError(f"the fused stem tile with a bias runs its first window row before the loop: "
                         f"a window of {window_h} row(s) leaves it none")
    return tirx.call_extern(
        "int32", f32_stem_tile_name(window_w, epilogue), addresses["out"], addresses["x"],
        *(tirx.const(step, "int32") for step in steps), addresses["w"], tirx.const(channels * 4, "int32"),
        tirx.const(window_h - epilogue.bias, "int32"), *(addresses[name] for name in epilogue.operands))


# microkernel name -> LLVM IR definition (replacing TVM's ``declare i32 @name(ptr, ptr, i32, ..., i32)``).
DEFINITIONS = {
    **{f32_gemm_name(*tile, steps): inline_asm_definition(f32_gemm_name(*tile, steps), _OPERANDS, f32_gemm_asm(*tile, steps))
       for tile in F32_GEMM_TILES for steps in (1, 2)},
    **{f32_stem_name(kw): inline_asm_definition(f32_stem_name(kw), _OPERANDS, f32_gemm_asm(*F32_STEM_TILE, kw, True))
       for kw in F32_STEM_WINDOWS},
}


@functools.lru_cache(maxsize=None)
def f32_gemm_intrin(tile_h: int, tile_w: int, vectors: int, depth: int) -> str:
    """Register (once) and name the tensor intrinsic of one tile over ``depth`` input channels."""
    if depth % F32_GEMM_DEPTH_STEP:
        raise ValueError(f"the fp32 GEMM microkernel needs a depth divisible by {F32_GEMM_DEPTH_STEP}, got {depth}")
    # Two steps per iteration when the depth allows: the loop's subs/bne paid per 8 depths.
    steps = 2 if depth % (2 * F32_GEMM_DEPTH_STEP) == 0 else 1
    kernel = f32_gemm_name(tile_h, tile_w, vectors, steps)
    name = f"{kernel}_k{depth}"
    iterations = depth // (steps * F32_GEMM_DEPTH_STEP)
    TH, TW, N, K = T.int64(tile_h), T.int64(tile_w), T.int64(4 * vectors), T.int64(depth)

    def call(C, A, B, row, pixel, sb):
        return T.call_extern(
            "int32", kernel, C, A, T.Cast("int32", pixel * 4), T.Cast("int32", (row - (tile_w - 1) * pixel) * 4),
            T.Cast("int32", 16 - ((tile_h - 1) * row + (tile_w - 1) * pixel) * 4), B, T.Cast("int32", sb * 4),
            T.int32(iterations))

    # A tile of one image row has no row dimension: tensorize matches loops, and a unit loop has none.
    if tile_h == 1:
        @T.prim_func(s_tir=True)
        def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, (TW, K), "float32", offset_factor=1)
            B = T.match_buffer(b, (K, N), "float32", offset_factor=1)
            C = T.match_buffer(c, (TW, N), "float32", offset_factor=1, scope="local")
            with T.sblock("root"):
                T.reads(C[0:TW, 0:N], A[0:TW, 0:K], B[0:K, 0:N])
                T.writes(C[0:TW, 0:N])
                for j, n, k in T.grid(TW, N, K):
                    with T.sblock("update"):
                        vj, vn, vk = T.axis.remap("SSR", [j, n, k])
                        C[vj, vn] = C[vj, vn] + A[vj, vk] * B[vk, vn]

        @T.prim_func(s_tir=True)
        def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
            pixel = T.int64()
            sb = T.int64()
            A = T.match_buffer(a, (TW, K), "float32", offset_factor=1, strides=[pixel, 1])
            B = T.match_buffer(b, (K, N), "float32", offset_factor=1, strides=[sb, 1])
            # Dense: the assembly loads and stores the accumulators with one vldm/vstm.
            C = T.match_buffer(c, (TW, N), "float32", offset_factor=1, scope="local")
            with T.sblock("root"):
                T.reads(C[0:TW, 0:N], A[0:TW, 0:K], B[0:K, 0:N])
                T.writes(C[0:TW, 0:N])
                T.evaluate(call(T.address_of(C[0, 0]), T.address_of(A[0, 0]), T.address_of(B[0, 0]),
                                T.int64(0), pixel, sb))
    else:
        @T.prim_func(s_tir=True)
        def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, (TH, TW, K), "float32", offset_factor=1)
            B = T.match_buffer(b, (K, N), "float32", offset_factor=1)
            C = T.match_buffer(c, (TH, TW, N), "float32", offset_factor=1, scope="local")
            with T.sblock("root"):
                T.reads(C[0:TH, 0:TW, 0:N], A[0:TH, 0:TW, 0:K], B[0:K, 0:N])
                T.writes(C[0:TH, 0:TW, 0:N])
                for i, j, n, k in T.grid(TH, TW, N, K):
                    with T.sblock("update"):
                        vi, vj, vn, vk = T.axis.remap("SSSR", [i, j, n, k])
                        C[vi, vj, vn] = C[vi, vj, vn] + A[vi, vj, vk] * B[vk, vn]

        @T.prim_func(s_tir=True)
        def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
            row = T.int64()
            pixel = T.int64()
            sb = T.int64()
            A = T.match_buffer(a, (TH, TW, K), "float32", offset_factor=1, strides=[row, pixel, 1])
            B = T.match_buffer(b, (K, N), "float32", offset_factor=1, strides=[sb, 1])
            C = T.match_buffer(c, (TH, TW, N), "float32", offset_factor=1, scope="local")
            with T.sblock("root"):
                T.reads(C[0:TH, 0:TW, 0:N], A[0:TH, 0:TW, 0:K], B[0:K, 0:N])
                T.writes(C[0:TH, 0:TW, 0:N])
                T.evaluate(call(T.address_of(C[0, 0, 0]), T.address_of(A[0, 0, 0]), T.address_of(B[0, 0]),
                                row, pixel, sb))

    TensorIntrin.register(name, desc, impl, override=True)
    return name


@functools.lru_cache(maxsize=None)
def f32_stem_intrin(window_h: int, window_w: int, stride: int) -> str:
    """Register (once) and name the tensor intrinsic of a stem tile (``transform.PadStemChannels``:
    4 input channels) over its whole ``window_h x window_w`` window, the accumulators in registers
    throughout::

        C[j, n] += sum_{ky, kx, k < 4} A[ky, j * stride + kx, k] * B[ky, kx, k, n]

    B is the dense HWIO weight, so the taps' depth rows follow one another ``N`` floats apart and
    the weight pointer only ever steps by one row."""
    if window_w not in F32_STEM_WINDOWS:
        raise ValueError(f"the fp32 stem microkernel takes windows {F32_STEM_WINDOWS.start} to "
                         f"{F32_STEM_WINDOWS.stop - 1} wide, got {window_w}")
    _, tile_w, vectors = F32_STEM_TILE
    kernel = f32_stem_name(window_w)
    name = f"{kernel}_{window_h}x{window_w}_s{stride}"
    TW, N, K = T.int64(tile_w), T.int64(4 * vectors), T.int64(F32_GEMM_DEPTH_STEP)
    KH, KW, S = T.int64(window_h), T.int64(window_w), T.int64(stride)
    X = T.int64((tile_w - 1) * stride + window_w)

    def column(vj, vkx):
        return vj * S + vkx if stride > 1 else vj + vkx

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (KH, X, K), "float32", offset_factor=1)
        B = T.match_buffer(b, (KH, KW, K, N), "float32", offset_factor=1)
        C = T.match_buffer(c, (TW, N), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:TW, 0:N], A[0:KH, 0:X, 0:K], B[0:KH, 0:KW, 0:K, 0:N])
            T.writes(C[0:TW, 0:N])
            for j, n, ky, kx, k in T.grid(TW, N, KH, KW, K):
                with T.sblock("update"):
                    vj, vn, vky, vkx, vk = T.axis.remap("SSRRR", [j, n, ky, kx, k])
                    C[vj, vn] = C[vj, vn] + A[vky, column(vj, vkx), vk] * B[vky, vkx, vk, vn]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        row = T.int64()
        pixel = T.int64()
        sb = T.int64()
        A = T.match_buffer(a, (KH, X, K), "float32", offset_factor=1, strides=[row, pixel, 1])
        B = T.match_buffer(b, (KH, KW, K, N), "float32", offset_factor=1, strides=[KW * K * sb, K * sb, sb, 1])
        C = T.match_buffer(c, (TW, N), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:TW, 0:N], A[0:KH, 0:X, 0:K], B[0:KH, 0:KW, 0:K, 0:N])
            T.writes(C[0:TW, 0:N])
            # $2 the next pixel of the tap, $3 from the row's last tap's last pixel to the next
            # window row's first, $4 from a tap's last pixel to the next tap's first.
            last = (TW - 1) * S * pixel
            T.evaluate(T.call_extern(
                "int32", kernel, T.address_of(C[0, 0]), T.address_of(A[0, 0, 0]), T.Cast("int32", S * pixel * 4),
                T.Cast("int32", (row - (KW - 1) * pixel - last) * 4), T.Cast("int32", (pixel - last) * 4),
                T.address_of(B[0, 0, 0, 0]), T.Cast("int32", sb * 4), T.int32(window_h)))

    TensorIntrin.register(name, desc, impl, override=True)
    return name

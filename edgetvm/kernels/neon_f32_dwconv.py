"""The ARMv7 NEON fp32 depthwise 3x3 and 5x5 conv microkernels (channels last, stride 1 or 2), as TIR
tensor intrinsics whose bodies call functions that ``backends.neon_microkernels`` defines in inline
assembly.

One call computes one output row of ``width`` pixels for 4 channels::

    C[x, c] += sum_{ky, kx} A[ky, x * stride + kx, c] * B[ky, kx, c]      x < width, c < 4

A is the padded NHWC input (3 rows of the window, one pixel's channels contiguous), B the HWIO
weight read in place. **The fused row** (``dwconv_fused_asm``, called per row by ``schedules.cpu``
when ``schedules.gemm_epilogue`` reads the conv's tail) writes the output itself::

    out[x, c] = epilogue((sum_{ky, kx} A[ky, x * stride + kx, c] * B[ky, kx, c]) + bias[c])

each group's accumulators zeroed in registers, the epilogue (``neon_f32_gemm.epilogue_asm``, the
1x1 GEMM's: PReLU, LeakyReLU, ReLU/ReLU6, the residual) in registers after the group's taps,
one store per pixel. Otherwise (a tail it cannot compute: a sigmoid, a bias after the activation,
slope and bias and two constants) C is the row's accumulators, dense ``width x 4``, zeroed before
by the ``zero_row`` intrinsic (4 zeroed registers, one ``vstmia`` per 4 pixels), loaded and stored
by the loop below and read back by the TIR tail. Registers::

    q7-q15   the 9 window weights B[ky, kx, 0:4], loaded once per call (q(7 + 3*ky + kx))
    q0-q3    accumulators of 4 output pixels
    q4-q6    input columns, rotating: one column is loaded, then feeds every accumulator whose
             window covers it (up to 3), while the next column loads

Per group of 4 output pixels (stride s: ``3 * (3 + 3s)`` column loads, 18 or 27)::

    vldmia   c, {d0-d7}                    x 1
    vld1.32  {q4}, [x :128], pixel         x 3 * (3 + 3s)   (each window row's columns, left to right)
    vmla.f32 q0, q4, q7                    x 36
    vstmia   c!, {d0-d7}; subs; bne        x 3

Stride 1: 1 + 18 + 36 + 3 = 58 instructions per 144 multiply-accumulates, 0.403 per MAC; stride 2:
67, 0.465 per MAC. Estimated Cortex-A7 issue cycles (neon_cycles.md: q load and q multiply-accumulate
two each): (2 * 18 + 2 * 36 + 16 + 2) / 144 = 0.88 per MAC at stride 1. A row of ``width % 4``
pixels more runs the same step with fewer accumulators after the loop. Around it (per output vector
of 36 MACs): the zeroing (1/4 store), the tail (one load of the accumulator and its own operations,
bias + PReLU 5, unrolled by up to 8 pixels) and the padding pass (one load and store per input
vector, a ``memset`` per border pixel). Measured (a 56x56x64 stride-1 layer with bias and PReLU
alone, cortex-a7): 0.87 instructions per MAC for the whole kernel.

The fused row's group instead starts its accumulators in registers (with a bias the first tap's
4 products are ``vmul``, without one 4 ``vmov.i32 q, #0`` come first) and ends with the epilogue in the
freed columns q4-q6: slope and bias loaded again (2), the bias added (4), per pixel PReLU
``vcgt``/``vmul``/``vbif`` (3, the bias register the product's temporary once every accumulator
took the bias) and a ``vst1.32`` (1): 82 instructions per 144 MACs at stride 1 (0.57), no
accumulator through memory (the ``vldmia``/``vstmia`` pair is 16 of the group's a7 cycles, the
tail's loads 8 more). ReLU6 costs ``vmov``, ``movw``/``movt``/``vdup`` per group and 2 per pixel.
Measured (cortex-a7, 1 thread, ``benchmarks/bench_arm.py --per-kernel``), the 3x3 depthwise kinds
of MobileFaceNet (bias + PReLU) and MobileNetV2 (bias + ReLU6), instructions and a7 cycles per MAC:

- accumulators through memory, TIR tail: s1 0.924, 1.688 / 0.950, 1.725; s2 1.408, 2.374 / 1.382, 2.388
- the fused row: s1 0.891, 1.517 / 0.877, 1.461; s2 1.373, 2.199 / 1.307, 2.123 (MobileFaceNet
  166.1 -> 164.4 M a7 cycles, MobileNetV2 240.5 -> 235.0 M)
- ReLU6's 6.0 as one ``vmov.f32`` immediate, and the rows as nested loops (a flat row index split
  by division cost instructions per row): s1 0.870, 1.496 / 0.843, 1.427; s2 1.344, 2.170 / 1.279,
  2.095 (MobileFaceNet 164.1 M, MobileNetV2 234.1 M)
- with a bias, the first tap's ``vmul`` for the 4 zeroing ``vmov`` (the host's sum starts at +0
  and differs from one started by the first product only in the sign of a zero sum, which the
  bias erases; ``neon_f32_gemm`` does the same): MobileFaceNet s1 0.758 -> 0.730, 1.420 -> 1.364,
  s2 0.940 -> 0.912, 1.930 -> 1.875; MobileNetV2 s1 0.735 -> 0.707, 1.375 -> 1.320, s2 0.896 ->
  0.869, 1.848 -> 1.792 (the models 77.99 -> 77.71 M instructions, 161.89 -> 161.34 M a7 cycles;
  110.08 -> 109.50 M, 229.13 -> 227.98 M)

Of the 0.87 instructions per MAC at stride 1 the row's assembly is 0.57; most of the rest is the
padding pass (its unrolled channel loop keeps its addresses on the stack: about 4 instructions per
input vector), the next thing to remove.

Not taken, by estimate: 3-pixel groups (q3 spare, the slope kept across groups): 15 column loads per 108 MACs
instead of 18 per 144, 63 instructions per group with bias + PReLU (0.583 per MAC against 0.569).
The first tap as ``vmul`` without a bias: ``+0 + x`` and ``x`` differ for ``x = -0``, and the host
build's sum starts at ``+0``.

Measured worse or not taken: the register-tiled TIR schedule (``schedules.cpu``, 1.02 instructions
per MAC at stride 1 on MobileFaceNet: its 9 weights, bias and slope do not fit beside 4 accumulators,
so LLVM spilled weights to the stack and reloaded them per tile, and the 7- and 14-wide stages got
1- and 2-pixel tiles). The first tap as ``vmul`` (no zeroing, no ``vldmia``) needs the reduction's
init gone, and TVM's blockize keeps it (the group's unit channel loop stays outside the
intrinsic): LLVM made the kept zeroing loop a ``memset`` call per row, 1.00 instead of 0.87 per
MAC on the layer above. The padding pass's channel loop left rolled became a ``memcpy`` call per
pixel (1.07 instead of 1.00): it is unrolled. Keeping the 2 overlapping columns of each window row for
the next group (12 loads per group instead of 18) needs 6 more registers than the 16 q registers
hold beside 9 weights and 4 accumulators; two output rows per call (ncnn's ``convdw3x3s1``, 16
loads per 4 pixels on a 2x2 tile) saves 2 loads per group: not tried.

5x5 (MediaPipe's BlazeFace, FaceMesh, Iris, hand and palm models): 25 weights do not fit beside any
accumulators, so one call computes one *window row* (``dwconv5_row_*``) and the schedule loops over
the 5 window rows around it::

    C[x, c] += sum_{kx < 5} A[0, x * stride + kx, c] * B[0, kx, 0, c]      x < width, c < 4

    q11-q15  the row's 5 weights, loaded once per call
    q0-q7    accumulators of 8 output pixels
    q8-q10   input columns, rotating (one feeds up to 5 accumulators)

Per group of 8 output pixels (``7 * s + 5`` column loads, 12 or 19)::

    vldmia c, {d0-d15}; vld1.32 x (7s + 5); vmla.f32 x 40; vstmia c!, {d0-d15}; subs; bne

Stride 1: 56 instructions per 160 multiply-accumulates, 0.35 per MAC, (16 + 24 + 80 + 16 + 2) / 160
= 0.86 a7 cycles per MAC (a 16-register vldm/vstm costs 16 on the A7 model); stride 2: 63, 0.39 per
MAC, 0.95 a7 cycles. The accumulators go through memory once per window row instead of once per
output row. Not tried: the whole window per call with each weight row reloaded per group (5 weight
loads per row of 8 pixels: about 0.36 instructions and 0.76 a7 cycles per MAC, but 9 general
registers of operands and a loop counter live at once); 4-pixel groups cost 0.40 and 0.93.
"""

from __future__ import annotations

import functools
import re

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .neon_asm import inline_asm_definition
from .neon_f32_gemm import Epilogue, accumulator_init, epilogue_asm, epilogue_of_tokens, epilogue_registers

# Output pixels per step of the assembly loop (q0-q3).
DWCONV_PIXELS = 4
DWCONV_STRIDES = (1, 2)
# Output pixels per step of the 5x5 window-row loop (q0-q7).
DWCONV5_PIXELS = 8
# Operands: $0 C, $1 x (window row 0, column 0), $2 x's step to the next column, $3 from a window
# row's last column to the next row's first, $4 from the last row's last column to the next group's
# first column, $5 w, $6 w's step to the next column, $7 from a weight row's last column to the next
# row's first. After the weights are loaded $5-$7 are scratch (loop counter, remainder arithmetic).
_OPERANDS = ("ptr %c", "ptr %x", "i32 %xs", "i32 %xn", "i32 %xg", "ptr %w", "i32 %ws", "i32 %wn")


def dwconv_name(stride: int, width: int) -> str:
    return f"edgetvm_neon_f32_dwconv3x3_s{stride}_w{width}"


def dwconv_columns(stride: int, pixels: int, taps: int = 3) -> int:
    """Input columns a group of ``pixels`` output pixels reads per window row of ``taps`` columns."""
    return (pixels - 1) * stride + taps


def _q(reg: int) -> str:
    return f"{{d{2 * reg}-d{2 * reg + 1}}}"


def _group(stride: int, pixels: int, last_row_step: str | None, taps: int = 3, rows: int = 3) -> list[str]:
    """Loads and multiply-accumulates of ``pixels`` output pixels over ``rows`` window rows of ``taps``
    columns; loads one column ahead of its use. Registers: the accumulators from q0, then 3 rotating
    input columns, then the window weights (``taps * ky + kx`` after the columns)."""
    columns = dwconv_columns(stride, pixels, taps)
    first_column = DWCONV_PIXELS if taps == 3 else DWCONV5_PIXELS
    loads, macs = [], []
    for ky in range(rows):
        for j in range(columns):
            step = "$2" if j < columns - 1 else ("$3" if ky < rows - 1 else last_row_step)
            column = first_column + len(loads) % 3
            loads.append(f"vld1.32 {_q(column)}, [$1 :128]" + (f", {step}" if step else ""))
            ops = []
            for p in range(pixels):
                kx = j - p * stride
                if 0 <= kx < taps:
                    ops.append(f"vmla.f32 q{p}, q{column}, q{first_column + 3 + taps * ky + kx}")
            macs.append(ops)
    lines = [loads[0]]
    for k in range(len(loads)):
        if k + 1 < len(loads):
            lines.append(loads[k + 1])
        lines += macs[k]
    return lines


def _first_products(lines: list[str]) -> list[str]:
    """``lines`` with each accumulator's first multiply-accumulate (its tap 0, 0) a ``vmul``: the
    product starts the accumulator, no zeroing."""
    started: set[str] = set()
    out = []
    for line in lines:
        acc = line.split(",")[0][len("vmla.f32 "):] if line.startswith("vmla.f32") else None
        if acc is not None and acc not in started:
            started.add(acc)
            line = line.replace("vmla.f32", "vmul.f32", 1)
        out.append(line)
    return out


def _row_asm(stride: int, width: int, before, after, first_products: bool = False) -> list[str]:
    """One output row of ``width`` pixels: the 9 weights loaded, then per group of 4 pixels (and the
    ``width % 4`` after the loop) ``before(pixels)``, the taps (with ``first_products``, each
    accumulator's first a ``vmul``), ``after(pixels)``."""
    groups, rest = divmod(width, DWCONV_PIXELS)
    lines = [f"vld1.32 {_q(7 + i)}, [$5 :128]" + ("" if i == 8 else (", $6" if i % 3 < 2 else ", $7"))
             for i in range(9)]

    def taps(pixels: int, last_row_step: str | None) -> list[str]:
        group = _group(stride, pixels, last_row_step)
        return _first_products(group) if first_products else group

    if groups:
        lines += [f"mov $5, #{groups}", "1:", *before(DWCONV_PIXELS), *taps(DWCONV_PIXELS, "$4"),
                  *after(DWCONV_PIXELS), "subs $5, $5, #1", "bne 1b"]
    if rest:
        # The shorter group's row step: (full - short) columns further back than the loop's.
        lines += [f"mov $6, #{dwconv_columns(stride, DWCONV_PIXELS) - dwconv_columns(stride, rest)}",
                  "mla $3, $6, $2, $3", *before(rest), *taps(rest, None), *after(rest)]
    return lines


def dwconv_asm(stride: int, width: int) -> list[str]:
    """The assembly of one output row of ``width`` pixels (operands: see ``_OPERANDS``)."""
    return _row_asm(stride, width, lambda pixels: [_accumulators("vldmia $0", pixels)],
                    lambda pixels: [_accumulators("vstmia $0!", pixels)])


# After a group's taps the input columns q4-q6 hold the epilogue's vectors.
_EPILOGUE_REGISTERS = tuple(range(DWCONV_PIXELS, DWCONV_PIXELS + 3))


def dwconv_epilogue_fits(epilogue: Epilogue) -> bool:
    """Whether the fused row (:func:`dwconv_fused_asm`) computes ``epilogue`` in q4-q6."""
    return epilogue_registers(_EPILOGUE_REGISTERS, 1, epilogue) is not None


def dwconv_fused_name(stride: int, width: int, epilogue: Epilogue) -> str:
    return "_".join([dwconv_name(stride, width), "fused", *epilogue.tokens])


def dwconv_fused_asm(stride: int, width: int, epilogue: Epilogue) -> list[str]:
    """One output row of ``width`` pixels x 4 channels with its epilogue in registers: per group of 4
    pixels the 9 taps (with a bias the first tap's ``vmul`` starts the accumulators q0-q3, without
    one they are zeroed first), then ``neon_f32_gemm.epilogue_asm`` in the
    freed columns q4-q6 (bias and slope loaded again per group, the bias registers the PReLU's
    temporaries once added) and one store per pixel. Operands: ``_OPERANDS`` with $0 the output
    row (stepped by $2, the pixel step the input, output and residual share: a depthwise conv
    keeps the channels), then ``epilogue.operands``; $6 materialises the constants."""
    op = {"out": "$0", "ws": "$2", "it": "$6",
          **{name: f"${len(_OPERANDS) + i}" for i, name in enumerate(epilogue.operands)}}
    # With a bias, the first tap's products start the accumulators (see neon_f32_gemm: the bias
    # erases the sign of a zero sum, the one way a sum from +0 and one from the first product differ).
    return _row_asm(stride, width, lambda pixels: [] if epilogue.bias else accumulator_init([[p] for p in range(pixels)]),
                    lambda pixels: epilogue_asm([[p] for p in range(pixels)], epilogue, op, _EPILOGUE_REGISTERS),
                    first_products=epilogue.bias)


def dwconv_fused_call(stride: int, width: int, pixel: int, row: int, epilogue: Epilogue,
                      addresses: dict[str, tirx.PrimExpr], weight_strides: tuple[int, int]) -> tirx.PrimExpr:
    """The call of the fused row over an input ``pixel`` and ``row`` floats apart (and an output and
    residual ``pixel`` apart); ``addresses`` gives ``out``, ``x``, ``w`` and ``epilogue.operands``
    at the row's first pixel and channel, ``weight_strides`` the weight's (row, column) strides."""
    last = dwconv_columns(stride, DWCONV_PIXELS) - 1
    brow, bpixel = weight_strides
    steps = [pixel * 4, (row - last * pixel) * 4, (DWCONV_PIXELS * stride * pixel - 2 * row - last * pixel) * 4]
    return tirx.call_extern(
        "int32", dwconv_fused_name(stride, width, epilogue), addresses["out"], addresses["x"],
        *(tirx.const(step, "int32") for step in steps), addresses["w"], tirx.const(bpixel * 4, "int32"),
        tirx.const((brow - 2 * bpixel) * 4, "int32"), *(addresses[name] for name in epilogue.operands))


def _accumulators(op: str, pixels: int) -> str:
    return f"{op}, {{d0-d{2 * pixels - 1}}}"


def zero_row_asm(width: int) -> list[str]:
    """The assembly that zeroes a row's ``width x 4`` accumulators (operand $0), 4 pixels per store."""
    groups, rest = divmod(width, DWCONV_PIXELS)
    lines = [f"vmov.i32 q{p}, #0" for p in range(min(width, DWCONV_PIXELS))]
    lines += [_accumulators("vstmia $0!", DWCONV_PIXELS)] * groups
    return lines + ([_accumulators("vstmia $0!", rest)] if rest else [])


@functools.lru_cache(maxsize=None)
def dwconv_definition(stride: int, width: int) -> str:
    """The LLVM IR definition of the microkernel of one output row of ``width`` pixels."""
    return inline_asm_definition(dwconv_name(stride, width), _OPERANDS, dwconv_asm(stride, width))


@functools.lru_cache(maxsize=None)
def dwconv_intrin(stride: int, width: int) -> str:
    """Register (once) and name the tensor intrinsic of one output row of ``width`` pixels."""
    if stride not in DWCONV_STRIDES:
        raise ValueError(f"the depthwise 3x3 microkernel takes stride 1 or 2, got {stride}")
    kernel = dwconv_name(stride, width)
    name = f"{kernel}_intrin"
    W, S, X = T.int64(width), T.int64(stride), T.int64(dwconv_columns(stride, width))
    # The loop's last column of a window row, where the assembly steps to the next row or group.
    last = T.int64(dwconv_columns(stride, DWCONV_PIXELS) - 1)

    def column(vx, vkx):
        return vx * S + vkx if stride > 1 else vx + vkx

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (T.int64(3), X, T.int64(4)), "float32", offset_factor=1)
        B = T.match_buffer(b, (T.int64(3), T.int64(3), T.int64(1), T.int64(4)), "float32", offset_factor=1)
        C = T.match_buffer(c, (W, T.int64(4)), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:W, 0:4], A[0:3, 0:X, 0:4], B[0:3, 0:3, 0:1, 0:4])
            T.writes(C[0:W, 0:4])
            for x, ch, ky, kx in T.grid(W, T.int64(4), T.int64(3), T.int64(3)):
                with T.sblock("update"):
                    vx, vc, vky, vkx = T.axis.remap("SSRR", [x, ch, ky, kx])
                    T.reads(C[vx, vc], A[vky, column(vx, vkx), vc], B[vky, vkx, 0, vc])
                    T.writes(C[vx, vc])
                    C[vx, vc] = C[vx, vc] + A[vky, column(vx, vkx), vc] * B[vky, vkx, 0, vc]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        row = T.int64()
        pixel = T.int64()
        brow = T.int64()
        bpixel = T.int64()
        A = T.match_buffer(a, (T.int64(3), X, T.int64(4)), "float32", offset_factor=1, strides=[row, pixel, 1])
        B = T.match_buffer(b, (T.int64(3), T.int64(3), T.int64(1), T.int64(4)), "float32", offset_factor=1,
                           strides=[brow, bpixel, bpixel, 1])
        C = T.match_buffer(c, (W, T.int64(4)), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:W, 0:4], A[0:3, 0:X, 0:4], B[0:3, 0:3, 0:1, 0:4])
            T.writes(C[0:W, 0:4])
            T.evaluate(T.call_extern(
                "int32", kernel, T.address_of(C[0, 0]), T.address_of(A[0, 0, 0]), T.Cast("int32", pixel * 4),
                T.Cast("int32", (row - last * pixel) * 4),
                T.Cast("int32", (DWCONV_PIXELS * S * pixel - 2 * row - last * pixel) * 4),
                T.address_of(B[0, 0, 0, 0]), T.Cast("int32", bpixel * 4), T.Cast("int32", (brow - 2 * bpixel) * 4)))

    TensorIntrin.register(name, desc, impl, override=True)
    return name


def dwconv5_row_name(stride: int, width: int) -> str:
    return f"edgetvm_neon_f32_dwconv5x5row_s{stride}_w{width}"


# Operands of the 5x5 window-row kernel: $0 C, $1 x (column 0), $2 x's step to the next column, $3
# from a group's last column to the next group's first, $4 w, $5 w's step to the next column; after
# the weights are loaded $4 and $5 are the loop counter.
_ROW_OPERANDS = ("ptr %c", "ptr %x", "i32 %xs", "i32 %xg", "ptr %w", "i32 %ws")


def dwconv5_row_asm(stride: int, width: int) -> list[str]:
    """The assembly of one window row of a 5x5 depthwise conv over an output row of ``width`` pixels
    (operands: see ``_ROW_OPERANDS``): 5 weights in q11-q15, 8 accumulators q0-q7, columns q8-q10."""
    groups, rest = divmod(width, DWCONV5_PIXELS)
    lines = [f"vld1.32 {_q(DWCONV5_PIXELS + 3 + i)}, [$4 :128]" + (", $5" if i < 4 else "") for i in range(5)]
    if groups:
        lines += [f"mov $4, #{groups}", "1:", _accumulators("vldmia $0", DWCONV5_PIXELS),
                  *_group(stride, DWCONV5_PIXELS, "$3", taps=5, rows=1),
                  _accumulators("vstmia $0!", DWCONV5_PIXELS), "subs $4, $4, #1", "bne 1b"]
    if rest:
        lines += [_accumulators("vldmia $0", rest), *_group(stride, rest, None, taps=5, rows=1),
                  _accumulators("vstmia $0!", rest)]
    return lines


@functools.lru_cache(maxsize=None)
def dwconv5_row_definition(stride: int, width: int) -> str:
    """The LLVM IR definition of the 5x5 window-row microkernel of an output row of ``width`` pixels."""
    return inline_asm_definition(dwconv5_row_name(stride, width), _ROW_OPERANDS, dwconv5_row_asm(stride, width))


@functools.lru_cache(maxsize=None)
def dwconv5_row_intrin(stride: int, width: int) -> str:
    """Register (once) and name the tensor intrinsic of one window row of a 5x5 depthwise conv::

        C[x, c] += sum_{kx < 5} A[0, x * stride + kx, c] * B[0, kx, 0, c]      x < width, c < 4
    """
    if stride not in DWCONV_STRIDES:
        raise ValueError(f"the depthwise 5x5 microkernel takes stride 1 or 2, got {stride}")
    kernel = dwconv5_row_name(stride, width)
    name = f"{kernel}_intrin"
    W, S, X = T.int64(width), T.int64(stride), T.int64(dwconv_columns(stride, width, 5))
    # From the loop's last column of a group back (or on) to the next group's first.
    back = T.int64(DWCONV5_PIXELS * stride - dwconv_columns(stride, DWCONV5_PIXELS, 5) + 1)

    def column(vx, vkx):
        return vx * S + vkx if stride > 1 else vx + vkx

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (T.int64(1), X, T.int64(4)), "float32", offset_factor=1)
        B = T.match_buffer(b, (T.int64(1), T.int64(5), T.int64(1), T.int64(4)), "float32", offset_factor=1)
        C = T.match_buffer(c, (W, T.int64(4)), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:W, 0:4], A[0:1, 0:X, 0:4], B[0:1, 0:5, 0:1, 0:4])
            T.writes(C[0:W, 0:4])
            for x, ch, kx in T.grid(W, T.int64(4), T.int64(5)):
                with T.sblock("update"):
                    vx, vc, vkx = T.axis.remap("SSR", [x, ch, kx])
                    T.reads(C[vx, vc], A[0, column(vx, vkx), vc], B[0, vkx, 0, vc])
                    T.writes(C[vx, vc])
                    C[vx, vc] = C[vx, vc] + A[0, column(vx, vkx), vc] * B[0, vkx, 0, vc]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        row = T.int64()
        pixel = T.int64()
        brow = T.int64()
        bpixel = T.int64()
        A = T.match_buffer(a, (T.int64(1), X, T.int64(4)), "float32", offset_factor=1, strides=[row, pixel, 1])
        B = T.match_buffer(b, (T.int64(1), T.int64(5), T.int64(1), T.int64(4)), "float32", offset_factor=1,
                           strides=[brow, bpixel, bpixel, 1])
        C = T.match_buffer(c, (W, T.int64(4)), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:W, 0:4], A[0:1, 0:X, 0:4], B[0:1, 0:5, 0:1, 0:4])
            T.writes(C[0:W, 0:4])
            T.evaluate(T.call_extern(
                "int32", kernel, T.address_of(C[0, 0]), T.address_of(A[0, 0, 0]), T.Cast("int32", pixel * 4),
                T.Cast("int32", back * pixel * 4), T.address_of(B[0, 0, 0, 0]), T.Cast("int32", bpixel * 4)))

    TensorIntrin.register(name, desc, impl, override=True)
    return name


_NAME = re.compile(r"edgetvm_neon_f32_dwconv3x3_s(\d+)_w(\d+)")
_FUSED_NAME = re.compile(r"edgetvm_neon_f32_dwconv3x3_s(\d+)_w(\d+)_fused((?:_[a-z]+[0-9a-f]*)*)")
_ROW_NAME = re.compile(r"edgetvm_neon_f32_dwconv5x5row_s(\d+)_w(\d+)")
_ZERO_NAME = re.compile(r"edgetvm_neon_f32_zero_row_w(\d+)")


def dwconv_definition_of(name: str) -> str | None:
    """The definition of the depthwise microkernel (or zero row) called ``name``; None for another name."""
    match = _NAME.fullmatch(name)
    if match:
        return dwconv_definition(int(match.group(1)), int(match.group(2)))
    match = _FUSED_NAME.fullmatch(name)
    epilogue = epilogue_of_tokens(match.group(3)) if match else None
    if epilogue is not None:
        operands = (*_OPERANDS, *(f"ptr %{operand}" for operand in epilogue.operands))
        # Never written: the steps $2 and $4, the bias and the slope (LLVM keeps them from row to row).
        read_only = frozenset([2, 4, *(len(_OPERANDS) + i for i, operand in enumerate(epilogue.operands)
                                        if operand != "res")])
        return inline_asm_definition(name, operands, dwconv_fused_asm(int(match.group(1)), int(match.group(2)), epilogue),
                                     read_only)
    match = _ROW_NAME.fullmatch(name)
    if match:
        return dwconv5_row_definition(int(match.group(1)), int(match.group(2)))
    match = _ZERO_NAME.fullmatch(name)
    return inline_asm_definition(name, ("ptr %c",), zero_row_asm(int(match.group(1)))) if match else None


@functools.lru_cache(maxsize=None)
def zero_row_intrin(width: int) -> str:
    """Register (once) and name the tensor intrinsic that zeroes one row's accumulators: the init of
    the depthwise reduction, as stores of 4 zeroed registers (a loop of vector stores of zero is
    what LLVM turns into a call to ``memset`` per row: 0.13 instructions per multiply-accumulate
    more on a 56x56x64 layer)."""
    kernel = f"edgetvm_neon_f32_zero_row_w{width}"
    W = T.int64(width)

    @T.prim_func(s_tir=True)
    def desc(c: T.handle) -> None:
        C = T.match_buffer(c, (W, T.int64(4)), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:W, 0:4])
            for x, ch in T.grid(W, T.int64(4)):
                with T.sblock("init"):
                    vx, vc = T.axis.remap("SS", [x, ch])
                    C[vx, vc] = T.float32(0.0)

    @T.prim_func(s_tir=True)
    def impl(c: T.handle) -> None:
        C = T.match_buffer(c, (W, T.int64(4)), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:W, 0:4])
            T.evaluate(T.call_extern("int32", kernel, T.address_of(C[0, 0])))

    TensorIntrin.register(kernel, desc, impl, override=True)
    return kernel

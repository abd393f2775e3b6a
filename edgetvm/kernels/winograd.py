"""Winograd F(m x m, 3 x 3) for a dense 3x3 stride-1 conv, channels last: the transform matrices and
the input and output transforms as TIR that vectorizes over 4 channels.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016): per output tile of m x m
pixels, from the (m + 2) x (m + 2) input tile ``d`` it overlaps (tiles step m pixels)::

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A          g: one 3x3 filter of one (input, output) channel pair

summed over the input channels inside the brackets, which makes the middle a GEMM per transform
point: ``M[t] = V[t] @ U[t]``, ``V[t]`` (tiles x C_in), ``U[t] = (G g G^T)[t]`` (C_in x C_out,
computed in float64 at compile time, rounded to float32 once). The matrices come from the
Toom-Cook construction over interpolation points plus the point at infinity (``winograd_matrices``):
F(4,3) on 0, +-1, +-2 (ncnn's and Lavin's), F(6,3) on 0, +-1, +-2, +-1/2. Every entry of ``A^T`` and
``B^T`` is then a small integer or a power of two multiple of one (exact in float32), so the
transforms round only their sums; ``G``'s fractions (1/90, 1/180, ...) are folded into ``U``.

The transforms run per tile and 4 channels (one q register on ARMv7) with every coefficient a
compile-time constant: terms with a 0 are dropped, +-1 become an add or subtract. Each is
separable: columns first, then rows (``B^T d`` then ``(B^T d) B``), 2 (m + 2)^2 sums of at most
m + 2 terms instead of (m + 2)^2 sums of (m + 2)^2 terms, each pass a loop of m + 2 identical
steps (``_tile_body``): 8 vectors in, 8 out per step of F(6,3), the pass's 64 results on the stack.
The points p and -p share work as in ncnn: B^T's two rows are ``E + O`` and ``E - O``
(``_row_pair_sums``), A^T's two columns enter as ``m_p + m_-p`` or ``m_p - m_-p``
(``_column_pair_sums``). The ARM build (vmla/vmls for ``acc +- c * x``, products rounded) computes
the same expressions in the same order as the host build: bit-exact.

Measured (cortex-a7, 1 thread, standalone; ``benchmarks/bench_arm.py --models retinaface
--per-kernel``, RetinaFace 320, its 20 dense 3x3 convs, 165.66 M MAC, all F(6,3)), instructions
(a7 cycles) per MAC of the convs replaced: GEMM (the 5x8 NEON tile per transform point, 0.355 per
GEMM MAC at these depths of 16-64) 0.082 (0.167), input transform 0.040 (0.067), output transform
0.016 (0.026); all pieces 22.99 M instructions, 0.139 (0.260), against the direct convs' 76.5 M,
0.462 (0.836). One conv alone (64 -> 64 channels, 40x40, ``benchmarks/bench_winograd.py``): 6.44 M
instructions against the direct conv's 26.65 M.

Tried and measured worse: the transform of a tile as one unrolled body (each of the 64 values a
register in LLVM's eyes): 8.20 M instructions for that conv, every value spilt and its stack
address computed by an ``add``; the two passes as loops, without the +-p sharing: 6.77 M (RetinaFace's
input transforms 8.57 M instructions against 6.70 M, output 2.78 M against 2.63 M).
Not done: the passes in assembly (the loads take an ``add`` each for their address: NEON has no
load with an immediate offset), the conv's tail (bias, activation) in the output transform.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numpy as np
import tvm
from tvm import s_tir

# The interpolation points (the point at infinity is added) of each supported output tile size m.
WINOGRAD_POINTS = {
    4: (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2)),
    6: (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2)),
}
KERNEL = 3
# Channels the transforms take per step: one 128-bit vector of float32.
TRANSFORM_LANES = 4


@cache
def winograd_matrices(m: int) -> tuple[tuple[tuple[Fraction, ...], ...], ...]:
    """``(A^T, G, B^T)`` of F(m, 3) as exact fractions: A^T is m x n, G n x 3, B^T n x n (n = m + 2).

    Toom-Cook with the finite points p_0..p_{n-2} and infinity: A^T[i][j] = p_j^i, G[j][k] =
    p_j^k / f_j with f_j = prod_{l != j} (p_j - p_l), B^T's row j the coefficients of
    prod_{l != j} (x - p_l); the infinity column/row picks the leading coefficient
    (A^T[m-1][n-1] = G[n-1][2] = 1, B^T's last row the coefficients of prod_l (x - p_l)).
    """
    points = WINOGRAD_POINTS[m]
    n = m + KERNEL - 1

    def poly(roots) -> list[Fraction]:
        coeffs = [Fraction(1)]  # ascending powers
        for r in roots:
            coeffs = [Fraction(0)] + coeffs
            for i in range(len(coeffs) - 1):
                coeffs[i] -= r * coeffs[i + 1]
        return coeffs

    at = [[p ** i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = []
    for j, p in enumerate(points):
        f = Fraction(1)
        for l, q in enumerate(points):
            if l != j:
                f *= p - q
        g.append([p ** k / f for k in range(KERNEL)])
    g.append([Fraction(int(k == KERNEL - 1)) for k in range(KERNEL)])
    bt = [poly([q for l, q in enumerate(points) if l != j]) + [Fraction(0)] for j in range(n - 1)]
    bt.append(poly(points))
    return tuple(map(tuple, at)), tuple(map(tuple, g)), tuple(map(tuple, bt))


def transformed_weight(weight_hwio: np.ndarray, m: int) -> np.ndarray:
    """``U[t, ci, co] = (G g G^T)[t]`` for the HWIO weight, in float64 then float32: (n*n, C_in, C_out)."""
    _, g, _ = winograd_matrices(m)
    gm = np.array([[float(v) for v in row] for row in g])
    u = np.einsum("ak,klio,bl->abio", gm, weight_hwio.astype(np.float64), gm)
    n = gm.shape[0]
    return u.reshape(n * n, *weight_hwio.shape[2:]).astype(np.float32)


def _literal(value: Fraction) -> str:
    text = repr(float(value))
    if float(value) != value:
        raise ValueError(f"Winograd coefficient {value} is not exact in float32")
    return f"T.float32({text})"


def _combination(coeffs, terms: list[str]) -> str:
    """``sum_a coeffs[a] * terms[a]`` with the zero terms dropped and +-1 as add/subtract, in order,
    a term with a positive coefficient first (no ``0 - x``: one ``vsub`` from a zeroed register more)."""
    pairs = [(c, t) for c, t in zip(coeffs, terms) if c != 0]
    first = next((i for i, (c, _) in enumerate(pairs) if c > 0), 0)
    out = ""
    for c, term in pairs[first:first + 1] + pairs[:first] + pairs[first + 1:]:
        product = term if abs(c) == 1 else f"{_literal(abs(c))} * {term}"
        if not out:
            out = product if c > 0 else f"T.float32(0.0) - {product}"
        else:
            out = f"{out} {'+' if c > 0 else '-'} {product}"
    return f"({out})" if out else "T.float32(0.0)"


def _row_pair_sums(rows, terms: list[str]) -> list[str]:
    """``sum_k rows[i][k] * terms[k]`` per row; two rows equal up to the sign of some coefficients (B^T's
    rows of the points p and -p) share their parts: ``E + O`` and ``E - O``, E the terms of equal sign
    in both, O the others (LLVM computes each part once)."""
    out: list[str | None] = [None] * len(rows)
    for i, row in enumerate(rows):
        if out[i] is not None:
            continue
        partner = next((j for j in range(i + 1, len(rows)) if out[j] is None and rows[j] != row
                        and all(abs(a) == abs(b) for a, b in zip(row, rows[j]))), None)
        if partner is None:
            out[i] = _combination(row, terms)
            continue
        same = [a if a == b else 0 for a, b in zip(row, rows[partner])]
        other = [a if a != b else 0 for a, b in zip(row, rows[partner])]
        e, o = _combination(same, terms), _combination(other, terms)
        out[i], out[partner] = f"({e} + {o})", f"({e} - {o})"
    return out


def _column_pair_sums(rows, terms: list[str]) -> list[str]:
    """``sum_k rows[i][k] * terms[k]`` per row, two columns equal up to sign in every row (A^T's columns
    of the points p and -p: p^i and (-p)^i) taken as one term ``terms[k] +- terms[k']`` (LLVM computes
    each such sum and difference once for all rows)."""
    columns = list(range(len(terms)))
    pairs = []
    for k in columns:
        if any(k in pair for pair in pairs):
            continue
        partner = next((j for j in columns[k + 1:] if not any(j in pair for pair in pairs)
                        and any(row[k] for row in rows) and any(row[k] != row[j] for row in rows)
                        and all(abs(row[k]) == abs(row[j]) for row in rows)), None)
        if partner is not None:
            pairs.append((k, partner))
    single = [k for k in columns if not any(k in pair for pair in pairs)]
    out = []
    for row in rows:
        coeffs = [row[k] for k in single] + [row[k] for k, _ in pairs]
        joined = [terms[k] for k in single] + [f"({terms[k]} {'+' if row[k] == row[j] else '-'} {terms[j]})"
                                               for k, j in pairs]
        out.append(_combination(coeffs, joined))
    return out


def _tile_body(indent: str, n: int, first: tuple[int, list[str]], second: tuple[int, list[tuple[str, str]]]) -> list[str]:
    """Per 4 channels (``c_o``) of one tile, the two 1-d passes of a separable transform, each a loop of
    ``n`` identical steps (``u`` its index, ``q`` the second's): the first pass's step ``u`` writes the
    ``len(first[1])`` vectors ``r[u, k]`` (its values in order, reading the tile through ``u``), the
    second's step ``q`` stores ``second[1]`` (target, value), reading ``r[u, q]`` as ``R(u)``.

    The steps are loops, not unrolled: 64 vectors of F(6,3) never fit in 16 q registers, and the
    unrolled form (one body, LLVM holding what it can) spills every vector and computes each stack
    address with an ``add`` (a 64 -> 64 conv at 40x40: 8.20 M instructions against 6.77 M). A loop step holds 8 inputs and writes 8 results;
    ``r`` lives on the stack, stored with one ``vstmia`` per step. A local vector buffer, not let-bound
    values: TVM 0.27's vectorizer leaves a let-bound value scalar-typed and the vector code wrong."""
    count, values = first
    steps, stores = second
    row = count * TRANSFORM_LANES
    lines = [f"{indent}for c_o in range(c // {TRANSFORM_LANES}):",
             f"{indent}    r = T.decl_buffer(({n * row},), \"float32\", scope=\"local\")",
             f"{indent}    for u in range({n}):",
             f"{indent}        for c_i in T.vectorized({TRANSFORM_LANES}):"]
    lines += [f"{indent}            r[u * {row} + {k * TRANSFORM_LANES} + c_i] = {value}" for k, value in enumerate(values)]
    lines += [f"{indent}    for q in range({steps}):",
              f"{indent}        for c_i in T.vectorized({TRANSFORM_LANES}):"]
    lines += [f"{indent}            {target} = {value}" for target, value in stores]
    return lines


def _r(u: int, count: int) -> str:
    return f"r[{u * count * TRANSFORM_LANES} + q * {TRANSFORM_LANES} + c_i]"


CHANNEL = f"c_o * {TRANSFORM_LANES} + c_i"
_HEADER = ["# from tvm.script import tirx as T", "@T.prim_func(private=True)"]


def _specialize(template: tvm.tirx.PrimFunc, shapes: list[tuple[int, ...]]) -> tvm.tirx.PrimFunc:
    """``template`` (buffers of symbolic shape) for buffers of these shapes. Parsing the TVMScript of
    a transform takes seconds (F(6,3)'s output transform 3.3 s); a template is parsed once per
    (m, last tile's rows and columns) and specialized per conv in milliseconds."""
    buffers = {param: tvm.tirx.decl_buffer(shape, "float32", name=str(param.name))
               for param, shape in zip(template.params, shapes)}
    func = template.specialize(buffers)
    # Relax's passes (op-pattern analysis, FuseTIR) expect the body under a root block.
    func = func.with_body(s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", func.body)))
    return func.with_attr("tirx.is_scheduled", True).with_attr("tirx.noalias", True)


@cache
def _input_template(m: int) -> tvm.tirx.PrimFunc:
    _, _, bt = winograd_matrices(m)
    n = m + KERNEL - 1
    lines = [*_HEADER,
             "def winograd_input(x_h: T.handle, v_h: T.handle):",
             "    nb, hx, wx, c, tiles = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()",
             "    x = T.match_buffer(x_h, (nb, hx, wx, c), \"float32\")",
             f"    v = T.match_buffer(v_h, ({n * n}, tiles, c), \"float32\")",
             f"    for b, ty, tx in T.grid(nb, (hx - 2) // {m}, (wx - 2) // {m}):"]
    p = f"(b * ((hx - 2) // {m}) + ty) * ((wx - 2) // {m}) + tx"
    # Column u of the tile: r[u, i] = sum_a B^T[i][a] d[a][u]; then row q: V[q][j] = sum_u r[u, q] B^T[j][u].
    column = [f"x[b, ty * {m} + {a}, tx * {m} + u, {CHANNEL}]" for a in range(n)]
    first = (n, _row_pair_sums(bt, column))
    second = (n, [(f"v[q * {n} + {j}, {p}, {CHANNEL}]", value)
                  for j, value in enumerate(_row_pair_sums(bt, [_r(u, n) for u in range(n)]))])
    lines += _tile_body("        ", n, first, second)
    return tvm.script.from_source("\n".join(lines))


def input_transform(m: int, batch: int, tiles_h: int, tiles_w: int, channels: int) -> tvm.tirx.PrimFunc:
    """``V[t, p, c] = (B^T d_p B)[t]`` of the zero-padded NHWC input (batch, tiles_h*m+2, tiles_w*m+2, C):
    tile p = (n * tiles_h + ty) * tiles_w + tx reads rows ty*m .. ty*m+m+1, columns tx*m .. tx*m+m+1."""
    n = m + KERNEL - 1
    return _specialize(_input_template(m), [(batch, tiles_h * m + 2, tiles_w * m + 2, channels),
                                            (n * n, batch * tiles_h * tiles_w, channels)])


@cache
def _output_template(m: int, rest_h: int, rest_w: int) -> tvm.tirx.PrimFunc:
    at, _, _ = winograd_matrices(m)
    n = m + KERNEL - 1
    lines = [*_HEADER,
             "def winograd_output(mm_h: T.handle, y_h: T.handle):",
             "    nb, oh, ow, c, tiles = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()",
             f"    mm = T.match_buffer(mm_h, ({n * n}, tiles, c), \"float32\")",
             "    y = T.match_buffer(y_h, (nb, oh, ow, c), \"float32\")"]
    tiles_h, tiles_w = f"((oh + {m - 1}) // {m})", f"((ow + {m - 1}) // {m})"
    rows = [("0", f"oh // {m}", m)] + [(f"oh // {m}", "1", rest_h)] * (rest_h > 0)
    cols = [("0", f"ow // {m}", m)] + [(f"ow // {m}", "1", rest_w)] * (rest_w > 0)
    for row_lo, row_count, valid_h in rows:
        for col_lo, col_count, valid_w in cols:
            lines.append(f"    for b, ty, tx in T.grid(nb, {row_count}, {col_count}):")
            p = f"(b * {tiles_h} + ty + {row_lo}) * {tiles_w} + tx + {col_lo}"
            # Column u of M: r[u, a] = sum_i A^T[a][i] M[i][u]; then output row q: y[q][e] = sum_u r[u, q] A^T[e][u].
            column = [f"mm[{i * n} + u, {p}, {CHANNEL}]" for i in range(n)]
            first = (valid_h, _column_pair_sums(at[:valid_h], column))
            second = (valid_h, [(f"y[b, (ty + {row_lo}) * {m} + q, (tx + {col_lo}) * {m} + {e}, {CHANNEL}]", value)
                                for e, value in enumerate(_column_pair_sums(at[:valid_w], [_r(u, valid_h) for u in range(n)]))])
            lines += _tile_body("        ", n, first, second)
    return tvm.script.from_source("\n".join(lines))


def output_transform(m: int, batch: int, tiles_h: int, tiles_w: int, out_h: int, out_w: int,
                     channels: int) -> tvm.tirx.PrimFunc:
    """``y[b, ty*m + a, tx*m + e, c] = (A^T M_p A)[a][e]`` for the (out_h, out_w) pixels the tiles cover:
    the last tile row and column store only their pixels inside the output (no bounds test per pixel:
    those tiles are their own loops)."""
    n = m + KERNEL - 1
    return _specialize(_output_template(m, out_h % m, out_w % m),
                       [(n * n, batch * tiles_h * tiles_w, channels), (batch, out_h, out_w, channels)])

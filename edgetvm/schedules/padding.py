"""Constant padding (``relax.nn.pad``, TFLite PAD) as a copy of the interior and a fill of the rest.

Legalized, a pad is one block per padded tensor storing, for every output element,
``out[i] = if_then_else(before <= i < before + in_shape, x[i - before], value)``: a bounds test per
element (per 4 lanes once vectorized) that BlazeFace's explicit 1-pixel pads before its depthwise
convs pay on ~8 M elements. Written instead per output row (the axes up to the innermost padded
axis ``k``; the axes after it are whole, so a row is ``out_shape[k] * inner`` contiguous floats)::

    for row in rows(out_shape[:k]):             # parallel when large
      if row inside the input's box:
        out[row, :before[k]]            = value               # vector stores
        out[row, before[k] : +in[k]]    = x[row - before]     # vector loads and stores
        out[row, before[k] + in[k] :]   = value
      else:
        out[row, :]                     = value

the bounds are tested once per row and the interior is a plain copy (bit-exact: no arithmetic); on
ARMv7 each run of 16 floats or more is one call of the ``kernels.neon_f32_copy`` assembly (0.31
instructions per float copied, 0.19 per float zeroed; LLVM's own loop was 0.875 to 1.06).
BlazeFace full range (42 pads, 2.78 M floats), cortex-a7, whole model: 58.46 M instructions with
the bounds test per vector, 55.99 M with the TIR copy and fill, 54.1 M with the copy assembly,
53.73 M with the stem's RGB -> RGB0 widening in assembly too.
A chain of pads fused into one kernel (the stem's spatial pad then its 4th channel,
``transform.PadStemChannels``) is one pad: the offsets add up and the boxes intersect.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import tvm
from tvm import s_tir, tirx

from ..kernels.neon_f32_copy import COPY_MIN_FLOATS, copy_call, widen3_call
from .analysis import const_int, has_if_then_else, trivial_loops


@dataclass(frozen=True)
class ConstantPad:
    """``out[i] = x[i - before]`` where ``0 <= i - before < x.shape`` (per axis), else ``value``."""

    out: tirx.Buffer
    x: tirx.Buffer
    before: tuple[int, ...]
    value: tirx.PrimExpr


def _bounds(cond, iter_vars: list) -> dict[int, list[int | None]] | None:
    """Per axis ``[lo, hi]`` of a conjunction of ``lo <= v`` and ``v < hi`` over the block iterators."""
    found: dict[int, list[int | None]] = {}
    terms = [cond]
    while terms:
        term = terms.pop()
        if isinstance(term, tirx.And):
            terms += [term.a, term.b]
            continue
        if isinstance(term, tirx.LE) and const_int(term.a) is not None:
            var, side, bound = term.b, 0, const_int(term.a)
        elif isinstance(term, tirx.LT) and const_int(term.b) is not None:
            var, side, bound = term.a, 1, const_int(term.b)
        else:
            return None
        axis = next((a for a, iv in enumerate(iter_vars) if iv.var.same_as(var)), None)
        if axis is None:
            return None
        found.setdefault(axis, [None, None])[side] = bound
    return found


def single_pad(sch: s_tir.Schedule, block) -> ConstantPad | None:
    """The pad one block stores, when it is exactly ``if_then_else(x's box, x[i - before], value)``."""
    stmt = sch.get(block)
    store = stmt.body
    if trivial_loops(sch, block) is None or not has_if_then_else(stmt):
        return None
    cond, load, value = store.value.args
    if not isinstance(load, tvm.ir.TensorLoad) or not isinstance(value, (tirx.FloatImm, tirx.IntImm)):
        return None
    iter_vars = list(stmt.iter_vars)
    rank = len(iter_vars)
    if len(store.indices) != rank or len(load.indices) != rank or any(
            not index.same_as(iv.var) for index, iv in zip(store.indices, iter_vars)):
        return None
    before = []
    for index, iv in zip(load.indices, iter_vars):
        if index.same_as(iv.var):
            before.append(0)
        elif isinstance(index, tirx.Sub) and index.a.same_as(iv.var) and const_int(index.b) is not None:
            before.append(const_int(index.b))
        else:
            return None
    bounds = _bounds(cond, iter_vars)
    in_shape = [const_int(d) for d in load.source.shape]
    out_shape = [const_int(d) for d in store.buffer.shape]
    if bounds is None or None in in_shape or None in out_shape:
        return None
    for axis in range(rank):
        lo, hi = bounds.get(axis, [None, None])
        # An axis the condition leaves out must need no test: the input covers the output there.
        lo = before[axis] if lo is None and before[axis] <= 0 else lo
        hi = before[axis] + in_shape[axis] if hi is None and before[axis] + in_shape[axis] >= out_shape[axis] else hi
        if lo is None or hi is None or max(lo, 0) != before[axis] or min(hi, out_shape[axis]) != before[axis] + in_shape[axis]:
            return None
    return ConstantPad(store.buffer, load.source, tuple(before), value)


def match_constant_pad(func: tirx.PrimFunc) -> ConstantPad | None:
    """The pad ``func`` computes, when its blocks are a chain of non-negative constant pads of one value
    from a parameter to a parameter (each block reading the one before)."""
    if not (isinstance(func.body, s_tir.SBlockRealize) and func.body.block.name_hint == "root"):
        return None  # written directly as loops (the int8 kernels): no blocks to read
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    pads = [single_pad(sch, block) for block in blocks]
    if not pads or None in pads:
        return None
    first, last = pads[0], pads[-1]
    before = [0] * len(first.before)
    for prev, pad in zip([None, *pads], pads):
        if prev is not None and (not pad.x.same_as(prev.out) or float(pad.value.value) != float(prev.value.value)):
            return None
        before = [b + p for b, p in zip(before, pad.before)]
    if any(b < 0 for b in before) or not all(any(b.same_as(p) for p in func.params) for b in (first.x, last.out)):
        return None
    return ConstantPad(last.out, first.x, tuple(before), last.value)


def _vector_loop(var_name: str, extent: int, lanes: int, body) -> tirx.Stmt:
    """``for i in range(extent): body(i)``, in vectors of ``lanes`` when they divide ``extent``, up to
    16 vectors unrolled (a pixel's channels), longer loops 4 vectors per step (a rolled loop of one
    vector store LLVM turns into a ``memcpy``/``memset`` call, which counts more instructions)."""
    if lanes <= 1 or extent % lanes:
        var = tirx.Var(var_name, "int64")
        return tirx.For(var, 0, extent, tirx.ForKind.SERIAL, body(var))
    lane = tirx.Var(f"{var_name}_v", "int64")
    if extent == lanes:
        return tirx.For(lane, 0, lanes, tirx.ForKind.VECTORIZED, body(lane))
    vectors = extent // lanes
    step = 1 if vectors <= 16 or vectors % 4 else 4
    outer, unrolled = tirx.Var(f"{var_name}_o", "int64"), tirx.Var(f"{var_name}_u", "int64")
    index = (outer * step + unrolled) * lanes + lane
    inner = tirx.For(unrolled, 0, step, tirx.ForKind.UNROLLED,
                     tirx.For(lane, 0, lanes, tirx.ForKind.VECTORIZED, body(index)))
    return tirx.For(outer, 0, vectors // step, tirx.ForKind.UNROLLED if vectors <= 16 else tirx.ForKind.SERIAL, inner)


def copy_and_fill(func: tirx.PrimFunc, pad: ConstantPad, lanes: int, parallel_min_elements: int | None,
                  neon: bool = False) -> tirx.PrimFunc:
    """``func`` rewritten as the row-wise copy and fill of the module docstring (see
    :func:`copy_and_fill_loops`)."""
    block = s_tir.SBlock([], [], [], "root", copy_and_fill_loops(pad, lanes, parallel_min_elements, neon))
    return func.with_body(s_tir.SBlockRealize([], True, block))


def copy_and_fill_loops(pad: ConstantPad, lanes: int, parallel_min_elements: int | None,
                        neon: bool = False) -> tirx.Stmt:
    """The row-wise copy and fill of the module docstring computing ``pad``; rows in parallel when
    ``parallel_min_elements`` is given and the output has at least that many elements. ``neon``
    (ARMv7, float32): each contiguous run of at least 16 floats is one call of the
    ``kernels.neon_f32_copy`` assembly (a fill only when the pad value is zero); shorter ones (the
    stem's 3 channels per pixel) stay TIR loops, cheaper than the call's setup."""
    out_shape = [int(d) for d in pad.out.shape]
    in_shape = [int(d) for d in pad.x.shape]
    rank = len(out_shape)
    padded = [a for a in range(rank) if pad.before[a] or in_shape[a] != out_shape[a]]
    k = padded[-1] if padded else rank - 1
    float32_zero = str(pad.out.dtype) == "float32" and float(pad.value.value) == 0.0
    # The stem's RGB -> RGB0 (transform.PadStemChannels): rows of pixels along the axis before, each
    # interior row one call of the widening assembly.
    widen = (neon and float32_zero and k == rank - 1 and k >= 1 and pad.before[k] == 0
             and (in_shape[k], out_shape[k]) == (3, 4))
    if widen:
        k -= 1
    inner = prod(out_shape[k + 1:])
    index = [tirx.Var(f"i{a}", "int64") if out_shape[a] > 1 else tirx.const(0, "int64") for a in range(k)]

    def tail(t) -> list:
        """Indices along the axes after k of element ``t`` of one (contiguous) slice of them."""
        indices = []
        for extent in reversed(out_shape[k + 2:]):
            indices.insert(0, tirx.floormod(t, extent))
            t = tirx.floordiv(t, extent)
        return [t, *indices]

    def run(name: str, start: int, length: int, store) -> list:
        """``store(at, j, rest)`` for positions ``at = start + j`` (``j < length``) along axis k and every
        ``rest`` after it: ``length * inner`` floats contiguous in ``out`` (and ``x``)."""
        if length <= 0:
            return []
        first = [0] * (rank - k - 1)
        source = None if store is zeros else tirx.address_of(
            tirx.BufferLoad(pad.x, [*(i - b for i, b in zip(index, pad.before)), 0, *first]))
        target = tirx.address_of(tirx.BufferLoad(pad.out, [*index, start, *first]))
        if widen and source is not None:
            return [widen3_call(length, target, source)]
        if neon and float32_zero and length * inner >= COPY_MIN_FLOATS:
            return [copy_call(length * inner, target, source)]
        if inner == 1:
            return [_vector_loop(name, length, lanes, lambda j: store(j + start, j, []))]
        return [_vector_loop(name, length * inner, lanes,
                             lambda f: store(tirx.floordiv(f, inner) + start, tirx.floordiv(f, inner), tail(tirx.floormod(f, inner))))]

    def zeros(at, _, rest) -> tirx.Stmt:
        return tirx.BufferStore(pad.out, pad.value, [*index, at, *rest])

    def copied(at, j, rest) -> tirx.Stmt:
        source = [*(i - b for i, b in zip(index, pad.before)), j, *rest]
        return tirx.BufferStore(pad.out, tirx.BufferLoad(pad.x, source), [*index, at, *rest])

    lo, hi = pad.before[k], pad.before[k] + in_shape[k]
    interior = tirx.SeqStmt([*run("lo", 0, lo, zeros), *run("c", lo, in_shape[k], copied),
                             *run("hi", hi, out_shape[k] - hi, zeros)])
    inside = [tirx.And(tirx.LE(tirx.const(pad.before[a], "int64"), index[a]),
                       tirx.LT(index[a], tirx.const(pad.before[a] + in_shape[a], "int64")))
              for a in padded if a < k]
    if inside:
        cond = inside[0]
        for term in inside[1:]:
            cond = tirx.And(cond, term)
        body = tirx.IfThenElse(cond, interior, run("z", 0, out_shape[k], zeros)[0])
    else:
        body = interior
    parallel = parallel_min_elements is not None and prod(out_shape) >= parallel_min_elements
    loop = body
    for a in reversed(range(k)):
        if out_shape[a] > 1:
            # The outermost loop that has more than one row is the parallel one.
            outermost = all(out_shape[b] == 1 for b in range(a))
            kind = tirx.ForKind.PARALLEL if parallel and outermost else tirx.ForKind.SERIAL
            loop = tirx.For(index[a], 0, out_shape[a], kind, loop)
    return loop

"""The space-to-depth copy of ``transform.SpaceToDepthConv`` as one NEON copy per window row.

``s2d(x)[n, i, j, (ky k_w + kx) C + c] = x[n, k_h i + ky, k_w j + kx, c]``: for each output pixel and
window row ``ky``, the ``k_w C`` floats ``x[n, k_h i + ky, k_w j : +k_w, :]`` are contiguous in the input
and in the output. FuseOps makes the Relax ``reshape -> permute_dims -> reshape`` one kernel whose
gather indices are nests of ``floordiv``/``floormod``, which the generic schedule runs element by
element (3.9 instructions per float on ARMv7: Iris's six copies, 0.46 M instructions). Here::

    for n, i, j, ky:
        copy(out[n, i, j, ky k_w C :], x[n, k_h i + ky, k_w j, :], k_w C floats)   # kernels.neon_f32_copy

0.31 instructions per float in the copy's 32-float steps, plus the call.

A kernel is taken only when its gather is proven to be this one: its blocks inlined into one, that
block's source indices are evaluated (numpy, exact integers) at every output element and compared
with the formula above.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import s_tir, tirx

from ..kernels.neon_f32_copy import COPY_MIN_FLOATS, copy_call

_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "FloorDiv": np.floor_divide,
           "FloorMod": np.mod}


def _evaluate(expr, values: dict) -> np.ndarray | None:
    """The integer index ``expr`` at every point of ``values`` (Var -> array); None for an expression
    other than constants, those variables, + - * floordiv floormod and casts."""
    kind = type(expr).__name__
    if kind == "IntImm":
        return np.int64(expr.value)
    if kind == "Var":
        return next((array for var, array in values.items() if var.same_as(expr)), None)
    if kind == "Cast":
        return _evaluate(expr.value, values)
    if kind in _BINARY:
        a, b = _evaluate(expr.a, values), _evaluate(expr.b, values)
        return None if a is None or b is None else _BINARY[kind](a, b)
    return None


def match_space_to_depth(func: tirx.PrimFunc) -> tuple[tirx.Buffer, tirx.Buffer, int, int] | None:
    """``(x, out, k_h, k_w)`` when ``func`` is ``out = s2d(x)`` of float32 NHWC tensors (module docstring)."""
    if not (isinstance(func.body, s_tir.SBlockRealize) and len(func.params) == 2):
        return None
    x, out = func.params
    if not (isinstance(x, tirx.Buffer) and isinstance(out, tirx.Buffer)) or len(x.shape) != 4 or len(out.shape) != 4:
        return None
    if str(x.dtype) != "float32" or str(out.dtype) != "float32":
        return None
    (n, h, w, c), (n_o, h_o, w_o, c_o) = [int(d) for d in x.shape], [int(d) for d in out.shape]
    if n != n_o or h % h_o or w % w_o or c_o != (h // h_o) * (w // w_o) * c or c_o == c:
        return None
    kh, kw = h // h_o, w // w_o
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    try:  # FuseOps' reshape -> permute -> reshape: three blocks, the first two inline into the last
        for producer in blocks[:-1]:
            sch.compute_inline(producer)
    except Exception:  # noqa: BLE001 - a block that does not inline: not a pure copy
        return None
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if len(blocks) != 1:
        return None
    block = sch.get(blocks[0])
    store = block.body
    if not (isinstance(store, tirx.BufferStore) and store.buffer.same_as(out)
            and isinstance(store.value, tvm.ir.TensorLoad) and store.value.source.same_as(x)):
        return None
    iters = [iv.var for iv in block.iter_vars]
    if len(iters) != 4 or not all(i.same_as(v) for i, v in zip(store.indices, iters)):
        return None
    grid = np.meshgrid(*(np.arange(extent, dtype=np.int64) for extent in (n, h_o, w_o, c_o)), indexing="ij")
    got = [_evaluate(index, dict(zip(iters, grid))) for index in store.value.indices]
    if any(g is None for g in got):
        return None
    b, i, j, d = grid
    want = [b, kh * i + d // (kw * c), kw * j + d // c % kw, d % c]
    if not all(np.array_equal(np.broadcast_to(g, b.shape), e) for g, e in zip(got, want)):
        return None
    return x, out, kh, kw


def space_to_depth_copies(func: tirx.PrimFunc, x: tirx.Buffer, out: tirx.Buffer, kh: int, kw: int,
                          parallel_min_elements: int | None) -> tirx.PrimFunc | None:
    """``func`` rewritten as one ``kernels.neon_f32_copy`` call per output pixel and window row (module
    docstring); None when a row of ``k_w C`` floats is too short for the call to pay."""
    n, h_o, w_o, c_o = (int(d) for d in out.shape)
    run = kw * int(x.shape[3])
    if run < COPY_MIN_FLOATS:
        return None
    b, i, j, ky = (tirx.Var(name, "int64") for name in ("n", "i", "j", "ky"))
    zero = tirx.const(0, "int64")
    body = copy_call(run, tirx.address_of(tirx.BufferLoad(out, [b, i, j, ky * run])),
                     tirx.address_of(tirx.BufferLoad(x, [b, i * kh + ky, j * kw, zero])))
    parallel = parallel_min_elements is not None and n * h_o * w_o * c_o >= parallel_min_elements
    for var, extent, kind in ((ky, kh, tirx.ForKind.UNROLLED), (j, w_o, tirx.ForKind.SERIAL),
                              (i, h_o, tirx.ForKind.PARALLEL if parallel else tirx.ForKind.SERIAL),
                              (b, n, tirx.ForKind.SERIAL)):
        body = tirx.For(var, 0, extent, kind, body)
    return func.with_body(s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", body)))

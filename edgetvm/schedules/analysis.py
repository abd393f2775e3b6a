"""What a kernel computes, read from its blocks' index patterns rather than from its name.

After FuseTIR a kernel (PrimFunc) is a few blocks: optional producers (the ``pad_temp`` of a
convolution), at most one reduction (conv2d, depthwise conv, dense/matmul, pooling, mean), and an
elementwise tail (bias, batch-norm scale/shift, PReLU, residual add). The default schedules need
to know, for the reduction block

    out[s_0, ..., s_{k-1}] (+)= f(in_j[A_j(s, r)]),   s spatial, r reduction iterators,

which spatial iterator ``s_{k-1}`` runs along the innermost, unit-stride dimension of the output and
of every operand that depends on it (the *vector axis*: output channels in NHWC), and which one
comes before it (the *row axis* ``s_{k-2}``: output columns, for register blocking). With the
``NHWC``/``HWIO`` layout of :mod:`.layout` these are channels and columns for conv2d, depthwise
conv2d and pooling, and output features and batch rows for dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

DATA_PAR = 0  # tirx.IterVar.DataPar
COMM_REDUCE = 2  # tirx.IterVar.CommReduce


@dataclass
class ReductionKernel:
    """The reduction block of a kernel and the roles of its iterators.

    ``spatial``/``reduction`` are loop positions (indices into ``sch.get_loops(block)``), in loop
    order; ``extents`` the constant extent of every loop; ``kind`` a label for reports: ``conv2d``
    (input independent of the vector axis), ``depthwise`` (input and weight read along it, with a
    window), ``pool`` (one operand, windowed), ``dense`` (two operands, no window), ``reduce``.
    """

    block: s_tir.schedule.SBlockRV
    spatial: list[int]
    reduction: list[int]
    extents: list[int]
    kind: str
    macs: int

    @property
    def vector_extent(self) -> int:
        return self.extents[self.spatial[-1]]

    @property
    def row_extent(self) -> int:
        return self.extents[self.spatial[-2]] if len(self.spatial) >= 2 else 1


def const_int(expr) -> int | None:
    return int(expr.value) if isinstance(expr, tirx.IntImm) else None


def trivial_loops(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list | None:
    """The loops of ``block`` if each binds exactly one block iterator, in order; else None."""
    loops = sch.get_loops(block)
    stmt = sch.get(block)
    if len(loops) != len(stmt.iter_vars) or not loops:
        return None
    realize = sch.get(loops[-1]).body
    if not isinstance(realize, s_tir.SBlockRealize):
        return None
    for loop_rv, value in zip(loops, realize.iter_values):
        loop = sch.get(loop_rv)
        if not value.same_as(loop.loop_var) or const_int(loop.min) != 0 or const_int(loop.extent) is None:
            return None
    return loops


def _uses(expr, var) -> bool:
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr, []))


def unit_stride_last(region, var) -> bool | None:
    """True: ``var`` indexes only the last dimension, with coefficient 1. None: not used at all."""
    used = None
    for dim, rng in enumerate(region):
        if not _uses(rng.min, var):
            continue
        if dim != len(region) - 1 or const_int(rng.extent) != 1:
            return False
        coef = tvm.sym.detect_linear_equation(rng.min, [var])
        if len(coef) != 2 or const_int(coef[0]) != 1:
            return False
        used = True
    return used


def analyse_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> ReductionKernel | None:
    """Classify a reduction block whose output can be vectorized along its last (channel) axis."""
    stmt = sch.get(block)
    kinds = [int(iv.iter_type) for iv in stmt.iter_vars]
    if COMM_REDUCE not in kinds or any(k not in (DATA_PAR, COMM_REDUCE) for k in kinds):
        return None
    loops = trivial_loops(sch, block)
    if loops is None or len(stmt.writes) != 1:
        return None
    spatial = [i for i, k in enumerate(kinds) if k == DATA_PAR]
    reduction = [i for i, k in enumerate(kinds) if k == COMM_REDUCE]
    if not spatial or spatial != list(range(len(spatial))):
        return None  # reduction loops interleaved with spatial ones: not the legalized form
    out_region = stmt.writes[0].region
    svars = [stmt.iter_vars[i].var for i in spatial]
    if len(out_region) != len(svars) or any(not r.min.same_as(v) for r, v in zip(out_region, svars)):
        return None
    vec = svars[-1]
    rvars = [stmt.iter_vars[i].var for i in reduction]
    windowed = 0
    vec_readers = 0
    for read in stmt.reads:
        use = unit_stride_last(read.region, vec)
        if use is False:
            return None
        vec_readers += bool(use)
        # A read indexed by a spatial and a reduction iterator in one dimension is a sliding window.
        if any(_uses(r.min, rv) and any(_uses(r.min, sv) for sv in svars[:-1]) for r in read.region for rv in rvars):
            windowed += 1
    extents = [const_int(sch.get(lp).extent) for lp in loops]
    macs = 1
    for e in extents:
        macs *= e
    n_reads = len(stmt.reads)
    if n_reads == 2 and windowed and vec_readers == 1:
        kind = "conv2d"
    elif n_reads == 2 and windowed and vec_readers == 2:
        kind = "depthwise"
    elif n_reads == 1 and windowed:
        kind = "pool"
    elif n_reads == 2:
        kind = "dense"
    else:
        kind = "reduce"
    return ReductionKernel(block, spatial, reduction, extents, kind, macs)


def is_spatial(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    return all(int(iv.iter_type) == DATA_PAR for iv in sch.get(block).iter_vars)


def has_if_then_else(stmt) -> bool:
    """Whether a block stores ``if_then_else(in bounds, x[..], pad value)`` (a padding producer)."""
    body = stmt.body
    op = getattr(getattr(body, "value", None), "op", None) if isinstance(body, tirx.BufferStore) else None
    return isinstance(op, tvm.ir.Op) and str(op.name).endswith(".if_then_else")

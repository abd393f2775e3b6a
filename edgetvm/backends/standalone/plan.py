"""The static execution plan of a scheduled Relax module: kernel calls over one arena.

TVM's own memory planner (``StaticPlanBlockMemory``) decides which intermediate tensors share a
storage; this module runs it, then reads the lowered ``main`` binding by binding:

    storage = R.memory.alloc_storage(R.shape([nbytes]), ...)        -> an arena region
    alloc   = R.memory.alloc_tensor(storage, offset, shape, dtype)  -> a tensor at region + offset
    alloc   = R.builtin.alloc_tensor(shape, dtype, ...)             -> a region of its own (outputs)
    _       = kernel(x, w, ..., alloc)                              -> one kernel call
    y       = R.reshape(x, shape)                                   -> the same bytes, new shape

TVM gives every storage its own allocation. Here the storages share one arena instead: each gets
a live interval (the first to the last kernel call that touches it; outputs live to the end) and
storages whose intervals are disjoint may overlap in memory. Offsets come from greedy-by-size
packing: largest storage first, each at the lowest 64-byte aligned offset that collides with no
placed storage alive at the same time (the TFLite arena planner's strategy). The arena is never
larger than TVM's sum of storages, and usually much smaller.
Anything else in ``main`` (a builtin the generated C cannot run, a dynamic shape) is a CompileError
that names it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from ...errors import CompileError, first_line
from ...relax_utils import bound_constant, is_tensor_constant, op_name, static_dims
from ...targets import ResolvedTarget

ALIGNMENT = 64

INPUT, ARENA, WEIGHTS = "input", "arena", "weights"


@dataclass(frozen=True)
class TensorRef:
    """A tensor the kernels see: ``base`` + ``offset`` bytes (for inputs, ``offset`` is the index)."""

    base: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * tvm.DataType(self.dtype).itemsize

    def with_shape(self, shape: tuple[int, ...]) -> "TensorRef":
        return TensorRef(self.base, self.offset, shape, self.dtype)


@dataclass(frozen=True)
class KernelCall:
    kernel: str  # name of the PrimFunc in the module
    args: tuple[TensorRef, ...]


@dataclass
class StaticPlan:
    """Everything the C generator needs: calls in order, arena size, weights blob, outputs."""

    inputs: list[TensorRef]
    outputs: list[TensorRef]
    calls: list[KernelCall]
    arena_bytes: int
    input_staging: list[int]  # arena offset of each input's aligned copy
    weights: bytes
    kernels: dict[str, tirx.PrimFunc] = field(default_factory=dict)  # the kernels called, by name
    regions: int = 0  # storages TVM planned (for the report)
    unpacked_bytes: int = 0  # the sum of the storages, what separate allocations would take
    constants: list[TensorRef] = field(default_factory=list)  # where each constant is in ``weights``


@dataclass
class _Region:
    virtual: int  # offset while planning, storages end to end
    nbytes: int  # 64-byte aligned
    first: int = -1  # first kernel call using it (-1: before the first call)
    last: int = -2  # last one (len(calls): the output copy after the last call)
    offset: int = 0  # packed offset in the arena


def pack_regions(regions: list[_Region]) -> int:
    """Greedy-by-size offsets for regions with live intervals; returns the arena size.

    Two regions may share bytes only when their intervals [first, last] are disjoint.
    """
    placed: list[_Region] = []
    for region in sorted(regions, key=lambda r: (-r.nbytes, r.virtual)):
        busy = sorted((p.offset, p.offset + p.nbytes) for p in placed
                      if not (p.last < region.first or region.last < p.first))
        offset = 0
        for start, end in busy:
            if offset + region.nbytes <= start:
                break
            offset = max(offset, _align(end))
        region.offset = offset
        placed.append(region)
    return max((r.offset + r.nbytes for r in regions), default=0)


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _static_shape(expr, what: str) -> tuple[int, ...]:
    dims = static_dims(expr)
    if dims is None:
        values = expr.values if isinstance(expr, relax.ShapeExpr) else expr
        raise CompileError(
            f"{what} has the dynamic shape {list(values)}; the standalone backend needs static shapes: "
            f"pass input_shapes= (CLI: --input-shape NAME=D0,D1,...)"
        )
    return dims


def _int(expr, what: str) -> int:
    if isinstance(expr, (tvm.tirx.IntImm, int)):
        return int(expr)
    raise CompileError(f"{what} is not a constant ({expr}); the standalone backend needs a static memory plan")


def lower_for_plan(scheduled: tvm.IRModule, target: ResolvedTarget) -> tvm.IRModule:
    """TVM's CPU pipeline up to and including its static memory planner."""
    tgt = target.tvm_target
    passes = cpu_pipeline.dataflow_lower_passes(tgt) + [relax.transform.StaticPlanBlockMemory()]
    try:
        with tgt:
            return tvm.transform.Sequential(passes)(scheduled)
    except Exception as exc:  # noqa: BLE001 - TVM raises plain RuntimeError/ValueError through tvm_ffi
        raise CompileError(f"TVM's memory planning failed for {target.preset}: {first_line(exc)}") from exc


class _Planner:
    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.env: dict = {}  # relax.Var -> TensorRef | tuple | ("storage", offset)
        self.arena = 0
        self.regions = 0
        self.region_list: list[_Region] = []
        self.weights = bytearray()
        self.weight_refs: dict = {}  # relax.Constant -> TensorRef
        self.constants: list[TensorRef] = []
        self.calls: list[KernelCall] = []
        self.kernels: dict[str, tirx.PrimFunc] = {}

    def region(self, nbytes: int) -> int:
        offset = self.arena
        self.arena = _align(self.arena + max(int(nbytes), 1))
        self.regions += 1
        self.region_list.append(_Region(offset, self.arena - offset))
        return offset

    def region_of(self, ref: TensorRef) -> _Region:
        index = bisect.bisect_right([r.virtual for r in self.region_list], ref.offset) - 1
        return self.region_list[index]

    def pack(self, outputs: list[TensorRef], staging: list[int]) -> tuple[list[KernelCall], list[TensorRef], list[int], int]:
        """Live intervals from the call sequence, packed offsets, and every reference moved to them."""
        end = len(self.calls)
        for k, call in enumerate(self.calls):
            for ref in call.args:
                if ref.base == ARENA:
                    region = self.region_of(ref)
                    region.first = k if region.first < 0 else region.first
                    region.last = k
        for ref in outputs:
            if ref.base == ARENA:
                region = self.region_of(ref)
                region.first = min(region.first, end) if region.first >= 0 else end
                region.last = end
        for offset in staging:
            region = self.region_of(TensorRef(ARENA, offset, (), "uint8"))
            region.first, region.last = -1, end
        for region in self.region_list:
            if region.first == -1 and region.last == -2:  # never used: keep it out of everyone's way
                region.first, region.last = -1, end
        arena = pack_regions(self.region_list)

        def move(ref: TensorRef) -> TensorRef:
            if ref.base != ARENA:
                return ref
            region = self.region_of(ref)
            return TensorRef(ARENA, region.offset + ref.offset - region.virtual, ref.shape, ref.dtype)

        calls = [KernelCall(c.kernel, tuple(move(a) for a in c.args)) for c in self.calls]
        moved_staging = [move(TensorRef(ARENA, o, (), "uint8")).offset for o in staging]
        return calls, [move(r) for r in outputs], moved_staging, arena

    def constant(self, const) -> TensorRef:
        # Relax constants hash and compare by identity of the underlying object, so a weight that
        # several kernels read is stored once.
        ref = self.weight_refs.get(const)
        if ref is None:
            array = bound_constant(const)
            offset = _align(len(self.weights))
            self.weights.extend(b"\0" * (offset - len(self.weights)))
            self.weights.extend(np.ascontiguousarray(array).tobytes())
            ref = TensorRef(WEIGHTS, offset, tuple(array.shape), str(array.dtype))
            self.weight_refs[const] = ref
            self.constants.append(ref)
        return ref

    def value(self, expr):
        if is_tensor_constant(expr):
            return self.constant(expr)
        if isinstance(expr, relax.Var):
            if expr not in self.env:
                raise CompileError(f"main uses {expr.name} before the generator placed it")
            return self.env[expr]
        if isinstance(expr, relax.Tuple):
            return tuple(self.value(f) for f in expr.fields)
        if isinstance(expr, relax.TupleGetItem):
            tup = self.value(expr.tuple_value)
            return tup[expr.index]
        raise CompileError(f"the standalone backend cannot place the expression {type(expr).__name__} in main: "
                           f"{str(expr)[:200]}")

    def tensor(self, expr, where: str) -> TensorRef:
        ref = self.value(expr)
        if not isinstance(ref, TensorRef):
            raise CompileError(f"{where}: expected a tensor, got {type(ref).__name__}")
        return ref

    def bind(self, var: relax.Var, value) -> None:
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            self.env[var] = self.op_call(var, value)
        elif isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
            self.kernel_call(value)
            self.env[var] = None
        elif isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc):
            raise CompileError(
                f"main calls the packed function {value.op.global_symbol!r} (bound to {var.name}); the standalone "
                f"backend runs only TIR kernels. Export without standalone=True to use the TVM VM for this model"
            )
        elif isinstance(value, relax.Call):
            raise CompileError(f"main calls {value.op} (bound to {var.name}) indirectly; the standalone backend "
                               f"runs only direct TIR kernel calls")
        else:
            self.env[var] = self.value(value)

    def op_call(self, var: relax.Var, call: relax.Call):
        name = op_name(call)
        if name == "relax.memory.alloc_storage":
            (nbytes,) = _static_shape(call.args[0], f"storage {var.name}")
            return ("storage", self.region(nbytes))
        if name == "relax.memory.alloc_tensor":
            storage = self.value(call.args[0])
            shape = _static_shape(call.args[2], f"tensor {var.name}")
            offset = _int(call.args[1], f"the offset of {var.name}")
            return TensorRef(ARENA, storage[1] + offset, shape, str(call.args[3].value))
        if name == "relax.builtin.alloc_tensor":
            shape = _static_shape(call.args[0], f"tensor {var.name}")
            ref = TensorRef(ARENA, 0, shape, str(call.args[1].value))
            return TensorRef(ARENA, self.region(ref.nbytes), shape, ref.dtype)
        if name == "relax.reshape":
            src = self.tensor(call.args[0], f"reshape {var.name}")
            shape = _static_shape(call.args[1], f"reshape {var.name}")
            if int(np.prod(shape)) != int(np.prod(src.shape)):
                raise CompileError(f"reshape {var.name}: {src.shape} -> {shape} changes the element count")
            return src.with_shape(shape)
        raise CompileError(
            f"main uses the operator {name} (bound to {var.name}), which the standalone backend cannot place: "
            f"only kernel calls, reshapes and planned allocations run without a TVM runtime. "
            f"Export without standalone=True to use the TVM VM for this model"
        )

    def kernel_call(self, call: relax.Call) -> None:
        name = call.op.name_hint
        func = self.mod[call.op]
        if not isinstance(func, tirx.PrimFunc):
            raise CompileError(f"main calls the Relax function {name}; the standalone backend needs one flat main "
                               f"whose calls are all TIR kernels")
        args = []
        for i, arg in enumerate(call.args):
            if isinstance(arg, relax.ShapeExpr):
                raise CompileError(f"kernel {name} takes symbolic shape arguments (dynamic shapes); "
                                   f"the standalone backend needs static shapes")
            args.append(self.tensor(arg, f"argument {i} of kernel {name}"))
        if len(args) != len(func.params):
            raise CompileError(f"kernel {name} takes {len(func.params)} parameters, main passes {len(args)}")
        self.kernels[name] = func
        self.calls.append(KernelCall(name, tuple(args)))


def plan_static(scheduled: tvm.IRModule, target: ResolvedTarget) -> StaticPlan:
    """Lower ``scheduled`` with TVM's planner and read it into a :class:`StaticPlan`."""
    lowered = lower_for_plan(scheduled, target)
    main = lowered["main"]
    planner = _Planner(lowered)
    inputs = []
    for index, param in enumerate(main.params):
        ty = param.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise CompileError(f"input {param.name} of main is not a tensor with a known shape ({ty})")
        shape = _static_shape(ty.shape, f"input {param.name}")
        ref = TensorRef(INPUT, index, shape, str(ty.dtype))
        planner.env[param] = ref
        inputs.append(ref)

    body = main.body
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise CompileError(f"main has a {type(binding).__name__} for {binding.var.name}; the standalone "
                                   f"backend needs static shapes")
            planner.bind(binding.var, binding.value)

    result = planner.value(body.body)
    flat = list(result) if isinstance(result, tuple) else [result]
    outputs = []
    for i, ref in enumerate(flat):
        if not isinstance(ref, TensorRef):
            raise CompileError(f"output {i} of main is a nested tuple; the standalone backend returns flat tensors")
        outputs.append(ref)

    staging = [planner.region(ref.nbytes) for ref in inputs]
    unpacked = planner.arena
    calls, outputs, staging, arena = planner.pack(outputs, staging)
    return StaticPlan(inputs=inputs, outputs=outputs, calls=calls, arena_bytes=max(arena, ALIGNMENT),
                      input_staging=staging, weights=bytes(planner.weights), kernels=planner.kernels,
                      regions=planner.regions, unpacked_bytes=unpacked, constants=planner.constants)

"""Refuse models whose declared shapes need more memory than a limit, before anything is allocated.

A hostile or corrupt model can declare an input of shape [2**20, 2**20] or an initializer whose dims
promise terabytes. Every declared tensor size is computed from the protobuf's metadata alone (no
tensor data is decoded) and checked against ``EDGETVM_MAX_TENSOR_BYTES`` (default 1 GiB per tensor)
and ``EDGETVM_MAX_MODEL_BYTES`` (default 4 GiB for all declared tensors together).
"""

from __future__ import annotations

import os

import numpy as np
import onnx

from ..errors import ModelLoadError, ResourceLimitError

DEFAULT_MAX_TENSOR_BYTES = 1 << 30
DEFAULT_MAX_MODEL_BYTES = 4 << 30


def _limit(env: str, default: int) -> int:
    value = os.environ.get(env)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ResourceLimitError(f"{env}={value!r} is not a whole number of bytes") from None


def _itemsize(elem_type: int, where: str) -> int:
    try:
        np_type = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except (KeyError, ValueError, TypeError):
        raise ModelLoadError(f"{where}: unknown ONNX element type {elem_type}") from None
    return max(np.dtype(np_type).itemsize, 1)


def _declared_bytes(dims, elem_type: int, where: str) -> int:
    count = 1
    for d in dims:
        if d < 0:
            raise ModelLoadError(f"{where}: negative dimension {d} in shape {list(dims)}")
        count *= d
    return count * _itemsize(elem_type, where)


def check_onnx_memory(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise ResourceLimitError if any declared tensor, or all together, exceed the limits."""
    declared: list[tuple[str, int]] = []
    for init in proto.graph.initializer:
        declared.append((f"initializer {init.name!r}",
                         _declared_bytes(init.dims, init.data_type, f"{source}: initializer {init.name!r}")))
    for value in proto.graph.input:
        tensor_type = value.type.tensor_type
        if value.name in input_shapes:
            dims = input_shapes[value.name]
        else:
            dims = [d.dim_value for d in tensor_type.shape.dim if d.HasField("dim_value")]
        declared.append((f"input {value.name!r}",
                         _declared_bytes(dims, tensor_type.elem_type or 1, f"{source}: input {value.name!r}")))
    enforce_limits(declared, source)


def enforce_limits(declared, source: str) -> None:
    """Raise ResourceLimitError if one ``(what, bytes)`` entry, or all together, exceed the limits."""
    max_tensor = _limit("EDGETVM_MAX_TENSOR_BYTES", DEFAULT_MAX_TENSOR_BYTES)
    max_model = _limit("EDGETVM_MAX_MODEL_BYTES", DEFAULT_MAX_MODEL_BYTES)
    total = 0
    for what, size in declared:
        if size > max_tensor:
            raise ResourceLimitError(
                f"{source}: {what} declares {size / 2**20:.1f} MiB, over the per-tensor limit of "
                f"{max_tensor / 2**20:.0f} MiB; the model is corrupt or hostile, or raise EDGETVM_MAX_TENSOR_BYTES"
            )
        total += size
    if total > max_model:
        raise ResourceLimitError(
            f"{source}: its tensors declare {total / 2**20:.1f} MiB in all, over the limit of "
            f"{max_model / 2**20:.0f} MiB; raise EDGETVM_MAX_MODEL_BYTES if the model is genuine"
        )


# TFLite TensorType enum -> bytes per element (schema.fbs order).
_TFLITE_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 13: 4,
                    14: 4, 15: 1, 16: 2, 17: 1}


def check_tflite_memory(model, source: str) -> None:
    """The same limits for a parsed ``tflite.Model``: every tensor's declared shape, no data read."""
    enforce_limits(_tflite_declared(model, source), source)


def _tflite_declared(model, source: str):
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            name = (tensor.Name() or b"?").decode(errors="replace")
            count = 1
            for d in range(tensor.ShapeLength()):
                dim = tensor.Shape(d)
                if dim < -1:
                    raise ModelLoadError(f"{source}: tensor {name!r} has a negative dimension {dim}")
                count *= max(dim, 1)
            yield f"tensor {name!r}", count * _TFLITE_ITEMSIZE.get(tensor.Type(), 8)


def _static_bytes(ty) -> int | None:
    """Bytes of a static-shape tensor type, or None when its shape or dtype is not known."""
    shape = getattr(ty, "shape", None)
    if shape is None:
        return None
    count = 1
    for d in shape:
        if not hasattr(d, "value"):
            return None
        count *= int(d.value)
    try:
        itemsize = max(np.dtype(str(ty.dtype)).itemsize, 1)
    except TypeError:
        return None
    return count * itemsize


def check_relax_memory(func, source: str) -> None:
    """The per-tensor limit for every tensor the imported graph computes, from its static shapes.

    The declared inputs and weights can be small while an op in between asks for a huge result
    (a Resize by 4096x, an Expand or Tile to 2**20 rows). Its shape is known once the model is
    imported, before constant folding, compilation or a run allocates it.
    """
    from tvm import relax

    max_tensor = _limit("EDGETVM_MAX_TENSOR_BYTES", DEFAULT_MAX_TENSOR_BYTES)
    for param in func.params:
        size = _static_bytes(param.ty) if isinstance(param.ty, relax.TensorType) else None
        if size is not None and size > max_tensor:
            raise ResourceLimitError(
                f"{source}: input {param.name!r} of shape {[int(d) for d in param.ty.shape]} needs "
                f"{size / 2**20:.1f} MiB, over the per-tensor limit of {max_tensor / 2**20:.0f} MiB; "
                f"compile at a smaller input shape, or raise EDGETVM_MAX_TENSOR_BYTES"
            )
    for block in func.body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            fields = list(ty.fields) if isinstance(ty, relax.TupleType) else [ty]
            for field in fields:
                if not isinstance(field, relax.TensorType):
                    continue
                size = _static_bytes(field)
                if size is None or size <= max_tensor:
                    continue
                value = binding.value
                op = str(value.op.name) if isinstance(value, relax.Call) and hasattr(value.op, "name") else "a binding"
                raise ResourceLimitError(
                    f"{source}: {op.removeprefix('relax.')} computes {binding.var.name!r} of shape "
                    f"{[int(d) for d in field.shape]} ({size / 2**20:.1f} MiB), over the per-tensor limit of "
                    f"{max_tensor / 2**20:.0f} MiB; the model is corrupt or hostile, or raise EDGETVM_MAX_TENSOR_BYTES"
                )

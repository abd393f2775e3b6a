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
    max_tensor = _limit("EDGETVM_MAX_TENSOR_BYTES", DEFAULT_MAX_TENSOR_BYTES)
    max_model = _limit("EDGETVM_MAX_MODEL_BYTES", DEFAULT_MAX_MODEL_BYTES)
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
    max_tensor = _limit("EDGETVM_MAX_TENSOR_BYTES", DEFAULT_MAX_TENSOR_BYTES)
    max_model = _limit("EDGETVM_MAX_MODEL_BYTES", DEFAULT_MAX_MODEL_BYTES)
    total = 0
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
            size = count * _TFLITE_ITEMSIZE.get(tensor.Type(), 8)
            if size > max_tensor:
                raise ResourceLimitError(
                    f"{source}: tensor {name!r} declares {size / 2**20:.1f} MiB, over the per-tensor limit of "
                    f"{max_tensor / 2**20:.0f} MiB; the model is corrupt or hostile, or raise EDGETVM_MAX_TENSOR_BYTES"
                )
            total += size
    if total > max_model:
        raise ResourceLimitError(
            f"{source}: its tensors declare {total / 2**20:.1f} MiB in all, over the limit of "
            f"{max_model / 2**20:.0f} MiB; raise EDGETVM_MAX_MODEL_BYTES if the model is genuine"
        )

"""ONNX to Relax, wrapping ``tvm.relax.frontend.onnx`` and adding what real face models need."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

from ..errors import InputError, ModelLoadError, UnsupportedModelError
from ..specs import ImportedModel, TensorSpec


def read_onnx(model) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, "<ModelProto>"
    if isinstance(model, (bytes, bytearray)):
        source, data = "<bytes>", bytes(model)
    else:
        source = str(model)
        try:
            data = Path(model).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"{source}: cannot read the model file ({exc.strerror})") from None
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise ModelLoadError(
            f"{source}: not a valid ONNX file ({type(exc).__name__}); the file may be truncated or corrupt. "
            f"Re-export or re-download it."
        ) from None
    if not proto.graph.node:
        raise ModelLoadError(f"{source}: the ONNX file holds no graph nodes; it is empty, truncated or not ONNX")
    return proto, source


def import_onnx(model, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ImportedModel:
    proto, source = read_onnx(model)
    initializer_names = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializer_names]
    shapes = {}
    for value in graph_inputs:
        dims = [d.dim_value if d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    for name, shape in (input_shapes or {}).items():
        if name not in shapes:
            raise InputError(f"{source}: --input-shape names {name!r}, but the model's inputs are {list(shapes)}")
        shapes[name] = list(shape)
    missing = {n: s for n, s in shapes.items() if any(d is None for d in s)}
    if missing:
        raise InputError(
            f"{source}: inputs {missing} have dynamic dimensions; give static ones, for example "
            f"--input-shape {next(iter(missing))}=1,3,112,112"
        )
    mod = from_onnx(proto, shape_dict=shapes, keep_params_in_input=False)
    return _imported(mod, source, "onnx")


def _imported(mod: tvm.IRModule, source: str, fmt: str) -> ImportedModel:
    func = mod["main"]
    inputs = [TensorSpec(str(p.name), tuple(int(d) for d in p.ty.shape), str(p.ty.dtype)) for p in func.params]
    ret = func.ret_ty
    fields = ret.fields if isinstance(ret, relax.TupleType) else [ret]
    outputs = [TensorSpec(f"output_{i}", tuple(int(d) for d in f.shape), str(f.dtype)) for i, f in enumerate(fields)]
    return ImportedModel(mod, inputs, outputs, source, fmt)

"""Structural validation of an ONNX model before TVM sees it.

TVM's importer trusts the protobuf: a dangling tensor name, an initializer whose payload does not
match its dims, a Conv with stride 0 or an absurd group count reach C++ checks that abort with a
stack trace, or numpy errors with no model context. Each check here names the node or tensor and
says what is wrong, so a corrupt or hostile model gets a ModelLoadError instead.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import ModelLoadError
from .limits import check_onnx_memory

# Typed payload fields of TensorProto by element type (when raw_data is not used).
_TYPED_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data", TensorProto.INT64: "int64_data",
    TensorProto.UINT64: "uint64_data", TensorProto.STRING: "string_data",
}
_INT32_CARRIED = {TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT16, TensorProto.UINT8,
                  TensorProto.BOOL, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def validate_onnx(proto: onnx.ModelProto, source: str, input_shapes: dict[str, tuple[int, ...]]) -> None:
    check_onnx_memory(proto, input_shapes, source)
    for init in proto.graph.initializer:
        _check_initializer(init, source)
    _check_single_writer(proto.graph, source)
    _check_schema(proto, source)
    check_convs(proto, source)


def check_convs(proto: onnx.ModelProto, source: str) -> None:
    """Conv geometry against its weight; run again once quantized weights are folded to initializers."""
    initializers = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Conv":
            _check_conv(node, initializers, source)
        elif node.op_type == "BatchNormalization":
            _check_batch_norm(node, initializers, source)


def _check_batch_norm(node: onnx.NodeProto, initializers: dict[str, TensorProto], source: str) -> None:
    """scale, B, mean and var are vectors of one length (the channels); TVM's converter assumes it."""
    params = [initializers.get(name) for name in node.input[1:5]]
    lengths = {tuple(p.dims) for p in params if p is not None}
    if any(len(dims) != 1 for dims in lengths) or len(lengths) > 1:
        shapes = {p.name: list(p.dims) for p in params if p is not None}
        raise ModelLoadError(f"{source}: BatchNormalization node {node.name!r}: scale, bias, mean and variance must "
                             f"be vectors of the channel count, got {shapes}")


def _check_initializer(init: TensorProto, source: str) -> None:
    where = f"{source}: initializer {init.name!r}"
    if init.data_location == TensorProto.EXTERNAL:
        raise ModelLoadError(f"{where} keeps its data in an external file; save the model with the data "
                             f"inside it (onnx.save(model, path, save_as_external_data=False))")
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    except (KeyError, ValueError, TypeError):
        raise ModelLoadError(f"{where} has an unknown element type {init.data_type}") from None
    if init.data_type == TensorProto.STRING:
        raise ModelLoadError(f"{where} holds strings; edgetvm compiles numeric tensors only")
    count = int(np.prod(init.dims, dtype=np.int64)) if len(init.dims) else 1
    if init.HasField("raw_data"):
        if init.data_type in (TensorProto.INT4, TensorProto.UINT4):
            expected = (count + 1) // 2
        else:
            expected = count * itemsize
        actual = len(init.raw_data)
    else:
        field = _TYPED_FIELD.get(init.data_type, "int32_data" if init.data_type in _INT32_CARRIED else None)
        if field is None:
            return
        actual, expected = len(getattr(init, field)), count
    if actual != expected:
        raise ModelLoadError(
            f"{where} declares dims {list(init.dims)} ({count} elements) but carries {actual} "
            f"{'bytes' if init.HasField('raw_data') else 'values'} (expected {expected}); the file is corrupt"
        )


def _check_single_writer(graph: onnx.GraphProto, source: str) -> None:
    """SSA: each tensor has one producer (read-before-write is onnx.check_graph_wiring's job)."""
    producers: dict[str, str] = {}
    for node in graph.node:
        for out in node.output:
            if out and out in producers:
                raise ModelLoadError(f"{source}: tensor {out!r} is written by both node {producers[out]!r} and "
                                     f"node {node.name!r}; the graph is corrupt")
            producers[out] = node.name


def _check_schema(proto: onnx.ModelProto, source: str) -> None:
    """Attribute types and arities against ONNX's own operator schemas."""
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        message = str(exc).strip().splitlines()
        detail = next((line for line in message if line.strip()), "invalid model")
        node = next((line for line in message if "==> Context:" in line), "")
        raise ModelLoadError(f"{source}: ONNX validation failed: {detail.strip()} {node.strip()}".strip()) from None


def _ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints) if attr.type == onnx.AttributeProto.INTS else None
    return None


def _int(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name and attr.type == onnx.AttributeProto.INT:
            return attr.i
    return default


def _check_conv(node: onnx.NodeProto, initializers: dict[str, TensorProto], source: str) -> None:
    where = f"{source}: Conv node {node.name!r}"
    for name, low in (("strides", 1), ("dilations", 1), ("pads", 0)):
        values = _ints(node, name)
        if values is not None and any(v < low or v > 1 << 16 for v in values):
            raise ModelLoadError(f"{where}: {name} {values} out of range (each must be >= {low})")
    group = _int(node, "group", 1)
    weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
    if group < 1:
        raise ModelLoadError(f"{where}: group {group} must be >= 1")
    if weight is not None and not 3 <= len(weight.dims) <= 5:
        raise ModelLoadError(f"{where}: weight {weight.name!r} has shape {list(weight.dims)}; a 1-d, 2-d or 3-d "
                             f"convolution takes a weight of rank 3, 4 or 5")
    if weight is not None:
        out_channels = weight.dims[0]
        if out_channels % group:
            raise ModelLoadError(f"{where}: group {group} does not divide the {out_channels} output channels "
                                 f"of weight {weight.name!r}")
        bias = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is not None and list(bias.dims) != [out_channels]:
            raise ModelLoadError(f"{where}: bias {bias.name!r} has shape {list(bias.dims)}; it must be "
                                 f"[{out_channels}], one value per output channel of weight {weight.name!r}")
        kernel = _ints(node, "kernel_shape")
        if kernel is not None and list(kernel) != list(weight.dims[2:]):
            raise ModelLoadError(f"{where}: kernel_shape {kernel} does not match weight {weight.name!r} "
                                 f"of shape {list(weight.dims)}")

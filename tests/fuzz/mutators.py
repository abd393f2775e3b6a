"""Mutations of real ONNX and TFLite models: byte-level and protobuf-level.

Each mutator takes the model bytes and a seeded ``random.Random`` and returns the mutated bytes
with a short description, so every failing case can be reproduced from its seed.
"""

from __future__ import annotations

import random

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto


def bit_flips(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    count = rnd.choice([1, 2, 4, 16, 64])
    for _ in range(count):
        pos = rnd.randrange(len(buf))
        buf[pos] ^= 1 << rnd.randrange(8)
    return bytes(buf), f"{count} bit flips"


def truncate(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    cut = rnd.randrange(0, len(data))
    return data[:cut], f"truncated to {cut} of {len(data)} bytes"


def overwrite_ints(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    """Overwrite aligned 32-bit words with hostile values (flatbuffer offsets, lengths, dims)."""
    buf = bytearray(data)
    hostile = [0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1 << 20, 3]
    count = rnd.choice([1, 3, 8])
    for _ in range(count):
        pos = rnd.randrange(0, len(buf) - 4) & ~3
        buf[pos:pos + 4] = rnd.choice(hostile).to_bytes(4, "little")
    return bytes(buf), f"{count} hostile 32-bit words"


def _proto_mutator(fn):
    def mutate(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
        model = onnx.load_from_string(data)
        what = fn(model, rnd)
        return model.SerializeToString(), what

    mutate.__name__ = fn.__name__
    return mutate


def _pick_node(model, rnd, op_type=None):
    nodes = [n for n in model.graph.node if op_type is None or n.op_type == op_type]
    return rnd.choice(nodes) if nodes else None


@_proto_mutator
def wrong_dims(model, rnd):
    init = rnd.choice(list(model.graph.initializer))
    if not init.dims:
        init.dims.append(7)
    else:
        i = rnd.randrange(len(init.dims))
        init.dims[i] = rnd.choice([0, init.dims[i] + 1, init.dims[i] * 3])
    return f"initializer {init.name} dims -> {list(init.dims)}"


@_proto_mutator
def hostile_input_shape(model, rnd):
    value = model.graph.input[0]
    dims = value.type.tensor_type.shape.dim
    i = rnd.randrange(len(dims))
    dims[i].dim_value = rnd.choice([-5, 0, 1 << 31, 1 << 40, 65536])
    return f"input {value.name} dim {i} -> {dims[i].dim_value}"


@_proto_mutator
def huge_initializer(model, rnd):
    init = rnd.choice(list(model.graph.initializer))
    del init.dims[:]
    init.dims.extend([1 << 20, 1 << 20])
    return f"initializer {init.name} declares 2^40 elements"


@_proto_mutator
def dangling_name(model, rnd):
    node = _pick_node(model, rnd)
    if not node.input:
        node.input.append("ghost")
    node.input[rnd.randrange(len(node.input))] = f"ghost_{rnd.randrange(1000)}"
    return f"node {node.name} reads a tensor nobody writes"


@_proto_mutator
def cycle(model, rnd):
    nodes = list(model.graph.node)
    i = rnd.randrange(max(len(nodes) - 1, 1))
    j = rnd.randrange(i, len(nodes))
    if nodes[i].input and nodes[j].output:
        nodes[i].input[0] = nodes[j].output[0]
    return f"node {nodes[i].name} reads the output of later node {nodes[j].name}"


@_proto_mutator
def wrong_attribute_type(model, rnd):
    nodes = [n for n in model.graph.node if n.attribute]
    if not nodes:
        return "no attributes"
    node = rnd.choice(nodes)
    attr = rnd.choice(list(node.attribute))
    name = attr.name
    node.attribute.remove(attr)
    kind = rnd.choice(["string", "float", "ints", "tensor"])
    if kind == "string":
        node.attribute.append(onnx.helper.make_attribute(name, "garbage"))
    elif kind == "float":
        node.attribute.append(onnx.helper.make_attribute(name, 2.5))
    elif kind == "ints":
        node.attribute.append(onnx.helper.make_attribute(name, [rnd.randrange(-9, 9) for _ in range(rnd.randrange(0, 6))]))
    else:
        node.attribute.append(onnx.helper.make_attribute(name, onnx.helper.make_tensor("t", TensorProto.FLOAT, [1], [1.0])))
    return f"node {node.name} attribute {name} -> {kind}"


@_proto_mutator
def absurd_groups(model, rnd):
    node = _pick_node(model, rnd, "Conv")
    if node is None:
        return "no Conv"
    for attr in list(node.attribute):
        if attr.name == "group":
            node.attribute.remove(attr)
    value = rnd.choice([0, -1, 3, 7, 1 << 30])
    node.attribute.append(onnx.helper.make_attribute("group", value))
    return f"Conv {node.name} group -> {value}"


@_proto_mutator
def absurd_conv_geometry(model, rnd):
    node = _pick_node(model, rnd, "Conv")
    if node is None:
        return "no Conv"
    name = rnd.choice(["strides", "pads", "dilations", "kernel_shape"])
    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    count = 4 if name == "pads" else 2
    value = [rnd.choice([0, -3, 1 << 20, 5]) for _ in range(count)]
    node.attribute.append(onnx.helper.make_attribute(name, value))
    return f"Conv {node.name} {name} -> {value}"


@_proto_mutator
def wrong_op_type(model, rnd):
    node = _pick_node(model, rnd)
    new = rnd.choice(["Conv", "Gemm", "Relu", "NoSuchOp", "Loop", "Resize", "Concat"])
    old, node.op_type = node.op_type, new
    return f"node {node.name} op {old} -> {new}"


@_proto_mutator
def remove_node(model, rnd):
    nodes = model.graph.node
    i = rnd.randrange(len(nodes))
    name = nodes[i].name
    del nodes[i]
    return f"removed node {name}"


@_proto_mutator
def wrong_dtype(model, rnd):
    init = rnd.choice(list(model.graph.initializer))
    init.data_type = rnd.choice([TensorProto.STRING, TensorProto.INT64, TensorProto.BOOL, 99])
    return f"initializer {init.name} data_type -> {init.data_type}"


@_proto_mutator
def wrong_opset(model, rnd):
    version = rnd.choice([1, 6, 999])
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = version
    return f"opset -> {version}"


@_proto_mutator
def drop_initializer(model, rnd):
    inits = model.graph.initializer
    i = rnd.randrange(len(inits))
    name = inits[i].name
    del inits[i]
    return f"dropped initializer {name}"


@_proto_mutator
def reshaped_initializer(model, rnd):
    """A weight whose payload matches its new dims: it passes the size checks and reaches shape logic."""
    from onnx import numpy_helper

    inits = [t for t in model.graph.initializer if t.data_type != TensorProto.STRING and t.dims]
    if not inits:
        return "no initializer"
    init = rnd.choice(inits)
    array = numpy_helper.to_array(init)
    kind = rnd.choice(["transpose", "flatten", "unsqueeze", "slice"])
    if kind == "transpose" and array.ndim > 1:
        array = array.transpose(rnd.sample(range(array.ndim), array.ndim))
    elif kind == "flatten" or array.ndim == 0:
        array = array.reshape(-1)
    elif kind == "unsqueeze":
        array = array.reshape((1,) + array.shape)
    else:
        array = array[: rnd.randrange(max(array.shape[0], 1)) + 1 if array.shape[0] < 2 else array.shape[0] // 2]
    init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), init.name))
    return f"initializer {init.name} {kind} -> {list(init.dims)}"


ONNX_MUTATORS = [bit_flips, truncate, wrong_dims, hostile_input_shape, huge_initializer, dangling_name, cycle,
                 wrong_attribute_type, absurd_groups, absurd_conv_geometry, wrong_op_type, remove_node, wrong_dtype,
                 wrong_opset, drop_initializer, reshaped_initializer]
TFLITE_MUTATORS = [bit_flips, truncate, overwrite_ints]


def mutate(data: bytes, fmt: str, seed: int) -> tuple[bytes, str]:
    """One or two mutations of ``data``, chosen by ``seed``."""
    rnd = random.Random(seed)
    mutators = ONNX_MUTATORS if fmt == "onnx" else TFLITE_MUTATORS
    descriptions = []
    for _ in range(rnd.choice([1, 1, 1, 2])):
        fn = rnd.choice(mutators)
        try:
            data, what = fn(data, rnd)
        except Exception:  # noqa: BLE001 - a previous byte mutation made the proto unparsable
            data, what = bit_flips(data, rnd)
        descriptions.append(f"{fn.__name__}: {what}")
    return data, "; ".join(descriptions)

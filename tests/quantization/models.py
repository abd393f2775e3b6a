"""Small ONNX models for the int8 tests, built from seeded random weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def small_cnn(seed: int = 0, channels: int = 16, size: int = 16) -> onnx.ModelProto:
    """conv3x3+ReLU -> depthwise3x3+PReLU -> residual add -> 1x1 conv stride 2 + LeakyReLU
    -> global average pool -> flatten -> Gemm: each op kind the int8 path folds, plus float ones."""
    rng = np.random.default_rng(seed)
    c = channels

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

    inits = [
        init("w1", rng.normal(0, 0.25, (c, 3, 3, 3))), init("b1", rng.normal(0, 0.1, c)),
        init("w2", rng.normal(0, 0.3, (c, 1, 3, 3))), init("b2", rng.normal(0, 0.1, c)),
        init("slope", rng.uniform(0.05, 0.3, (c, 1, 1))),
        init("w3", rng.normal(0, 0.2, (2 * c, c, 1, 1))), init("b3", rng.normal(0, 0.1, 2 * c)),
        init("wf", rng.normal(0, 0.2, (10, 2 * c))), init("bf", rng.normal(0, 0.1, 10)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=c),
        helper.make_node("PRelu", ["c2", "slope"], ["p2"]),
        helper.make_node("Add", ["r1", "p2"], ["s"]),
        helper.make_node("Conv", ["s", "w3", "b3"], ["c3"], strides=[2, 2]),
        helper.make_node("LeakyRelu", ["c3"], ["l3"], alpha=0.1),
        helper.make_node("GlobalAveragePool", ["l3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def two_head_detector(seed: int = 0, channels: int = 8, size: int = 16) -> onnx.ModelProto:
    """RetinaFace's shape in small: conv3x3 + LeakyReLU(0.1) feeding two 1x1 conv heads, box
    offsets (``loc``, float output) and Softmax class scores (``conf``): a model with two outputs,
    which the ONNX importer returns as one tuple-valued variable."""
    rng = np.random.default_rng(seed)
    c = channels

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

    inits = [
        init("w1", rng.normal(0, 0.25, (c, 3, 3, 3))), init("b1", rng.normal(0, 0.1, c)),
        init("wl", rng.normal(0, 0.3, (4, c, 1, 1))), init("bl", rng.normal(0, 0.1, 4)),
        init("wc", rng.normal(0, 0.3, (2, c, 1, 1))), init("bc", rng.normal(0, 0.1, 2)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c1"], ["feat"], alpha=0.1),
        helper.make_node("Conv", ["feat", "wl", "bl"], ["loc"]),
        helper.make_node("Conv", ["feat", "wc", "bc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["conf"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("loc", TensorProto.FLOAT, [1, 4, size, size]),
               helper.make_tensor_value_info("conf", TensorProto.FLOAT, [1, 2, size, size])]
    graph = helper.make_graph(nodes, "two_head_detector",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def relu6_block(seed: int = 0, channels: int = 16, size: int = 16) -> onnx.ModelProto:
    """MobileNetV2's inverted residual in small, ReLU6 as ONNX ``Clip(x, 0, 6)`` (bounds as inputs, as
    PyTorch exports it): conv3x3 + Clip -> 1x1 expand + Clip -> depthwise 3x3 + Clip -> 1x1 project
    -> residual add -> global average pool."""
    rng = np.random.default_rng(seed)
    c, e = channels, 2 * channels

    def init(name, arr, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(arr, dtype=dtype), name)

    inits = [
        init("w1", rng.normal(0, 0.4, (c, 3, 3, 3))), init("b1", rng.normal(0.5, 0.3, c)),
        init("we", rng.normal(0, 0.4, (e, c, 1, 1))), init("be", rng.normal(0.5, 0.3, e)),
        init("wd", rng.normal(0, 0.4, (e, 1, 3, 3))), init("bd", rng.normal(0.5, 0.3, e)),
        init("wp", rng.normal(0, 0.2, (c, e, 1, 1))), init("bp", rng.normal(0, 0.1, c)),
        init("lo", 0.0), init("hi", 6.0),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "we", "be"], ["ce"]),
        helper.make_node("Clip", ["ce", "lo", "hi"], ["re"]),
        helper.make_node("Conv", ["re", "wd", "bd"], ["cd"], pads=[1, 1, 1, 1], group=e),
        helper.make_node("Clip", ["cd", "lo", "hi"], ["rd"]),
        helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"]),
        helper.make_node("Add", ["cp", "r1"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "relu6_block",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def without_residual_blocks(model: onnx.ModelProto, keep: int) -> onnx.ModelProto:
    """``model`` with all but its first ``keep`` residual blocks cut out: the same layers and kernel
    kinds with fewer repeats (MobileFaceNet: every stage, the GDConv head and the embedding stay).

    A residual block ``y = branch(x) + x`` keeps its input's shape, so the block is removed by
    reading ``x`` wherever ``y`` was read; then the nodes and weights nothing reads any more go.
    The residual Add is the one of two computed tensors whose second input is the skip (zoo
    architectures' ``_inverted_residual`` order)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    residual = [n for n in graph.node if n.op_type == "Add" and not weights.intersection(n.input)]
    rename = {}
    for node in residual[keep:]:
        rename[node.output[0]] = rename.get(node.input[1], node.input[1])
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
    needed = {out.name for out in graph.output}
    kept = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    live = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(live)
    onnx.checker.check_model(model)
    return model

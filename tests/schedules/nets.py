"""Small ONNX conv nets for the schedule tests: one layer of each kernel kind, with its tails.

Weights are seeded and He-scaled so activations stay O(1) and relative errors are meaningful.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class NetBuilder:
    """Appends NCHW nodes with seeded weights; ``build`` returns a checked ModelProto."""

    def __init__(self, in_shape: tuple[int, ...], seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.in_shape = in_shape
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def const(self, array: np.ndarray, kind: str = "c") -> str:
        name = self._name(kind)
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, pad: int | None = None,
             bias: bool = True) -> str:
        fan_in = cin // groups * k * k
        w = self.const(self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in), "w")
        inputs = [x, w] + ([self.const(0.1 * self.rng.standard_normal(cout), "b")] if bias else [])
        p = k // 2 if pad is None else pad
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[p] * 4, group=groups)

    def batch_norm(self, x: str, c: int) -> str:
        gamma = self.const(1 + 0.1 * self.rng.standard_normal(c))
        beta = self.const(0.1 * self.rng.standard_normal(c))
        mean = self.const(0.1 * self.rng.standard_normal(c))
        var = self.const(1 + 0.1 * self.rng.random(c))
        return self.node("BatchNormalization", [x, gamma, beta, mean, var])

    def prelu(self, x: str, c: int) -> str:
        slope = self.const((0.25 + 0.05 * self.rng.standard_normal(c)).reshape(c, 1, 1))
        return self.node("PRelu", [x, slope])

    def build(self, out: str, out_shape: tuple[int, ...], opset: int = 13) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [out], ["output"]))
        graph = helper.make_graph(
            self.nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.in_shape))],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(out_shape))], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def conv_net(k: int, stride: int, cin: int = 8, cout: int = 16, hw: int = 14, residual: bool = False) -> onnx.ModelProto:
    """conv(k x k, stride) + bias + BN + PReLU [+ residual add of the input]."""
    b = NetBuilder((1, cin, hw, hw))
    y = b.prelu(b.batch_norm(b.conv("input", cin, cout, k, stride), cout), cout)
    if residual:
        assert cin == cout and stride == 1
        y = b.node("Add", [y, "input"])
    ho = (hw + 2 * (k // 2) - k) // stride + 1
    return b.build(y, (1, cout, ho, ho))


def depthwise_net(stride: int, c: int = 16, hw: int = 14) -> onnx.ModelProto:
    """depthwise 3x3 (stride) + bias + BN + PReLU."""
    b = NetBuilder((1, c, hw, hw))
    y = b.prelu(b.batch_norm(b.conv("input", c, c, 3, stride, groups=c), c), c)
    ho = (hw - 1) // stride + 1
    return b.build(y, (1, c, ho, ho))


def dense_net(features: int = 64, units: int = 24) -> onnx.ModelProto:
    """Gemm (x W^T + b) + PReLU-free ReLU tail."""
    b = NetBuilder((1, features))
    w = b.const(b.rng.standard_normal((units, features)) / np.sqrt(features))
    bias = b.const(0.1 * b.rng.standard_normal(units))
    y = b.node("Gemm", ["input", w, bias], transB=1)
    return b.build(b.node("Relu", [y]), (1, units))


def pool_net(c: int = 16, hw: int = 16) -> onnx.ModelProto:
    """conv 1x1 -> MaxPool 3x3/2 -> AveragePool 2x2/2 -> GlobalAveragePool (pooling after a conv, NHWC)."""
    b = NetBuilder((1, c, hw, hw))
    y = b.conv("input", c, c, 1)
    y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = b.node("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.node("GlobalAveragePool", [y])
    return b.build(y, (1, c, 1, 1))


def mini_mobilefacenet(c: int = 16, hw: int = 16) -> onnx.ModelProto:
    """A bottleneck stack in miniature: conv3x3/2, depthwise, 1x1 expand/project, residual, ReLU6."""
    b = NetBuilder((1, 3, 2 * hw, 2 * hw))
    x = b.prelu(b.batch_norm(b.conv("input", 3, c, 3, 2), c), c)
    y = b.prelu(b.batch_norm(b.conv(x, c, 2 * c, 1), 2 * c), 2 * c)
    y = b.node("Clip", [y, b.const(np.float32(0.0)), b.const(np.float32(6.0))])
    y = b.prelu(b.batch_norm(b.conv(y, 2 * c, 2 * c, 3, groups=2 * c), 2 * c), 2 * c)
    y = b.batch_norm(b.conv(y, 2 * c, c, 1, bias=False), c)
    x = b.node("Add", [x, y])
    x = b.node("LeakyRelu", [b.conv(x, c, 2 * c, 3, 2)], alpha=0.1)
    x = b.node("GlobalAveragePool", [x])
    return b.build(x, (1, 2 * c, 1, 1))


def generic_ops_net(c: int = 8, hw: int = 8) -> onnx.ModelProto:
    """Kernels no register-tiled pattern covers: concat, sigmoid gate, softmax over channels."""
    b = NetBuilder((1, c, hw, hw))
    y = b.conv("input", c, c, 3)
    cat = b.node("Concat", [y, "input"], axis=1)
    gate = b.node("Mul", [cat, b.node("Sigmoid", [cat])])
    return b.build(b.node("Softmax", [gate], axis=1), (1, 2 * c, hw, hw))

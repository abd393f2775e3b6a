"""Face and mobile CNNs built from their papers' architecture tables, as ONNX models.

No trained MobileFaceNet ships in any package, so these carry seeded random weights that are
well-scaled (He-normal convolutions, BatchNorm statistics set from the layer's actual activation
statistics on a random input, so every layer's output has mean ~beta and std ~gamma). They are fine
for compiler correctness and speed, not for accuracy.

- MobileFaceNet: Chen et al. 2018, "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
  Verification on Mobile Devices", Table 1: 112x112 input, PReLU, BN after every conv, a global
  depthwise (GDConv 7x7) head and a linear 1x1 conv to a 128-d embedding. ~0.23 GMAC.
- MobileNetV2: Sandler et al. 2018, Table 2, width 1.0, 224x224, ReLU6, 1000 classes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
_SHADOW_BATCH = 8


class _GraphBuilder:
    """Appends Conv/BN/activation nodes in NCHW with seeded weights; tracks the channel count."""

    def __init__(self, name: str, input_shape: tuple[int, ...], seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.input_shape = input_shape
        self.tensor = "input"
        self.channels = input_shape[1]
        self._count = 0
        # A float64 numpy shadow of the activations, used to set BN statistics so the network
        # stays well-scaled at any depth.
        # A batch of shadow samples: one sample gives degenerate BN statistics at 1x1 spatial size.
        self.value = self.rng.standard_normal((_SHADOW_BATCH, *input_shape[1:]))

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._count}"

    def _init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, out_channels: int, kernel: int, stride: int = 1, groups: int = 1, pad: int | None = None,
             bias: bool = False) -> "_GraphBuilder":
        name = self._name("conv")
        pad = kernel // 2 if pad is None else pad
        in_per_group = self.channels // groups
        fan_in = in_per_group * kernel * kernel
        w = self.rng.standard_normal((out_channels, in_per_group, kernel, kernel)) * np.sqrt(2.0 / fan_in)
        inputs = [self.tensor, self._init(f"{name}.weight", w)]
        b = None
        if bias:
            b = self.rng.standard_normal(out_channels) * 0.1
            inputs.append(self._init(f"{name}.bias", b))
        out = f"{name}.out"
        self.nodes.append(helper.make_node("Conv", inputs, [out], name=name, kernel_shape=[kernel, kernel],
                                           strides=[stride, stride], pads=[pad] * 4, group=groups))
        self.value = _conv_nchw(self.value, w, stride, pad, groups) + (0 if b is None else b[None, :, None, None])
        self.tensor, self.channels = out, out_channels
        return self

    def bn(self) -> "_GraphBuilder":
        name = self._name("bn")
        c = self.channels
        gamma = self.rng.uniform(0.5, 1.5, c)
        beta = self.rng.normal(0.0, 0.2, c)
        mean = self.value.mean(axis=(0, 2, 3))
        var = self.value.var(axis=(0, 2, 3)) + 1e-3
        eps = 1e-5
        out = f"{name}.out"
        self.nodes.append(helper.make_node(
            "BatchNormalization",
            [self.tensor, self._init(f"{name}.gamma", gamma), self._init(f"{name}.beta", beta),
             self._init(f"{name}.mean", mean), self._init(f"{name}.var", var)],
            [out], name=name, epsilon=eps))
        scale = gamma / np.sqrt(var + eps)
        self.value = (self.value - mean[None, :, None, None]) * scale[None, :, None, None] + beta[None, :, None, None]
        self.tensor = out
        return self

    def prelu(self) -> "_GraphBuilder":
        name = self._name("prelu")
        slope = self.rng.uniform(0.1, 0.3, (self.channels, 1, 1))
        out = f"{name}.out"
        self.nodes.append(helper.make_node("PRelu", [self.tensor, self._init(f"{name}.slope", slope)], [out], name=name))
        self.value = np.where(self.value >= 0, self.value, self.value * slope[None])
        self.tensor = out
        return self

    def relu6(self) -> "_GraphBuilder":
        name = self._name("relu6")
        out = f"{name}.out"
        lo, hi = self._init(f"{name}.min", np.array(0.0)), self._init(f"{name}.max", np.array(6.0))
        self.nodes.append(helper.make_node("Clip", [self.tensor, lo, hi], [out], name=name))
        self.value = np.clip(self.value, 0.0, 6.0)
        self.tensor = out
        return self

    def add(self, other_tensor: str, other_value: np.ndarray) -> "_GraphBuilder":
        name = self._name("add")
        out = f"{name}.out"
        self.nodes.append(helper.make_node("Add", [self.tensor, other_tensor], [out], name=name))
        self.value = self.value + other_value
        self.tensor = out
        return self

    def node(self, op: str, extra_inputs: list[str] = (), **attrs) -> str:
        name = self._name(op.lower())
        out = f"{name}.out"
        self.nodes.append(helper.make_node(op, [self.tensor, *extra_inputs], [out], name=name, **attrs))
        self.tensor = out
        return out

    def build(self, output_name: str, output_shape: list[int]) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [self.tensor], [output_name], name="output"))
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.input_shape))],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape)],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="edgetvm.zoo.architectures")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def _conv_nchw(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """Reference grouped conv in float64 via im2col; used only to track activation statistics."""
    n, c, h, wd = x.shape
    oc, icg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    out = np.empty((n, oc, oh, ow))
    ocg = oc // groups
    for g in range(groups):
        xs = xp[:, g * icg:(g + 1) * icg]
        cols = np.empty((n, icg, kh, kw, oh, ow))
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xs[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
        wg = w[g * ocg:(g + 1) * ocg].reshape(ocg, -1)
        out[:, g * ocg:(g + 1) * ocg] = np.einsum("ok,nkhw->nohw", wg, cols.reshape(n, -1, oh, ow))
    return out


def _inverted_residual(b: _GraphBuilder, out_channels: int, expansion: int, stride: int, act: str) -> None:
    """Sandler et al.'s bottleneck: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ residual)."""
    skip_tensor, skip_value, in_channels = b.tensor, b.value, b.channels
    hidden = in_channels * expansion
    activation = b.prelu if act == "prelu" else b.relu6
    if expansion != 1:
        b.conv(hidden, 1).bn()
        activation()
    b.conv(hidden, 3, stride=stride, groups=hidden).bn()
    activation()
    b.conv(out_channels, 1).bn()
    if stride == 1 and in_channels == out_channels:
        b.add(skip_tensor, skip_value)


# Chen et al. 2018, Table 1: (expansion t, output channels c, repeats n, first stride s).
MOBILEFACENET_BOTTLENECKS = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]

# Sandler et al. 2018, Table 2.
MOBILENET_V2_BOTTLENECKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                            (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilefacenet(seed: int = 0, embedding_size: int = 128) -> onnx.ModelProto:
    """MobileFaceNet for a [1, 3, 112, 112] input, returning a [1, embedding_size] embedding."""
    b = _GraphBuilder("mobilefacenet", (1, 3, 112, 112), seed)
    b.conv(64, 3, stride=2).bn().prelu()
    b.conv(64, 3, groups=64).bn().prelu()
    for t, c, n, s in MOBILEFACENET_BOTTLENECKS:
        for i in range(n):
            _inverted_residual(b, c, t, s if i == 0 else 1, "prelu")
    b.conv(512, 1).bn().prelu()
    b.conv(512, 7, groups=512, pad=0).bn()  # linear GDConv 7x7
    b.conv(embedding_size, 1).bn()  # linear 1x1
    b.node("Flatten", axis=1)
    return b.build("embedding", [1, embedding_size])


def mobilenet_v2(seed: int = 0, num_classes: int = 1000) -> onnx.ModelProto:
    """MobileNetV2-1.0 for a [1, 3, 224, 224] input, returning [1, num_classes] logits."""
    b = _GraphBuilder("mobilenet_v2", (1, 3, 224, 224), seed)
    b.conv(32, 3, stride=2).bn().relu6()
    for t, c, n, s in MOBILENET_V2_BOTTLENECKS:
        for i in range(n):
            _inverted_residual(b, c, t, s if i == 0 else 1, "relu6")
    b.conv(1280, 1).bn().relu6()
    b.node("GlobalAveragePool")
    b.node("Flatten", axis=1)
    w = b.rng.standard_normal((num_classes, 1280)) * np.sqrt(1.0 / 1280)
    bias = b.rng.standard_normal(num_classes) * 0.01
    b.node("Gemm", [b._init("fc.weight", w), b._init("fc.bias", bias)], transB=1)
    return b.build("logits", [1, num_classes])

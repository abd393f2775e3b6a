"""Small hand-built ONNX models, each reproducing one construct of the real face models."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8 if opset < 21 else 10
    onnx.checker.check_model(proto)
    return proto


def fpn_with_shape_arithmetic(rng: np.random.Generator) -> onnx.ModelProto:
    """RetinaFace's FPN/head construction at opset 11, input ``[batch, 3, height, width]``:

    a = conv(x, stride 2); b = conv(a, stride 2)
    up = Resize(b, roi=[], scales=[], sizes=Concat(Shape(b)[0:2], Cast(Concat(Shape(a)[2], Shape(a)[3]))))
    y = Reshape(a + up, Concat(Shape(x)[0], -1, 2))
    """
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], name="conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["a"], ["a_shape"], name="shape_a"),
        helper.make_node("Gather", ["a_shape", "i2"], ["a_h"], name="gather_h", axis=0),
        helper.make_node("Gather", ["a_shape", "i3"], ["a_w"], name="gather_w", axis=0),
        helper.make_node("Unsqueeze", ["a_h"], ["a_h1"], name="unsq_h", axes=[0]),
        helper.make_node("Unsqueeze", ["a_w"], ["a_w1"], name="unsq_w", axes=[0]),
        helper.make_node("Concat", ["a_h1", "a_w1"], ["hw"], name="concat_hw", axis=0),
        helper.make_node("Cast", ["hw"], ["hw64"], name="cast_hw", to=TensorProto.INT64),
        helper.make_node("Shape", ["b"], ["b_shape"], name="shape_b"),
        helper.make_node("Slice", ["b_shape", "s0", "s2", "s_axis"], ["nc"], name="slice_nc"),
        helper.make_node("Concat", ["nc", "hw64"], ["sizes"], name="concat_sizes", axis=0),
        helper.make_node("Resize", ["b", "roi", "scales", "sizes"], ["up"], name="resize",
                         mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Add", ["a", "up"], ["merged"], name="add"),
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape_x"),
        helper.make_node("Gather", ["x_shape", "i0"], ["n"], name="gather_n", axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], name="unsq_n", axes=[0]),
        helper.make_node("Concat", ["n1", "minus1", "two"], ["target"], name="concat_target", axis=0),
        helper.make_node("Reshape", ["merged", "target"], ["y"], name="reshape"),
    ]
    inits = [const("w1", w1), const("w2", w2), const("i0", np.int64(0)), const("i2", np.int64(2)),
             const("i3", np.int64(3)), const("s0", [0]), const("s2", [2]), const("s_axis", [0]),
             const("roi", np.zeros(0, np.float32)), const("scales", np.zeros(0, np.float32)),
             const("minus1", [-1]), const("two", [2])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "cells", 2])
    return model(nodes, [x], [y], inits, opset=11)


def blocked_dequantize_conv(rng: np.random.Generator, block_size: int = 4) -> tuple[onnx.ModelProto, dict]:
    """SFace/YuNet's weight storage: int8 ``[O, I*kh*kw]`` blocked along axis 1, reshaped, convolved."""
    out_ch, in_ch, k = 5, 3, 3
    cols = in_ch * k * k  # 27: the last block is partial (27 = 6 * 4 + 3)
    blocks = -(-cols // block_size)
    q = rng.integers(-128, 128, (out_ch, cols), dtype=np.int8)
    scale = (rng.random((out_ch, blocks)).astype(np.float32) + 0.5) * 0.01
    zero_point = rng.integers(-5, 6, (out_ch, blocks), dtype=np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], name="dq_w", axis=1, block_size=block_size),
        helper.make_node("Reshape", ["wf", "wshape"], ["w"], name="reshape_w"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inits = [const("wq", q), const("ws", scale), const("wz", zero_point), const("wshape", [out_ch, in_ch, k, k])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_ch, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_ch, 8, 8])
    return model(nodes, [x], [y], inits, opset=21), {"q": q, "scale": scale, "zero_point": zero_point,
                                                     "block_size": block_size}


def per_axis_dequantize_conv(rng: np.random.Generator) -> onnx.ModelProto:
    """Per-output-channel int8 weights (no blocks): onnxruntime runs this one as is."""
    q = rng.integers(-128, 128, (4, 3, 3, 3), dtype=np.int8)
    scale = (rng.random(4).astype(np.float32) + 0.5) * 0.02
    zero_point = rng.integers(-3, 4, 4, dtype=np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="dq_w", axis=0),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    return model(nodes, [x], [y], [const("wq", q), const("ws", scale), const("wz", zero_point)], opset=13)


def legacy_weights_as_inputs(rng: np.random.Generator) -> onnx.ModelProto:
    """SFace's (MXNet) layout: a weight listed among the graph inputs, an input no node reads, and an
    inference Dropout whose ratio is a shape-[1] tensor."""
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["data", "w"], ["c"], name="conv"),
        helper.make_node("Dropout", ["c", "ratio"], ["y"], name="dropout"),
    ]
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 4, 4]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 1, 1]),
              helper.make_tensor_value_info("old_w", TensorProto.FLOAT, [4, 3, 1, 1])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])
    return model(nodes, inputs, [y], [const("w", w), const("ratio", np.array([0.5], np.float32))], opset=13)


def conv_relu_gemm() -> onnx.ModelProto:
    """[1,3,8,8] -> Conv 3->4 3x3 pad 1 (+bias) -> Relu -> Flatten -> Gemm 256->10 (+bias).

    Parameters: 4*3*3*3 + 4 + 10*256 + 10 = 2682. MACs: conv 4*8*8 * 3*3*3 = 6912, gemm 10 * 256 = 2560.
    """
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    inits = [const("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             const("b", np.zeros(4, np.float32)),
             const("fw", rng.standard_normal((10, 256)).astype(np.float32)),
             const("fb", np.zeros(10, np.float32))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    return model(nodes, [x], [y], inits)


def with_unsupported_ops() -> onnx.ModelProto:
    """Two Celu nodes and a Det node: ops TVM 0.27's ONNX converter has no entry for."""
    nodes = [
        helper.make_node("Celu", ["x"], ["c1"], name="celu_a"),
        helper.make_node("Relu", ["c1"], ["r"], name="relu"),
        helper.make_node("Celu", ["r"], ["c2"], name="celu_b"),
        helper.make_node("Det", ["c2"], ["y"], name="det"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    return model(nodes, [x], [y])


def conv_variadic_elementwise(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv, then ReLU6 spelled Max(x, 0-d 0) and Min(x, 0-d 6) (as some exporters write it), then a
    three-input Max, Sum and Mean whose operands broadcast (per-channel [4,1,1], full tensor)."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    per_channel = rng.standard_normal((4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Max", ["c", "zero"], ["r"], name="relu_max"),
        helper.make_node("Min", ["r", "six"], ["r6"], name="relu6_min"),
        helper.make_node("Max", ["r6", "bias", "c"], ["m3"], name="max3"),
        helper.make_node("Sum", ["m3", "bias", "c"], ["s3"], name="sum3"),
        helper.make_node("Mean", ["s3", "c", "bias"], ["y"], name="mean3"),
    ]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                 [const("w", w), const("zero", np.float32(0.0)), const("six", np.float32(6.0)),
                  const("bias", per_channel)])

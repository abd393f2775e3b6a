"""Hostile and corrupt models: memory they declare is refused before anything is allocated, and
failures inside TVM reach the user as edgetvm errors without TVM's internals."""

import struct

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetvm
from edgetvm.errors import CompileError, EdgeTVMError, ModelLoadError, ResourceLimitError
from edgetvm.frontends import onnx as onnx_frontend
from edgetvm.frontends import tflite as tflite_frontend

from .test_artifacts_and_inputs import small_conv_model


def _refuse_conversion(monkeypatch):
    """Make reaching TVM's converters a test failure: the limits must act before them."""
    def reached(*args, **kwargs):
        raise AssertionError("TVM's converter was reached: the memory limit was not checked first")

    monkeypatch.setattr(onnx_frontend, "convert_to_relax", reached)
    import tvm.relax.frontend.tflite as tvm_tflite

    monkeypatch.setattr(tvm_tflite, "from_tflite", reached)


def test_onnx_initializer_declaring_terabytes_is_refused_from_its_dims(monkeypatch):
    model = small_conv_model()
    weight = model.graph.initializer[0]
    del weight.dims[:]
    weight.dims.extend([1 << 20, 1 << 20])  # 4 TiB of float32 declared, 864 bytes carried
    _refuse_conversion(monkeypatch)
    with pytest.raises(ResourceLimitError, match=r"initializer 'w' declares 4194304\.0 MiB, over the per-tensor limit"):
        edgetvm.compile(model, "host")


def test_onnx_model_total_over_the_limit_is_refused(monkeypatch):
    monkeypatch.setenv("EDGETVM_MAX_MODEL_BYTES", "3000")  # input 2304 + weights 896 bytes
    _refuse_conversion(monkeypatch)
    with pytest.raises(ResourceLimitError, match=r"tensors declare .* MiB in all, over the limit"):
        edgetvm.compile(small_conv_model(), "host")


def test_limit_setting_must_be_a_number(monkeypatch):
    monkeypatch.setenv("EDGETVM_MAX_TENSOR_BYTES", "lots")
    with pytest.raises(ResourceLimitError, match="EDGETVM_MAX_TENSOR_BYTES='lots' is not a whole number"):
        edgetvm.compile(small_conv_model(), "host")


def _tflite_with_input_shape(data: bytes, shape: list[int]) -> bytes:
    """``data`` with its first graph input's shape vector overwritten in place (same rank)."""
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    subgraph = model.Subgraphs(0)
    tensor = subgraph.Tensors(int(subgraph.Inputs(0)))
    assert tensor.ShapeLength() == len(shape)
    start = tensor._tab.Vector(tensor._tab.Offset(4))  # Tensor.shape is field 0 (vtable slot 4)
    buf = bytearray(data)
    for i, dim in enumerate(shape):
        struct.pack_into("<i", buf, start + 4 * i, dim)
    return bytes(buf)


def test_tflite_tensor_declaring_terabytes_is_refused_from_its_shape(zoo, tmp_path, monkeypatch):
    path = tmp_path / "huge_input.tflite"
    path.write_bytes(_tflite_with_input_shape(zoo("blazeface").read_bytes(), [1, 1 << 20, 1 << 20, 3]))
    _refuse_conversion(monkeypatch)
    with pytest.raises(ResourceLimitError, match=r"tensor 'input' declares 12582912\.0 MiB, over the per-tensor"):
        edgetvm.compile(str(path), "host")


def test_tflite_limit_is_configurable(zoo, monkeypatch):
    monkeypatch.setenv("EDGETVM_MAX_TENSOR_BYTES", str(128 * 128 * 3 * 4 - 1))  # one byte short of the input
    _refuse_conversion(monkeypatch)
    with pytest.raises(ResourceLimitError, match=r"tensor 'input' declares 0\.2 MiB"):
        edgetvm.compile(str(zoo("blazeface")), "host")


def test_intermediate_tensor_over_the_limit_is_refused_at_import():
    """Small input, small weights, but a Resize by 4096x asks for a 12 GiB result."""
    scales = numpy_helper.from_array(np.array([1, 1, 4096, 4096], np.float32), "scales")
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")], "blowup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32768, 32768])], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ResourceLimitError, match=r"resize2d computes .* \[1, 3, 32768, 32768\] \(12288\.0 MiB\)"):
        edgetvm.compile(model, "host")


def test_conv_with_zero_stride_is_refused_before_tvm():
    model = small_conv_model()
    model.graph.node[0].attribute.append(helper.make_attribute("strides", [0, 1]))
    with pytest.raises(ModelLoadError, match=r"Conv node .*strides \[0, 1\] out of range"):
        edgetvm.compile(model, "host")


def _no_tvm_internals(text: str) -> None:
    for internal in ("Check failed", "T.int64(", "ir.Op(", ".cc:", "object has no attribute", "Traceback"):
        assert internal not in text, f"TVM internals {internal!r} reach the user: {text}"


def test_converter_failure_is_told_without_tvm_internals(capfd):
    """A Conv whose weight expects 2 input channels on 3-channel data fails inside TVM's converter."""
    weight = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="mismatched")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(EdgeTVMError, match=r"Conv node 'mismatched': .*data channel size is 3") as info:
        edgetvm.compile(model, "host")
    message = str(info.value)
    del info
    import gc

    gc.collect()  # the half-built Relax function is freed here; TVM warns on stderr if it was left open
    _no_tvm_internals(message)
    captured = capfd.readouterr()
    _no_tvm_internals(captured.out + captured.err)


def _tflite_with_absent_input(data: bytes, op_code: str, input_index: int) -> bytes:
    """``data`` with input ``input_index`` of the first ``op_code`` op marked absent (-1)."""
    import tflite

    from edgetvm.frontends.tflite import op_names

    model = tflite.Model.GetRootAsModel(data, 0)
    subgraph = model.Subgraphs(0)
    index = next(i for i, (code, _) in enumerate(op_names(model, subgraph)) if code == op_code)
    op = subgraph.Operators(index)
    start = op._tab.Vector(op._tab.Offset(6))  # Operator.inputs is field 1 (vtable slot 6)
    buf = bytearray(data)
    struct.pack_into("<i", buf, start + 4 * input_index, -1)
    return bytes(buf)


def test_tflite_op_missing_a_required_input_is_named(zoo, tmp_path, capfd):
    path = tmp_path / "pad_without_paddings.tflite"
    path.write_bytes(_tflite_with_absent_input(zoo("blazeface").read_bytes(), "PAD", 1))
    with pytest.raises(EdgeTVMError, match=r"at PAD op producing '.*': the op's inputs or options are malformed "
                                           r"\(an input it needs is marked absent, -1\)") as info:
        edgetvm.compile(str(path), "host")
    message = str(info.value)
    del info
    import gc

    gc.collect()
    _no_tvm_internals(message)
    captured = capfd.readouterr()
    _no_tvm_internals(captured.out + captured.err)


def _conv_model(bias_shape=(4,), slope_shape=None, bn_shapes=None, weight_shape=(4, 3, 3, 3)):
    """x -> Conv(w, b) [-> PRelu(slope)] [-> BatchNormalization]: a small model to break one way at a time."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(weight_shape).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(bias_shape).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    out = "y"
    if slope_shape is not None:
        inits.append(numpy_helper.from_array(np.full(slope_shape, 0.1, np.float32), "slope"))
        nodes.append(helper.make_node("PRelu", ["y", "slope"], ["z"], name="prelu"))
        out = "z"
    if bn_shapes is not None:
        for name, shape in zip(("gamma", "beta", "mean", "var"), bn_shapes):
            inits.append(numpy_helper.from_array(np.ones(shape, np.float32), name))
        nodes.append(helper.make_node("BatchNormalization", [out, "gamma", "beta", "mean", "var"], ["n"], name="bn"))
        out = "n"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_well_formed_small_model_compiles():
    """The control for the malformed variants below: the same graph, well formed, compiles."""
    edgetvm.compile(_conv_model(slope_shape=(4, 1, 1), bn_shapes=[(4,)] * 4), "host")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bias_shape": (1, 4)}, r"Conv node 'conv': bias 'b' has shape \[1, 4\]; it must be \[4\]"),
        ({"weight_shape": (4, 27)}, r"Conv node 'conv': weight 'w' has shape \[4, 27\]; .* rank 3, 4 or 5"),
        ({"slope_shape": (4,)}, r"PRelu node 'prelu': slope of shape \[4\] does not broadcast to .*\[1, 4, 6, 6\]"),
        ({"bn_shapes": [(4,), (4,), (2,), (4,)]}, r"BatchNormalization node 'bn': scale, bias, mean and variance"),
    ],
)
def test_malformed_but_plausible_models_are_refused_at_import(kwargs, message, monkeypatch):
    """Shapes that TVM's converters accept and only a lowering assertion (or wrong numbers) would catch."""
    import edgetvm.api

    def lowered(*args, **kwargs):
        raise AssertionError("a malformed model reached lowering")

    monkeypatch.setattr(edgetvm.api, "legalize_and_fuse", lowered)
    with pytest.raises(ModelLoadError, match=message):
        edgetvm.compile(_conv_model(**kwargs), "host")


def test_blocked_dequantize_scale_must_match_the_other_dims():
    """Blocked scales have the weight's shape except along the blocked axis (fuzz seed 251, yunet)."""
    from edgetvm.frontends.onnx_rewrites.dequantize import dequantize_array

    x = np.ones((5, 9), np.int8)
    ok = dequantize_array(x, np.ones((5, 1), np.float32), np.zeros((5, 1), np.int8), axis=1, block_size=9)
    assert ok.shape == (5, 9)
    with pytest.raises(ModelLoadError, match=r"scale shape \(10, 1\) does not match input shape \(5, 9\)"):
        dequantize_array(x, np.ones((10, 1), np.float32), np.zeros((10, 1), np.int8), axis=1, block_size=9,
                         node_name="dq")


@pytest.mark.parametrize("raw, told", [
    ("Check failed: (pb->value != 0) is false: Divide by zero", "Divide by zero"),
    ("InternalError: Check failed: a == b: kernel size mismatch", "kernel size mismatch"),
    ("the data channel size is T.int64(3) while the weight has T.int32(2)", "the data channel size is 3 while the "
                                                                             "weight has 2"),
    ('In ir.Op(span=None, name="relax.nn.conv2d", num_inputs=2, support_level=10), layout OIHW needs 4-d',
     "nn.conv2d: layout OIHW needs 4-d"),
])
def test_tvm_reasons_lose_tvm_notation(raw, told):
    from edgetvm.frontends.tvm_failures import tvm_reason

    assert tvm_reason(RuntimeError(raw)) == told

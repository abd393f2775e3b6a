"""Bad models and bad shapes get one clear edgetvm error naming the file, node, op or input."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import edgetvm
from edgetvm.cli import main
from edgetvm.errors import EdgeTVMError, InputError, ModelLoadError, UnsupportedModelError
from edgetvm.frontends import load_model

from . import tiny_models


def assert_clean(exc: EdgeTVMError) -> None:
    """A user-facing message: no Python or C++ trace inside it."""
    text = str(exc)
    assert "Traceback" not in text and "File \"" not in text and "[bt]" not in text


@pytest.mark.parametrize("name, fraction", [("yunet", 0.5), ("retinaface", 0.97), ("blazeface", 0.4)])
def test_truncated_model_file(zoo, tmp_path, name, fraction):
    data = zoo(name).read_bytes()
    path = tmp_path / f"cut_{zoo(name).name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelLoadError, match="truncated or corrupt") as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert_clean(info.value)


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".bin"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError) as info:
        edgetvm.compile(path, "host")
    assert str(path) in str(info.value)
    assert_clean(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model file"):
        load_model(tmp_path / "absent.onnx")


def test_all_unsupported_ops_in_one_error():
    with pytest.raises(UnsupportedModelError) as info:
        edgetvm.compile(tiny_models.with_unsupported_ops(), "host")
    message = str(info.value)
    assert info.value.unsupported == {"Celu": ["celu_a", "celu_b"], "Det": ["det"]}
    for word in ("Celu", "Det", "celu_a", "celu_b", "det", "2 operator type(s)"):
        assert word in message
    assert "relu" not in message.replace("celu", "")
    assert_clean(info.value)


def test_custom_domain_op_is_unsupported():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([node], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedModelError, match="com.microsoft.FusedConv: fused"):
        load_model(model)


def test_converter_failure_names_the_node():
    """Valid ONNX that TVM's converter has an entry for but cannot convert (TopK with a run-time k):
    the error names that node."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    values = helper.make_tensor_value_info("values", TensorProto.FLOAT, [4, "k"])
    indices = helper.make_tensor_value_info("indices", TensorProto.INT64, [4, "k"])
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="top_k")
    model = helper.make_model(helper.make_graph([node], "g", [x, k], [values, indices]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match="TopK node 'top_k': TopK k must be a constant") as info:
        load_model(model)
    assert info.value.unsupported == {"TopK": ["top_k"]}
    assert_clean(info.value)


def test_wrong_input_name_lists_the_real_inputs(zoo):
    with pytest.raises(InputError) as info:
        load_model(zoo("sface"), {"input": (1, 3, 112, 112)})
    assert "'input'" in str(info.value) and "['data']" in str(info.value)


def test_wrong_input_name_tflite(zoo):
    with pytest.raises(InputError, match=r"\['input'\]"):
        load_model(zoo("blazeface"), {"image": (1, 128, 128, 3)})


def test_dynamic_dims_need_a_shape(zoo):
    with pytest.raises(InputError) as info:
        load_model(zoo("retinaface"))
    message = str(info.value)
    for word in ("'input'", "dynamic", "batch_size", "height", "width", "--input-shape input=1,3,HEIGHT,WIDTH",
                 "input_shapes="):
        assert word in message, word


@pytest.mark.parametrize("shape, words", [
    ((1, 3, 480), ["rank 4", "rank 3"]),
    ((1, 3, 480, 640, 1), ["rank 4", "rank 5"]),
    ((1, 3, "h", 640), ["positive integers"]),
    ((1, 3, 0, 640), ["positive integers"]),
])
def test_bad_override_shapes(zoo, shape, words):
    with pytest.raises(InputError) as info:
        load_model(zoo("retinaface"), {"input": shape})
    for word in words:
        assert word in str(info.value)


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage" * 10)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgetvm: error: ") and str(path) in err and "Traceback" not in err


def test_cli_input_shape_for_dynamic_model(zoo, capsys):
    assert main(["inspect", str(zoo("retinaface"))]) == 2
    assert "--input-shape input=" in capsys.readouterr().err


def test_onnx_model_with_dangling_input_is_a_load_error():
    node = helper.make_node("Relu", ["nowhere"], ["y"], name="relu")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="'relu' .* reads 'nowhere'"):
        load_model(model)


def blazeface_with_ops_replaced(data: bytes, replace: dict[int, int]) -> bytes:
    """BlazeFace's flatbuffer with some operator codes rewritten in place (their int8
    ``deprecated_builtin_code`` field; this file has no 32-bit ``builtin_code`` fields)."""
    import tflite

    buf = bytearray(data)
    model = tflite.Model.GetRootAsModel(data, 0)
    for i in range(model.OperatorCodesLength()):
        table = model.OperatorCodes(i)._tab
        field = table.Offset(4)
        if field and table.Offset(10) == 0 and buf[table.Pos + field] in replace:
            buf[table.Pos + field] = replace[buf[table.Pos + field]]
    return bytes(buf)


def test_tflite_unsupported_ops_in_one_error(zoo, tmp_path):
    from tflite.BuiltinOperator import BuiltinOperator as Op

    path = tmp_path / "blazeface_mutant.tflite"
    path.write_bytes(blazeface_with_ops_replaced(zoo("blazeface").read_bytes(),
                                                 {Op.RELU: Op.LSH_PROJECTION, Op.PAD: Op.RNN}))
    with pytest.raises(UnsupportedModelError) as info:
        edgetvm.compile(path, "host")
    unsupported = info.value.unsupported
    assert sorted(unsupported) == ["LSH_PROJECTION", "RNN"]
    assert len(unsupported["LSH_PROJECTION"]) == 17 and len(unsupported["RNN"]) == 11
    message = str(info.value)
    assert str(path) in message and unsupported["RNN"][0] in message and "(17 ops)" in message
    assert_clean(info.value)


def test_tflite_converter_failure_names_the_op(zoo, tmp_path):
    """CONCATENATION relabelled SOFTMAX: TVM's converter has SOFTMAX but fails on its two inputs."""
    from tflite.BuiltinOperator import BuiltinOperator as Op

    path = tmp_path / "blazeface_bad_softmax.tflite"
    path.write_bytes(blazeface_with_ops_replaced(zoo("blazeface").read_bytes(), {Op.CONCATENATION: Op.SOFTMAX}))
    with pytest.raises(UnsupportedModelError, match="at SOFTMAX op producing '") as info:
        load_model(path)
    assert list(info.value.unsupported) == ["SOFTMAX"]
    assert_clean(info.value)


def test_malformed_blocked_dequantize_names_the_node(rng):
    model, _ = tiny_models.blocked_dequantize_conv(rng, block_size=4)
    for name, itemsize in (("ws", 4), ("wz", 1)):
        tensor = next(t for t in model.graph.initializer if t.name == name)
        tensor.dims[1] = 2  # 27 columns in blocks of 4 need 7 scales per row, not 2
        tensor.raw_data = tensor.raw_data[: 5 * 2 * itemsize]
    with pytest.raises(ModelLoadError, match="<ModelProto>: DequantizeLinear node 'dq_w': scale shape .* block_size=4"):
        load_model(model)

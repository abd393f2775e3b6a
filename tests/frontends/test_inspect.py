"""``inspect_model`` and ``edgetvm inspect``: exact counts on a hand-built model, and MACs of the
real models recomputed independently from their own files (ONNX shape inference, TFLite tensors)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgetvm.cli import main
from edgetvm.errors import ModelLoadError
from edgetvm.frontends.onnx import prepare_onnx
from edgetvm.frontends.inspect import inspect_model, render_text

from . import tiny_models
from .checks import RETINAFACE_SHAPE
from .test_errors import blazeface_with_ops_replaced


def test_exact_counts_on_a_hand_built_model():
    info = inspect_model(tiny_models.conv_relu_gemm())
    assert info["ops"] == {"Conv": 1, "Relu": 1, "Flatten": 1, "Gemm": 1}
    assert info["num_ops"] == 4
    assert info["params"] == 4 * 3 * 3 * 3 + 4 + 10 * 256 + 10 == 2682
    assert info["param_bytes"] == 2682 * 4
    assert info["macs_by_op"] == {"conv": 4 * 8 * 8 * 3 * 3 * 3, "matmul": 10 * 256}
    assert info["macs"] == 6912 + 2560
    assert info["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert info["outputs"] == [{"name": "y", "shape": [1, 10], "dtype": "float32"}]
    text = render_text(info)
    for line in ("parameters: 2,682", "MACs: 9,472", "Gemm", "x                        float32  [1, 3, 8, 8]"):
        assert line in text


def onnx_conv_macs(model: onnx.ModelProto) -> int:
    """sum over Conv nodes of prod(output shape) * prod(weight.shape[1:]), by ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    return sum(int(np.prod(shapes[n.output[0]])) * int(np.prod(weights[n.input[1]][1:]))
               for n in model.graph.node if n.op_type == "Conv")


def test_real_onnx_model(zoo):
    info = inspect_model(zoo("yunet"))
    prepared, _, _, _ = prepare_onnx(zoo("yunet"))
    assert info["macs"] == info["macs_by_op"]["conv"] == onnx_conv_macs(prepared)
    # Weights: the float initializers, except Resize's scales (an attribute in Relax, not a weight).
    resize_inputs = {name for n in prepared.graph.node if n.op_type == "Resize" for name in n.input[1:]}
    weights = [t for t in prepared.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT and t.name not in resize_inputs]
    assert info["params"] == sum(int(np.prod(t.dims)) for t in weights)
    assert info["ops"]["DequantizeLinear"] == 64 and info["ops"]["Conv"] == 53
    assert [o["name"] for o in info["outputs"]][:3] == ["cls_8", "cls_16", "cls_32"]
    assert any("DequantizeLinear" in note for note in info["notes"])


def test_real_onnx_model_with_dynamic_input(zoo):
    info = inspect_model(zoo("retinaface"), {"input": RETINAFACE_SHAPE})
    prepared, _, _, _ = prepare_onnx(zoo("retinaface"), {"input": RETINAFACE_SHAPE})
    assert info["macs"] == onnx_conv_macs(prepared)
    assert [o["name"] for o in info["outputs"]] == ["loc", "conf", "landmarks"]
    assert info["outputs"][0]["shape"] == [1, 12600, 4]
    assert info["ops"]["Shape"] == 15  # the file's own ops, before edgetvm folded them


def tflite_conv_macs(path) -> int:
    """CONV_2D: prod(out) * kh * kw * C_in (weights OHWI); DEPTHWISE_CONV_2D: prod(out) * kh * kw."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    total = 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        code = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if code not in (BuiltinOperator.CONV_2D, BuiltinOperator.DEPTHWISE_CONV_2D):
            continue
        out = graph.Tensors(int(op.Outputs(0))).ShapeAsNumpy()
        weight = graph.Tensors(int(op.Inputs(1))).ShapeAsNumpy()
        per_output = weight[1] * weight[2] * (weight[3] if code == BuiltinOperator.CONV_2D else 1)
        total += int(np.prod(out)) * int(per_output)
    return total


def test_real_tflite_model(zoo):
    info = inspect_model(zoo("blazeface"))
    assert info["format"] == "tflite"
    assert info["macs"] == tflite_conv_macs(zoo("blazeface"))
    assert info["ops"]["DEQUANTIZE"] == 74 and info["ops"]["CONV_2D"] == 21 and info["ops"]["DEPTHWISE_CONV_2D"] == 16
    assert [o["name"] for o in info["outputs"]] == ["regressors", "classificators"]
    assert info["param_bytes"] == 4 * info["params"] > 0


def test_inspect_corrupt_model(tmp_path):
    path = tmp_path / "half.onnx"
    path.write_bytes(b"\x0a\xff\xff\xff\x0f")
    with pytest.raises(ModelLoadError, match="half.onnx"):
        inspect_model(path)


def test_cli_inspect_json_and_text(zoo, capsys):
    assert main(["inspect", str(zoo("retinaface")), "--input-shape", "input=1,3,240,320", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["shape"] == [1, 3, 240, 320] and info["macs"] > 0
    assert main(["inspect", str(zoo("sface"))]) == 0
    text = capsys.readouterr().out
    assert "fc1" in text and "MACs:" in text and "BatchNormalization" in text


def test_mobilefacenet_matches_its_paper():
    """MobileFaceNet (Chen et al. 2018): 0.99 M parameters and 221 M MAdds at 112x112."""
    from edgetvm.zoo.architectures import mobilefacenet

    info = inspect_model(mobilefacenet())
    assert abs(info["macs"] / 221e6 - 1) < 0.01
    assert abs(info["params"] / 0.99e6 - 1) < 0.05


def tflite_op_codes(path) -> list[tuple[str, int]]:
    """(builtin op name, index of its first input tensor) per operator, read with the tflite package."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    codes = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        codes.append((names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())], int(op.Inputs(0))))
    return codes


def test_tflite_op_mapping_of_a_sparse_model(zoo):
    """pose_detection: every DENSIFY reads a sparse constant, every DEQUANTIZE a float16 constant
    (38 of them read a DENSIFY's output), the rest goes through TVM's converter."""
    info = inspect_model(zoo("pose_detection"))
    codes = tflite_op_codes(zoo("pose_detection"))
    rows = {(row["op"], row["mapping"]): row["count"] for row in info["op_mapping"]}
    assert rows.pop(("DENSIFY", "densified sparse")) == sum(code == "DENSIFY" for code, _ in codes) == 38
    assert rows.pop(("DEQUANTIZE", "folded float16 constant")) == sum(code == "DEQUANTIZE" for code, _ in codes)
    assert set(mapping for _, mapping in rows) == {"builtin converter"}
    assert sum(row["count"] for row in info["op_mapping"]) == info["num_ops"] == len(codes)
    assert "densified sparse" in render_text(info) and "refused" not in info


def test_refused_tflite_model_is_described_and_exits_2(zoo, tmp_path, capsys):
    from tflite.BuiltinOperator import BuiltinOperator as Op

    path = tmp_path / "blazeface_rnn.tflite"
    path.write_bytes(blazeface_with_ops_replaced(zoo("blazeface").read_bytes(), {Op.PAD: Op.RNN}))
    assert main(["inspect", str(path), "--json"]) == 2
    info = json.loads(capsys.readouterr().out)
    assert {"op": "RNN", "count": 11, "mapping": "refused"} in info["op_mapping"]
    assert "RNN" in info["refused"] and "params" not in info
    assert main(["inspect", str(path)]) == 2
    text = capsys.readouterr().out
    assert "RNN" in text and "refused: " in text


def test_onnx_op_mapping_names_refused_ops():
    info = inspect_model(tiny_models.with_unsupported_ops())
    assert info["op_mapping"] == [{"op": "Celu", "count": 2, "mapping": "refused"},
                                  {"op": "Det", "count": 1, "mapping": "refused"},
                                  {"op": "Relu", "count": 1, "mapping": "builtin converter"}]
    mapped = inspect_model(tiny_models.conv_relu_gemm())["op_mapping"]
    assert {row["mapping"] for row in mapped} == {"builtin converter"} and len(mapped) == 4

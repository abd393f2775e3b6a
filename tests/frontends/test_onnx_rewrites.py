"""The ONNX rewrites on small models that reproduce the real models' constructs, each checked
against onnxruntime (or, for blocked DequantizeLinear, which onnxruntime rejects, against the
ONNX specification written out element by element)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tvm.relax.frontend.onnx import from_onnx

import edgetvm
from edgetvm.frontends.onnx import import_onnx, prepare_onnx
from edgetvm.frontends.onnx_rewrites import (
    drop_weight_inputs,
    dropout_to_identity,
    fold_constant_dequantize,
    fold_shape_subgraphs,
    normalize_resize_inputs,
    set_input_shapes,
)

from . import tiny_models
from .checks import relative_error
from .test_real_models import onnxruntime_outputs


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.filterwarnings("ignore")
def test_stock_tvm_rejects_the_fpn_construct(rng):
    """Why the rewrites exist: TVM 0.27 alone cannot import RetinaFace's Resize, even with static shapes."""
    fpn = tiny_models.fpn_with_shape_arithmetic(rng)
    with pytest.raises(AssertionError, match="Only one of scales and sizes"):
        from_onnx(fpn, shape_dict={"x": [1, 3, 32, 48]})


def test_shape_subgraphs_fold_to_constants_and_stay_exact(rng):
    fpn = tiny_models.fpn_with_shape_arithmetic(rng)
    notes: list[str] = []
    static = fold_shape_subgraphs(set_input_shapes(fpn, {"x": (2, 3, 32, 48)}), notes)
    assert {"Shape", "Gather", "Unsqueeze", "Slice", "Cast"}.isdisjoint(op_types(static))
    assert op_types(static) == ["Conv", "Conv", "Resize", "Add", "Reshape"]
    assert notes and "constant" in notes[0]
    x = rng.standard_normal((2, 3, 32, 48)).astype(np.float32)
    expected = onnxruntime_outputs(fpn, x)["y"]
    np.testing.assert_array_equal(onnxruntime_outputs(static, x)["y"], expected)


@pytest.mark.filterwarnings("ignore")
def test_resize_empty_scales_are_dropped(rng):
    fpn = tiny_models.fpn_with_shape_arithmetic(rng)
    static = fold_shape_subgraphs(set_input_shapes(fpn, {"x": (1, 3, 32, 48)}))
    notes: list[str] = []
    normalized = normalize_resize_inputs(static, notes)
    (resize,) = [n for n in normalized.graph.node if n.op_type == "Resize"]
    assert list(resize.input)[1:3] == ["", ""] and resize.input[3]
    assert notes == ["dropped empty roi/scales inputs of 1 Resize node(s) that carry sizes"]
    assert normalize_resize_inputs(normalized) is normalized
    # What TVM's converter rejected before, it now imports (numerics: the compile test below).
    from_onnx(normalized, shape_dict={"x": [1, 3, 32, 48]})


def test_fpn_compiles_and_matches_onnxruntime(rng):
    fpn = tiny_models.fpn_with_shape_arithmetic(rng)
    compiled = edgetvm.compile(fpn, "host", input_shapes={"x": (1, 3, 40, 56)})
    x = rng.standard_normal((1, 3, 40, 56)).astype(np.float32)
    (out,) = compiled.outputs
    assert (out.name, out.shape) == ("y", (1, 4 * 20 * 28 // 2, 2))
    assert relative_error(compiled(x), onnxruntime_outputs(fpn, x)["y"]) <= 1e-5


def blocked_dequantize_by_the_spec(q, scale, zero_point, block_size):
    """y[i, j] = (q[i, j] - zp[i, j // B]) * s[i, j // B], one element at a time."""
    out = np.empty(q.shape, np.float32)
    for i in range(q.shape[0]):
        for j in range(q.shape[1]):
            b = j // block_size
            out[i, j] = np.float32(int(q[i, j]) - int(zero_point[i, b])) * scale[i, b]
    return out


@pytest.mark.parametrize("block_size", [4, 9, 27])
def test_blocked_dequantize_folds_to_the_spec(rng, block_size):
    model, parts = tiny_models.blocked_dequantize_conv(rng, block_size)
    notes: list[str] = []
    folded = fold_constant_dequantize(model, notes)
    assert "DequantizeLinear" not in op_types(folded)
    assert notes == ["folded 1 DequantizeLinear of constant weights to float32 initializers (1 blocked, block_size > 0)"]
    (weights,) = [onnx.numpy_helper.to_array(t) for t in folded.graph.initializer if t.name == "wf"]
    expected = blocked_dequantize_by_the_spec(parts["q"], parts["scale"], parts["zero_point"], block_size)
    np.testing.assert_array_equal(weights, expected)


def test_blocked_dequantize_model_compiles_and_matches_onnxruntime_on_the_folded_model(rng):
    model, _ = tiny_models.blocked_dequantize_conv(rng)
    compiled = edgetvm.compile(model, "host")
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    reference = onnxruntime_outputs(fold_constant_dequantize(model), x)["y"]
    assert relative_error(compiled(x), reference) <= 1e-5


def test_per_axis_dequantize_fold_is_bit_exact_against_onnxruntime(rng):
    import onnxruntime as ort

    model = tiny_models.per_axis_dequantize_conv(rng)
    folded = fold_constant_dequantize(model)
    assert op_types(folded) == ["Conv"]
    (weights,) = [onnx.numpy_helper.to_array(t) for t in folded.graph.initializer if t.name == "w"]
    # onnxruntime's own DequantizeLinear kernel on the same initializers (the weights alone: a
    # convolution would add its own, optimisation-dependent, rounding).
    dq_only = onnx.helper.make_model(
        onnx.helper.make_graph([model.graph.node[0]], "dq", [],
                               [onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [4, 3, 3, 3])],
                               list(model.graph.initializer)),
        opset_imports=model.opset_import, ir_version=8)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(dq_only.SerializeToString(), options, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(weights, session.run(None, {})[0])
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert relative_error(onnxruntime_outputs(folded, x)["y"], onnxruntime_outputs(model, x)["y"]) <= 1e-6


def test_dequantize_can_be_kept_for_an_int8_mode(rng):
    model = tiny_models.per_axis_dequantize_conv(rng)
    proto, _, _, notes = prepare_onnx(model, fold_dequantize=False)
    assert "DequantizeLinear" in op_types(proto)
    assert not any("DequantizeLinear" in n for n in notes)


def test_weight_inputs_unused_inputs_and_dropout(rng):
    model = tiny_models.legacy_weights_as_inputs(rng)
    notes: list[str] = []
    cleaned = dropout_to_identity(drop_weight_inputs(model, notes), notes)
    assert [i.name for i in cleaned.graph.input] == ["data"]
    assert op_types(cleaned) == ["Conv", "Identity"]
    assert len(notes) == 3
    imported = import_onnx(model)
    assert [t.name for t in imported.inputs] == ["data"]
    assert [t.name for t in imported.outputs] == ["y"]
    assert any("weights, not inputs" in n for n in imported.notes)


def test_rewrites_never_mutate_their_argument(rng):
    model = tiny_models.fpn_with_shape_arithmetic(rng)
    before = model.SerializeToString()
    prepare_onnx(model, {"x": (1, 3, 16, 16)})
    assert model.SerializeToString() == before


def test_model_sources_path_bytes_proto_and_external_weights(tmp_path, zoo):
    model = tiny_models.conv_relu_gemm()
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    ext = tmp_path / "ext" / "tiny_ext.onnx"
    ext.parent.mkdir()
    external = onnx.ModelProto()
    external.CopyFrom(model)  # onnx.save turns the proto it saves into external references
    onnx.save(external, ext, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
              size_threshold=0)
    sources = [model, model.SerializeToString(), path, str(ext)]
    specs = [(import_onnx(s).inputs, import_onnx(s).outputs) for s in sources]
    assert all(s == specs[0] for s in specs)
    (ext.parent / "w.bin").unlink()
    with pytest.raises(edgetvm.errors.ModelLoadError, match="external weight file"):
        import_onnx(ext)
    from edgetvm.frontends import load_model

    assert load_model(zoo("blazeface").read_bytes()).format == "tflite"


@pytest.mark.parametrize("shape, axis, block_size", [((128,), 0, 64), ((10,), 0, 4), ((2, 3, 10), 2, 3),
                                                     ((6, 5), 0, 4), ((6, 5), -1, 2)])
def test_blocked_dequantize_any_axis(rng, shape, axis, block_size):
    """Blocks along any axis, partial last blocks, and SFace's 1-D bias (128 values, 2 blocks of 64)."""
    from edgetvm.frontends.onnx_rewrites.dequantize import dequantize_array

    q = rng.integers(-128, 128, shape, dtype=np.int8)
    scale_shape = list(shape)
    scale_shape[axis] = -(-shape[axis] // block_size)
    scale = rng.random(scale_shape).astype(np.float32) + 0.1
    zero_point = rng.integers(-4, 5, scale_shape, dtype=np.int8)
    expected = np.empty(shape, np.float32)
    for index in np.ndindex(*shape):
        block = list(index)
        block[axis] //= block_size
        block = tuple(block)
        expected[index] = np.float32(int(q[index]) - int(zero_point[block])) * scale[block]
    np.testing.assert_array_equal(dequantize_array(q, scale, zero_point, axis, block_size), expected)


def test_static_input_dims_can_be_overridden(rng):
    """A fully convolutional model declared at 8x8 compiled at 12x10: shapes follow, and a note says so."""
    model = tiny_models.per_axis_dequantize_conv(rng)
    compiled = edgetvm.compile(model, "host", input_shapes={"x": (1, 3, 12, 10)})
    assert compiled.outputs[0].shape == (1, 4, 12, 10)
    assert "input 'x' declared [1, 3, 8, 8], compiled at [1, 3, 12, 10]" in compiled.imported.notes
    x = rng.standard_normal((1, 3, 12, 10)).astype(np.float32)
    reference_model = set_input_shapes(fold_constant_dequantize(model), {"x": (1, 3, 12, 10)})
    assert relative_error(compiled(x), onnxruntime_outputs(reference_model, x)["y"]) <= 1e-5

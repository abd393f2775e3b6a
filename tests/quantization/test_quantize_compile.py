"""``edgetvm.compile(..., quantize="int8")``: calibrated float models, QDQ and QOperator ONNX, the CLI."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgetvm
from edgetvm.errors import InputError
from edgetvm.quantization.calibrate import RangeObserver, entropy_threshold

from .models import relu6_block, small_cnn, two_head_detector

SHAPE = (1, 3, 16, 16)


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _inputs(seed, count):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, SHAPE).astype(np.float32) for _ in range(count)]


@pytest.fixture(scope="module")
def float_model():
    return small_cnn()


@pytest.fixture(scope="module")
def int8_compiled(float_model):
    return edgetvm.compile(float_model, quantize="int8", calibration=_inputs(1, 8))


def test_calibrated_int8_tracks_onnxruntime_float(float_model, int8_compiled):
    session = ort.InferenceSession(float_model.SerializeToString())
    for x in _inputs(2, 4):
        ref = session.run(None, {"x": x})[0]
        got = int8_compiled(x)
        assert _cosine(got, ref) > 0.995
        assert np.max(np.abs(got - ref)) < 0.05 * np.max(np.abs(ref))


def test_report_lists_kernels_float_ops_and_weight_sizes(int8_compiled):
    details = int8_compiled.report.details["quantize"]
    # By default the conv reading the 3-channel image stays float (mixed precision, the report
    # says which and why); the depthwise conv is int8 in and out. The last conv feeds only float
    # ops (GlobalAveragePool): int8 accumulation, float output; the Gemm producing the model output
    # is weight-only int8 (float input).
    kernels = details["int8_kernels"]
    assert (kernels["conv2d"], kernels["conv2d_float_out"], kernels["add"], kernels["dense_weight_only"]) == (1, 1, 1, 1)
    assert len(details["kept_float"]) == 1 and "model input" in details["kept_float"][0], details["kept_float"]
    # The kept conv (with its bias and ReLU), GlobalAveragePool, Flatten and the LeakyReLU after the
    # float-output conv run in float and the report says so.
    # (permute_dims: the layout op the int8 kernels' folding may leave, not arithmetic.)
    assert set(details["float_ops"]) - {"permute_dims"} == {"nn.conv2d", "add", "nn.relu", "mean", "reshape",
                                                            "nn.leakyrelu"}
    # The float first conv is a quarter of this tiny model's weights (0.01 % of SFace's).
    assert details["weight_bytes_after"] < details["weight_bytes_before"] / 1.6
    # No pair to equalize: the first conv's output also feeds the residual add, the others feed
    # the add or float ops; the report says why for each.
    equalization = details["cross_layer_equalization"]
    assert equalization["pairs"] == 0 and any("read by 2" in why for why in equalization["declined"]), equalization
    assert "Quantize(int8)" in int8_compiled.report.passes
    # 7-bit weights cost accuracy (SFace's cosine falls under 0.99): full range unless asked for.
    assert "weights per-channel symmetric int8 ([-127, 127])" in details["scheme"], details["scheme"]


def test_keep_float_names_chains_and_empty_quantizes_all(float_model):
    everything = edgetvm.compile(float_model, quantize="int8", calibration=_inputs(1, 8),
                                 quantize_options={"keep_float": []})
    details = everything.report.details["quantize"]
    kernels = details["int8_kernels"]
    assert (kernels["conv2d"], kernels["conv2d_float_out"], kernels["add"], kernels["dense_weight_only"]) == (2, 1, 1, 1)
    assert details["kept_float"] == []
    assert details["weight_bytes_after"] < details["weight_bytes_before"] / 1.9
    assert set(details["float_ops"]) - {"permute_dims"} == {"mean", "reshape", "nn.leakyrelu"}
    ref = ort.InferenceSession(float_model.SerializeToString()).run(None, {"x": _inputs(3, 1)[0]})[0]
    assert _cosine(everything(_inputs(3, 1)[0]), ref) > 0.99
    # Naming the residual add's chain (conv, depthwise, add, conv, gemm in graph order) keeps it float.
    named = edgetvm.compile(float_model, quantize="int8", calibration=_inputs(1, 4),
                            quantize_options={"keep_float": [details["chains_quantized"][2]]})
    assert named.report.details["quantize"]["int8_kernels"].get("add", 0) == 0
    assert "named in keep_float" in named.report.details["quantize"]["kept_float"][0]
    with pytest.raises(InputError, match="names nonexistent, which no quantizable chain"):
        edgetvm.compile(float_model, quantize="int8", calibration=_inputs(1, 2),
                        quantize_options={"keep_float": ["nonexistent"]})
    with pytest.raises(InputError, match="quantize_options bogus"):
        edgetvm.compile(float_model, quantize="int8", calibration=_inputs(1, 2), quantize_options={"bogus": 1})


def test_relu6_folds_into_the_int8_kernels_before_it():
    # ONNX Clip(x, 0, 6) arrives as two max/min kernels; as one clip (MinMaxToClip) it becomes the
    # integer clamp of the conv before it: no float clip, transpose or quantize between int8 kernels.
    model = relu6_block()
    compiled = edgetvm.compile(model, quantize="int8", calibration=_inputs(1, 8))
    details = compiled.report.details["quantize"]
    assert details["int8_kernels"] == {"conv2d": 3, "identity": 3}, details["int8_kernels"]
    # Only the kept-float stem (conv, bias, its ReLU6), the residual add (its sum feeds only the
    # float pool, so it stays float) and the pool.
    assert {op: n for op, n in details["float_ops"].items() if op != "permute_dims"} == \
        {"nn.conv2d": 1, "add": 2, "clip": 1, "mean": 1}, details["float_ops"]
    session = ort.InferenceSession(model.SerializeToString())
    for x in _inputs(2, 3):
        ref = session.run(None, {"x": x})[0]
        assert _cosine(compiled(x), ref) > 0.999


def test_calibration_modes_clip_outliers():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, 200_000).astype(np.float32)
    values[:5] = 40.0  # a few outliers, well under the 0.01 % the percentile mode clips
    observer = RangeObserver()
    observer.update(values, rng, keep_samples=True)
    lo_mm, hi_mm = observer.range("minmax")
    lo_p, hi_p = observer.range("percentile")
    lo_e, hi_e = observer.range("entropy")
    assert hi_mm == 40.0
    assert 3.0 < hi_p < 6.0 and -6.0 < lo_p < -3.0
    assert 2.0 < hi_e < 40.0 and lo_e > lo_mm - 1e-6
    # On a clean Gaussian the KL threshold sits a few sigma out, well inside the max.
    assert 2.0 < entropy_threshold(rng.normal(0, 1, 100_000)) < 5.0


def test_range_observer_keeps_only_the_channel_statistics_asked_for():
    """Equalization reads per-channel extremes, calibration per-channel sums: an observer asked for
    one skips the other (SFace int8: 2.2 s of a 28 s compile), and its tensor range stays the full
    observer's exactly, after a NaN too."""
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, 1, (1, 8, 5, 7)).astype(np.float32) for _ in range(3)]
    batches[1][0, 3, 2, 2] = 9.5
    batches[2][0, 5, 0, 1] = -7.25
    full, sums, extremes = RangeObserver(), RangeObserver(extremes=False), RangeObserver(sums=False)
    for batch in batches:
        for observer in (full, sums, extremes):
            observer.update(batch, rng, keep_samples=False)
    assert full.range("minmax") == sums.range("minmax") == extremes.range("minmax") == (-7.25, 9.5)
    assert sums.channel_lo is None and extremes.channel_sum is None
    np.testing.assert_array_equal(sums.channel_sum, full.channel_sum)
    np.testing.assert_array_equal(extremes.channel_lo, full.channel_lo)
    np.testing.assert_array_equal(extremes.channel_hi, full.channel_hi)
    with_nan = batches[0].copy()
    with_nan[0, 2, 1, 1] = np.nan
    seen = set()
    for observer in (RangeObserver(), RangeObserver(extremes=False), RangeObserver(sums=False)):
        for batch in (batches[1], with_nan, batches[2]):
            observer.update(batch, rng, keep_samples=False)
        seen.add((observer.lo, observer.hi))
    assert len(seen) == 1


@pytest.mark.parametrize("mode", ["percentile", "entropy"])
def test_other_calibration_modes_compile_and_stay_accurate(float_model, mode):
    compiled = edgetvm.compile(float_model, quantize="int8", calibration=_inputs(1, 8), calibration_mode=mode)
    ref = ort.InferenceSession(float_model.SerializeToString()).run(None, {"x": _inputs(3, 1)[0]})[0]
    assert _cosine(compiled(_inputs(3, 1)[0]), ref) > 0.99
    assert compiled.report.details["quantize"]["calibration_mode"] == mode


def _quantize_static(float_model, tmp_path, quant_format):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": x} for x in _inputs(1, 8)])

        def get_next(self):
            return next(self.items, None)

    src, dst = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(float_model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=quant_format, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_prequantized_onnx_keeps_integer_weights(float_model, tmp_path, fmt):
    from onnxruntime.quantization import QuantFormat

    path = _quantize_static(float_model, tmp_path, getattr(QuantFormat, fmt))
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ("QLinearConv" in ops) == (fmt == "QOperator")
    compiled = edgetvm.compile(path, quantize="int8")
    details = compiled.report.details["quantize"]
    assert details["int8_kernels"].get("conv2d", 0) + details["int8_kernels"].get("conv2d_float_out", 0) == 3, details
    assert details["calibration_mode"].startswith("none")
    session = ort.InferenceSession(str(path))
    float_ref = ort.InferenceSession(float_model.SerializeToString())
    for x in _inputs(4, 3):
        ref = session.run(None, {"x": x})[0]
        got = compiled(x)
        # onnxruntime requantizes in float, edgetvm in fixed point: a few output steps apart at most.
        assert _cosine(got, ref) > 0.995
        assert _cosine(got, float_ref.run(None, {"x": x})[0]) > 0.99


def test_conv_integer_imports_and_runs(tmp_path, rng):
    from onnx import TensorProto, helper, numpy_helper

    w = rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1])], "ci",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(128, np.uint8), "xz")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    compiled = edgetvm.compile(model, quantize="int8")
    np.testing.assert_array_equal(compiled(x), ref)


def test_float_model_without_calibration_is_a_clear_error(float_model):
    with pytest.raises(InputError, match="calibration"):
        edgetvm.compile(float_model, quantize="int8")
    with pytest.raises(InputError, match="calibration_mode"):
        edgetvm.compile(float_model, quantize="int8", calibration=_inputs(1, 1), calibration_mode="bogus")
    with pytest.raises(InputError, match="int4"):
        edgetvm.compile(float_model, quantize="int4", calibration=_inputs(1, 1))


def test_cli_compiles_with_a_calibration_directory(float_model, tmp_path):
    from edgetvm.cli import main

    model_path = tmp_path / "small.onnx"
    onnx.save(float_model, model_path)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, x in enumerate(_inputs(1, 4)):
        np.save(calib / f"{i}.npy", x)
    out = tmp_path / "small_int8.so"
    assert main(["compile", str(model_path), "--quantize", "int8", "--calib", str(calib), "-o", str(out)]) == 0
    x = _inputs(5, 1)[0]
    np.save(tmp_path / "x.npy", x)
    runner = edgetvm.load(out)
    ref = ort.InferenceSession(float_model.SerializeToString()).run(None, {"x": x})[0]
    assert _cosine(runner(x), ref) > 0.99
    assert main(["compile", str(model_path), "--quantize", "int8", "-o", str(tmp_path / "x.so")]) == 2


def test_calibration_ranges_line_up_with_a_multi_output_model():
    """RetinaFace's int8 regression: with several outputs (a tuple-valued output var) the calibration
    taps were read two fields off, so every activation got its neighbour's range (face score 0.998
    -> 0.01). Each range must be the tensor's own [min, max], checked against onnxruntime."""
    from tvm import relax

    from edgetvm.frontends.onnx_qdq import load_model_for_quantization
    from edgetvm.host import run_on_host
    from edgetvm.quantization.calibrate import calibration_arrays, collect_ranges
    from edgetvm.quantization.annotate import plan_quantization

    model = two_head_detector()
    imported = load_model_for_quantization(model, {"x": SHAPE})
    mod = relax.transform.FoldConstant()(imported.mod)
    plan = plan_quantization(mod["main"])
    samples = _inputs(3, 3)
    ranges = collect_ranges(mod, plan.tensors_to_calibrate(), calibration_arrays(samples, imported.inputs),
                            evaluate=run_on_host)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info("feat", onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString())
    feat = np.stack([session.run(["feat"], {"x": x})[0] for x in samples])
    x_all = np.stack(samples)
    x_var = mod["main"].params[0]
    feat_chain = next(chain for chain in plan.chains if chain.inputs[0].same_as(x_var))
    np.testing.assert_allclose(ranges[x_var], (x_all.min(), x_all.max()), rtol=0, atol=0)
    np.testing.assert_allclose(ranges[feat_chain.tail], (feat.min(), feat.max()), rtol=1e-4, atol=1e-5)


def test_multi_output_detector_int8_tracks_onnxruntime():
    """Both heads of a two-output model stay close to float (end to end: calibrate, fold, run)."""
    model = two_head_detector()
    compiled = edgetvm.compile(model, quantize="int8", calibration=_inputs(1, 8))
    session = ort.InferenceSession(model.SerializeToString())
    for x in _inputs(2, 2):
        ref_loc, ref_conf = session.run(None, {"x": x})
        got_loc, got_conf = compiled(x)
        assert np.max(np.abs(got_loc - ref_loc)) < 0.05 * np.max(np.abs(ref_loc))
        assert np.max(np.abs(got_conf - ref_conf)) < 0.05


def test_cli_quantize_options_reach_compile():
    from edgetvm.cli.main import build_parser
    from edgetvm.cli.options import compile_kwargs

    parser = build_parser()
    args = parser.parse_args(["compile", "m.onnx", "-o", "m.so", "--quantize", "int8", "--calib", "d", "--no-equalize",
                              "--keep-float", "lv3, lv9"])
    assert compile_kwargs(args)["quantize_options"] == {"equalize": False, "keep_float": ["lv3", "lv9"]}
    args = parser.parse_args(["compile", "m.onnx", "-o", "m.so", "--quantize", "int8", "--keep-float", "none"])
    assert compile_kwargs(args)["quantize_options"] == {"keep_float": []}
    args = parser.parse_args(["compile", "m.onnx", "-o", "m.so", "--quantize", "int8", "--reduce-range"])
    assert compile_kwargs(args)["quantize_options"] == {"reduce_range": True}
    # The defaults (equalize, the image conv float) reach SFace's goal: no options passed.
    assert "quantize_options" not in compile_kwargs(parser.parse_args(["compile", "m.onnx", "-o", "m.so", "--quantize", "int8"]))


def test_a_float_tensor_read_by_two_int8_kernels_is_quantized_once():
    # RetinaFace's SSH outputs (ReLU, 3 int8 convs each) were quantized once per reader: 9 kernels for 3 tensors.
    from tvm import relax

    calibration = _inputs(1, 8)
    compiled = edgetvm.compile(two_head_detector(channels=16), "cortex-a7", quantize="int8", calibration=calibration)
    quantizes = [b for block in compiled.scheduled["main"].body.blocks for b in block.bindings
                 if isinstance(b.value, relax.Call) and "quantize" in str(getattr(b.value.args[0], "name_hint", ""))
                 and "dequantize" not in str(b.value.args[0].name_hint)]
    assert len(quantizes) == 1, [b.value.args[0].name_hint for b in quantizes]
    session = ort.InferenceSession(two_head_detector(channels=16).SerializeToString())
    x = _inputs(2, 1)[0]
    for ours, theirs in zip(edgetvm.compile(two_head_detector(channels=16), quantize="int8", calibration=calibration)(x),
                            session.run(None, {"x": x})):
        assert _cosine(ours, theirs) > 0.99

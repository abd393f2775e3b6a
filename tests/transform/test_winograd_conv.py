"""transform.WinogradConv (kernels/winograd.py, schedules/cpu.py's schedule_neon_f32_batch_gemm): the
transform matrices, the rewritten graph, where it must not fire, and its numbers against a float64
numpy conv on the host and under qemu (the ARM build bit-exact with the host build), and on RetinaFace
against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import edgetvm
from edgetvm.cli.main import build_parser
from edgetvm.cli.options import compile_kwargs
from edgetvm.kernels.winograd import input_transform, output_transform, transformed_weight, winograd_matrices
from edgetvm.transform import WinogradConv
from edgetvm.transform.winograd_conv import pays_on_arm, tile_size

from ..kernels.arm_checks import ARM, assert_arm_matches_reference_and_host, schedule_rule
from ..schedules.nets import NetBuilder


def conv_reference(x: np.ndarray, weight: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """float64 3x3 stride-1 conv, NHWC x HWIO, pads (top, left, bottom, right): a sum over the taps."""
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    ho, wo = xp.shape[1] - 2, xp.shape[2] - 2
    return sum(np.einsum("nhwc,co->nhwo", xp[:, ky:ky + ho, kx:kx + wo], weight[ky, kx].astype(np.float64))
               for ky in range(3) for kx in range(3))


def nhwc_conv_module(shape: tuple[int, int, int, int], cout: int, pads, seed: int = 0, tail: str = "relu",
                     weight: np.ndarray | None = None):
    """``tail(conv2d(x, w))`` NHWC x HWIO, as the graph is after ``channels_last``; (module, weight)."""
    rng = np.random.default_rng(seed)
    cin = shape[3]
    if weight is None:
        weight = (rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
    bias = rng.standard_normal((1, 1, 1, cout)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=list(pads), data_layout="NHWC",
                                           kernel_layout="HWIO"))
            if tail == "relu":
                y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(y, relax.const(bias)))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), weight


def run_host(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(relax.build(mod, "llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def op_names(func: relax.Function) -> list[str]:
    names = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call):
                names.append(value.args[0].name_hint if value.op.name == "relax.call_tir" else value.op.name)
    return names


@pytest.mark.parametrize("m", [4, 6])
def test_matrices_compute_the_1d_correlation_exactly(m):
    at, g, bt = ([[float(v) for v in row] for row in mat] for mat in winograd_matrices(m))
    d, w = np.random.default_rng(0).standard_normal(m + 2), np.random.default_rng(1).standard_normal(3)
    y = np.array(at) @ ((np.array(g) @ w) * (np.array(bt) @ d))
    np.testing.assert_allclose(y, [d[i:i + 3] @ w for i in range(m)], rtol=0, atol=1e-13)
    # The transforms' coefficients are exact in float32 (G's fractions go into U at compile time).
    assert all(np.float32(v) == v for row in at + bt for v in row)


def test_f43_uses_lavins_interpolation_points():
    _, _, bt = winograd_matrices(4)
    assert [[int(v) for v in row] for row in bt] == [
        [4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]


def test_tile_size_is_ncnns_rule():
    assert tile_size(128, 128) == 6 and tile_size(16, 64) == 6
    assert tile_size(129, 64) == 4 and tile_size(64, 256) == 4


def test_rewritten_graph_is_pad_input_transform_matmul_output_transform_then_the_tail():
    mod, weight = nhwc_conv_module((1, 10, 9, 8), 12, (1, 1, 1, 1))
    rewrite = WinogradConv()
    out = rewrite(mod)
    assert op_names(out["main"]) == ["relax.nn.pad", "winograd_input_f6", "relax.matmul", "winograd_output_f6",
                                     "relax.add", "relax.nn.relu"]
    assert rewrite.findings == {"rewritten": 1, "f4": 0, "f6": 1, "declined": []}
    # U = G g G^T, (m+2)^2 points x C_in x C_out, a compile-time constant.
    matmul = next(b.value for b in out["main"].body.blocks[0].bindings
                  if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.matmul")
    np.testing.assert_array_equal(matmul.args[1].value.numpy(), transformed_weight(weight, 6))
    assert matmul.args[1].value.numpy().shape == (64, 8, 12)
    # 10x9 output: 2x2 tiles of 6, input padded to 14x14.
    assert [int(d) for d in matmul.args[0].ty.shape] == [64, 4, 8]


def test_f43_above_128_channels():
    mod, _ = nhwc_conv_module((1, 6, 6, 132), 8, (1, 1, 1, 1))
    rewrite = WinogradConv()
    out = rewrite(mod)
    assert rewrite.findings["f4"] == 1 and "winograd_input_f4" in op_names(out["main"])


def _conv(attrs: dict, shape=(1, 8, 8, 8), kernel=(3, 3, 8, 8), dtype="float32"):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const(np.ones(kernel, dtype))
            out = bb.emit_output(relax.op.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO", **attrs))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("mod,reason", [
    (_conv({"strides": [2, 2], "padding": [1, 1]}), "stride [2, 2]"),
    (_conv({"dilation": [2, 2], "padding": [2, 2]}), "dilation [2, 2]"),
    (_conv({"groups": 8, "padding": [1, 1]}, kernel=(3, 3, 1, 8)), "groups 8"),
    (_conv({"padding": [1, 1]}, kernel=(3, 3, 8, 6)), "8 -> 6 channels"),
    (_conv({"padding": [1, 1]}, dtype="int8"), "int8 conv"),
])
def test_declines_say_why(mod, reason):
    rewrite = WinogradConv()
    out = rewrite(mod)
    assert op_names(out["main"]) == ["relax.nn.conv2d"]
    (declined,) = rewrite.findings["declined"]
    assert reason in declined["reason"] and rewrite.findings["rewritten"] == 0


def test_a_5x5_conv_is_not_a_candidate():
    rewrite = WinogradConv()
    out = rewrite(_conv({"padding": [2, 2]}, kernel=(5, 5, 8, 8)))
    assert op_names(out["main"]) == ["relax.nn.conv2d"] and rewrite.findings["declined"] == []


def test_arm_cost_rule_declines_small_convs():
    assert pays_on_arm(16, 16, 10, 10) is None and pays_on_arm(8, 4, 4, 4) is None
    assert "input channels" in pays_on_arm(4, 64, 40, 40)
    assert "output 3x8" in pays_on_arm(64, 64, 3, 8)
    rewrite = WinogradConv()
    mod, _ = nhwc_conv_module((1, 3, 3, 32), 32, (1, 1, 1, 1))
    rewrite(mod)
    assert rewrite.findings["rewritten"] == 0 and "output 3x3" in rewrite.findings["declined"][0]["reason"]
    # Without the rule every conv that fits is rewritten.
    forced = WinogradConv(cost_rule=False)
    forced(mod)
    assert forced.findings["rewritten"] == 1


@pytest.mark.parametrize("shape,cout,pads", [
    ((1, 12, 12, 16), 16, (1, 1, 1, 1)),     # F(6,3), 2x2 whole tiles
    ((1, 11, 7, 8), 12, (1, 2, 0, 1)),       # F(6,3), asymmetric padding, a partial last tile row/column
    ((1, 9, 10, 8), 4, (0, 0, 0, 0)),        # no padding: 7x8 output
    ((2, 6, 5, 132), 8, (1, 1, 1, 1)),       # F(4,3), batch 2
])
def test_host_numerics_against_a_float64_conv(shape, cout, pads):
    mod, weight = nhwc_conv_module(shape, cout, pads, tail="none")
    rewrite = WinogradConv()
    out = rewrite(mod)
    assert rewrite.findings["rewritten"] == 1
    x = np.random.default_rng(3).uniform(-1, 1, shape).astype(np.float32)
    want = conv_reference(x, weight, pads)
    got = run_host(out, x)
    # F(6,3)'s transforms round larger sums than the direct conv; measured up to 1.1e-5.
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2e-5


def test_transforms_vectorize_four_channels():
    for func in (input_transform(6, 1, 2, 2, 8), output_transform(6, 1, 2, 2, 10, 11, 8)):
        script = func.script()
        assert "T.vectorized(4)" in script and "T.alloc_local" in script


def _conv_net(cin: int, cout: int, hw: int, seed: int = 0):
    b = NetBuilder((1, cin, hw, hw), seed=seed)
    y = b.prelu(b.conv("input", cin, cout, 3), cout)
    return b.build(y, (1, cout, hw, hw))


def _net_reference(model):
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w, b, slope = (inits[n] for n in ("w1", "b2", "c4"))

    def reference(x):
        y = conv_reference(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), (1, 1, 1, 1)).transpose(0, 3, 1, 2)
        y = y + b.reshape(1, -1, 1, 1)
        return np.where(y > 0, y, y * slope.reshape(1, -1, 1, 1))

    return reference


@pytest.mark.arm
@pytest.mark.parametrize("cin,cout,hw", [(16, 16, 14), (32, 24, 10), (16, 132, 9)])
def test_arm_build_matches_numpy_and_is_bit_exact_with_the_host_build(cin, cout, hw, tmp_path):
    model = _conv_net(cin, cout, hw)
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    assert compiled.report.details["WinogradConv"]["rewritten"] == 1
    assert schedule_rule(compiled, "neon-gemm:batch")
    x = np.random.default_rng(1).uniform(-1, 1, (1, cin, hw, hw)).astype(np.float32)
    assert_arm_matches_reference_and_host(compiled, model, _net_reference(model), x, 1, tmp_path, bit_exact=True)


def test_compile_option_turns_it_off():
    model = _conv_net(16, 16, 12)
    assert "WinogradConv" not in edgetvm.compile(model, ARM, num_threads=1, winograd=False).report.details
    on = edgetvm.compile(model, "host", num_threads=1)
    off = edgetvm.compile(model, "host", num_threads=1, winograd=False)
    assert on.report.details["WinogradConv"]["rewritten"] == 1 and "WinogradConv" in on.report.passes
    assert "WinogradConv" not in off.report.details
    assert not any(k.startswith("winograd") for k in off.report.details["schedules"]["kernels"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 16, 12, 12)).astype(np.float32)
    want = _net_reference(model)(x)
    for compiled in (on, off):
        assert np.max(np.abs(np.asarray(compiled(x)) - want)) / np.max(np.abs(want)) < 1e-5


def test_a_compile_asked_to_compress_keeps_the_convs_direct():
    # U would store 64/9 times the conv's weights and lose the clustering's shared values.
    model = _conv_net(16, 16, 12)
    compiled = edgetvm.compile(model, "host", num_threads=1, compress={"entropy": "huffman"})
    assert "WinogradConv" not in compiled.report.details
    assert not any(k.startswith("winograd") for k in compiled.report.details["schedules"]["kernels"])


def test_a_size_first_compile_keeps_the_convs_direct():
    model = _conv_net(16, 16, 12)
    compiled = edgetvm.compile(model, ARM, num_threads=1, optimize="size")
    assert "WinogradConv" not in compiled.report.details
    assert not any(k.startswith("winograd") for k in compiled.report.details["schedules"]["kernels"])


def test_cli_no_winograd_switches_it_off():
    parse = build_parser().parse_args
    assert compile_kwargs(parse(["compile", "m.onnx", "-o", "m.so", "--no-winograd"]))["winograd"] is False
    assert compile_kwargs(parse(["compile", "m.onnx", "-o", "m.so"]))["winograd"] is True


def test_retinaface_with_winograd_matches_onnxruntime():
    import onnxruntime as ort

    path = edgetvm.zoo.fetch("retinaface")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})
    compiled = edgetvm.compile(path, "host", input_shapes={"input": (1, 3, 160, 160)}, num_threads=1)
    # RetinaFace's 20 dense 3x3 stride-1 convs, 3 of which its graph computes twice
    # (EliminateCommonSubexpr keeps one of each): 17 rewritten.
    assert compiled.report.details["WinogradConv"]["f6"] == 17
    got = compiled(x)
    for g, w in zip(got, want):
        # Measured 4.4e-6 (direct 4.7e-6): the bound is 1e-4.
        assert np.max(np.abs(np.asarray(g) - w)) / np.max(np.abs(w)) < 1e-4

"""Scheduled kernels compute what the unscheduled ones do, and whole nets match onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm

import edgetvm
from edgetvm.frontends import load_model
from edgetvm.schedules.lower import legalize_and_fuse, schedule_kernels
from edgetvm.targets import resolve_target

from . import nets

HOST = resolve_target("host")


def _onnxruntime(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> None:
    # Relative to the output's scale: float32 sums in a different order differ by ~1e-6 relative.
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _run_kernel(func: tvm.tirx.PrimFunc, arrays: list[np.ndarray]) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=HOST.tvm_target)
    dev = tvm.cpu()
    tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
    lib["main"](*tensors)
    return tensors[-1].numpy()


CASES = {
    "conv3x3_s1": (lambda: nets.conv_net(3, 1), "register-tiled:conv2d", {"winograd": False}),
    # Winograd's transforms come pre-scheduled; its GEMM over the transform points is a dense kernel.
    "conv3x3_s1_winograd": (lambda: nets.conv_net(3, 1), "register-tiled:dense", {}),
    "conv3x3_s2": (lambda: nets.conv_net(3, 2), "register-tiled:conv2d"),
    "conv5x5_s2": (lambda: nets.conv_net(5, 2, cout=8, hw=15), "register-tiled:conv2d"),
    "conv1x1_residual": (lambda: nets.conv_net(1, 1, cin=16, cout=16, residual=True), "register-tiled:conv2d"),
    "depthwise_s1": (lambda: nets.depthwise_net(1), "register-tiled:depthwise"),
    "depthwise_s2": (lambda: nets.depthwise_net(2, hw=15), "register-tiled:depthwise"),
    "dense": (lambda: nets.dense_net(), "register-tiled:dense"),
    "pooling": (lambda: nets.pool_net(), "register-tiled:pool"),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_each_kernel_kind_matches_onnxruntime(case, threads, rng):
    build, rule, *options = CASES[case]
    model = build()
    compiled = edgetvm.compile(model, "host", num_threads=threads, **(options[0] if options else {}))
    rules = compiled.report.details["schedules"]["rules"]
    assert rule in rules, f"{case}: expected a {rule} kernel, the schedules report {rules}"
    x = rng.standard_normal(compiled.inputs[0].shape).astype(np.float32)
    _assert_close(compiled(x), _onnxruntime(model, x))


def test_scheduled_kernels_equal_unscheduled_ones(rng):
    """Kernel by kernel, on random inputs: the schedule changes loop order only, never values."""
    imported = load_model(nets.mini_mobilefacenet())
    fused = legalize_and_fuse(imported.mod, HOST)
    report = {}
    scheduled = schedule_kernels(fused, HOST, 2, report)
    assert report["rules"].get("unscheduled", 0) == 0, report["kernels"]
    # Everything but the input/output layout transposes is register-tiled, parallel loops included.
    assert report["rules"].get("generic", 0) <= 2, report["kernels"]
    checked = 0
    for gvar, func in fused.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        arrays = [rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype)) for p in func.params]
        expected = _run_kernel(func, [a.copy() for a in arrays])
        actual = _run_kernel(scheduled[gvar.name_hint], [a.copy() for a in arrays])
        _assert_close(actual, expected)
        checked += 1
    assert checked >= 5


def test_tails_are_computed_at_the_output_tile():
    """bias + BN + PReLU (and the residual add) live in the conv kernel, not in kernels of their own."""
    compiled = edgetvm.compile(nets.mini_mobilefacenet(), "host", num_threads=1)
    kernels = compiled.report.details["schedules"]["kernels"]
    assert not any(name.startswith(("fused_prelu", "prelu", "fused_add", "add")) for name in kernels), kernels
    assert any("conv2d" in name and "prelu" in name for name in kernels), kernels
    # Only the NCHW <-> NHWC transposes of the model input/output are left to the generic rule.
    generic = [name for name, rule in kernels.items() if rule.startswith("generic")]
    assert len(generic) <= 2, kernels


def test_mini_mobilefacenet_two_threads_matches_onnxruntime(rng):
    model = nets.mini_mobilefacenet()
    compiled = edgetvm.compile(model, "host", num_threads=2)
    rules = compiled.report.details["schedules"]["rules"]
    assert rules.get("generic", 0) <= 2 and rules.get("register-tiled:depthwise", 0) == 1, rules
    x = rng.standard_normal(compiled.inputs[0].shape).astype(np.float32)
    _assert_close(compiled(x), _onnxruntime(model, x))


def test_mobilefacenet_matches_onnxruntime(rng):
    from edgetvm.zoo.architectures import mobilefacenet

    model = mobilefacenet()
    compiled = edgetvm.compile(model, "host", num_threads=1)
    rules = compiled.report.details["schedules"]["rules"]
    assert rules.get("unscheduled", 0) == 0 and rules.get("register-tiled:depthwise", 0) > 0, rules
    x = rng.standard_normal(compiled.inputs[0].shape).astype(np.float32)
    _assert_close(compiled(x), _onnxruntime(model, x))


def test_unrecognised_kernels_get_the_generic_schedule_and_stay_exact(rng):
    model = nets.generic_ops_net()
    compiled = edgetvm.compile(model, "host", num_threads=2)
    rules = compiled.report.details["schedules"]["rules"]
    assert rules.get("generic", 0) >= 1 and rules.get("unscheduled", 0) == 0, compiled.report.details["schedules"]
    x = rng.standard_normal(compiled.inputs[0].shape).astype(np.float32)
    _assert_close(compiled(x), _onnxruntime(model, x))



def _nhwc_pool_channel_pad_shortcut(c: int = 42, extra: int = 6, hw: int = 16) -> tvm.IRModule:
    """BlazeFace's strided block (TFLite, NHWC throughout): relu(pad_c(max_pool 2x2/2(x)) + y), the
    channel pad widening c -> c + extra. FuseOps puts pool, pad, add and relu in one kernel."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, hw, hw, c), "float32"))
    y = relax.Var("y", relax.TensorType((1, hw // 2, hw // 2, c + extra), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            pooled = bb.emit(relax.op.nn.max_pool2d(x, 2, 2, layout="NHWC"))
            padded = bb.emit(relax.op.nn.pad(pooled, [0, 0, 0, 0, 0, 0, 0, extra]))
            out = bb.emit_output(relax.op.nn.relu(relax.op.add(padded, y)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("threads", [1, 2])
def test_pooling_with_a_channel_pad_tail_stays_exact(threads, rng):
    """The pool kernel's tail is wider than the pooled tensor: tiling it at the pool's output tile
    (as a same-shape tail) computed the wrong region (BlazeFace off by 983x). Kernel by kernel."""
    fused = legalize_and_fuse(_nhwc_pool_channel_pad_shortcut(), HOST)
    names = [gv.name_hint for gv, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any("max_pool" in n and "pad" in n for n in names), names
    report = {}
    scheduled = schedule_kernels(fused.clone(), HOST, threads, report)
    assert report["rules"].get("unscheduled", 0) == 0, report["kernels"]
    for gvar, func in fused.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        arrays = [rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype)) for p in func.params]
        expected = _run_kernel(func, [a.copy() for a in arrays])
        _assert_close(_run_kernel(scheduled[gvar.name_hint], [a.copy() for a in arrays]), expected)

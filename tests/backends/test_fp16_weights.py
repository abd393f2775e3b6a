"""Float16 weight storage (``weights="fp16"``, ``--weights fp16``) in standalone artifacts and in the
TVM runtime's library.

The blob stores conv and dense weights as float16; a context widens them once at create
(edgetvm_runtime.c: ``vcvt.f32.f16`` on VFPv4 ARM cores, a portable bit conversion elsewhere).
Checked: every finite float16 value survives the round trip exactly (host, Cortex-A7 with vcvt,
Cortex-A9 without), a model whose weights were float16 already (FaceMesh) gives bit-identical
outputs, and a float32 model (Iris) stays within the measured error of float16 rounding.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetvm
from edgetvm import emulate
from edgetvm.backends.standalone import SEGMENT_F16, build_standalone
from edgetvm.zoo import fetch

from .standalone_models import small_convnet

FINITE_HALVES = 63488  # 65536 bit patterns less the 2 * 1024 infinities and NaNs


def every_finite_half() -> np.ndarray:
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    return halves[np.isfinite(halves)].astype(np.float32).reshape(248, 256)


def add_constant_model(w: np.ndarray):
    """y = x + W: with x = 0 the output is the weight the kernel read."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "add_constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(w.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(w.shape))],
        initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_every_finite_half_widens_exactly_on_the_host(tmp_path):
    w = every_finite_half()
    assert w.size == FINITE_HALVES
    compiled = edgetvm.compile(add_constant_model(w), "host", weights="fp16")
    build = build_standalone(compiled.scheduled, compiled.imported, compiled.target, tmp_path, "addw",
                             weights="fp16")
    assert build.weights.float16_tensors == 1 and len(build.weights.blob) == w.size * 2
    so = compiled.export(tmp_path / "addw.so", standalone=True)
    assert json.loads(so.with_name("addw.so.json").read_text())["weights"] == "fp16"
    # The header states the RAM a context adds for the widened copy.
    assert f"plus {w.size * 4} bytes of float32 weights widened" in so.with_name("addw.h").read_text()
    y = edgetvm.load(so)(np.zeros_like(w))
    np.testing.assert_array_equal(y, w)


@pytest.mark.arm
@pytest.mark.parametrize("target", ["cortex-a7", "cortex-a9"])  # vcvt.f32.f16 (VFPv4), portable (VFPv3)
def test_every_finite_half_widens_exactly_on_arm(target, tmp_path):
    w = every_finite_half()
    compiled = edgetvm.compile(add_constant_model(w), target, weights="fp16")
    so = compiled.export(tmp_path / "addw.so", standalone=True)
    result = emulate.run_standalone_arm(so, [np.zeros_like(w)], cpu=compiled.target.qemu_cpu)
    np.testing.assert_array_equal(result.outputs[0], w)


def test_vectors_and_integers_stay_as_they_are(tmp_path):
    """Biases stay float32 (1-D); conv and dense weights become float16."""
    compiled = edgetvm.compile(small_convnet(), "host")
    build = build_standalone(compiled.scheduled, compiled.imported, compiled.target, tmp_path, "small",
                             weights="fp16")
    kinds = {}
    for ref, segment in zip(sorted(build.plan.constants, key=lambda r: r.offset), build.weights.segments):
        assert segment.offset == ref.offset
        kinds[ref.shape] = segment.kind == SEGMENT_F16
    assert kinds and all(f16 == (sum(d > 1 for d in shape) >= 2) for shape, f16 in kinds.items()), kinds
    assert len(build.weights.blob) < 0.6 * len(build.plan.weights)


def test_overflowing_weights_stay_float32(tmp_path):
    w = np.full((4, 8), 1e6, np.float32)  # beyond float16's 65504
    compiled = edgetvm.compile(add_constant_model(w), "host", weights="fp16")
    so = compiled.export(tmp_path / "big.so", standalone=True)
    np.testing.assert_array_equal(edgetvm.load(so)(np.zeros_like(w)), w)


def export_both(model_name: str, tmp_path):
    compiled = edgetvm.compile(fetch(model_name), "host")
    sizes, runners = {}, {}
    for weights in ("fp32", "fp16"):
        compiled.weights = weights
        so = compiled.export(tmp_path / f"{model_name}_{weights}.so", standalone=True)
        sizes[weights], runners[weights] = so.stat().st_size, edgetvm.load(so)
    compiled.weights = "fp32"  # its own runner: the float32 TVM VM
    return compiled, sizes, runners


def test_float16_sourced_model_is_bit_identical(tmp_path, rng):
    """FaceMesh ships float16 weights: storing them as float16 again loses nothing."""
    compiled, sizes, runners = export_both("facemesh", tmp_path)
    x = rng.uniform(-1, 1, compiled.inputs[0].shape).astype(np.float32)
    fp32, fp16 = runners["fp32"].run_dict(x), runners["fp16"].run_dict(x)
    for name in fp32:
        np.testing.assert_array_equal(fp16[name], fp32[name])
    assert sizes["fp32"] - sizes["fp16"] > 0.45 * 2_418_740  # half of FaceMesh's float32 weights


def test_float32_model_stays_within_float16_rounding(tmp_path, rng):
    """Iris ships float32 weights. Measured max|fp16 - fp32| / max|fp32|: 1.5e-4 (landmarks) and
    9e-5 (iris) on uniform [-1, 1] inputs; the bound leaves 6x margin. The float32 artifact
    matches the TVM VM exactly: float16 storage changes nothing on the float32 path."""
    compiled, sizes, runners = export_both("iris", tmp_path)
    x = rng.uniform(-1, 1, compiled.inputs[0].shape).astype(np.float32)
    vm, fp32, fp16 = compiled.run_dict(x), runners["fp32"].run_dict(x), runners["fp16"].run_dict(x)
    for name in vm:
        np.testing.assert_array_equal(fp32[name], vm[name])
        error = np.abs(fp16[name] - fp32[name]).max() / np.abs(fp32[name]).max()
        assert 0 < error <= 1e-3, (name, error)
    assert sizes["fp16"] < 0.6 * sizes["fp32"]


def test_tvm_runtime_library_stores_float16_and_matches_the_standalone_one(tmp_path, rng, capfd):
    """The TVM-runtime library holds the same float16 tensors and widens them once at load
    (``edgetvm_weights``): its outputs equal the standalone fp16 artifact's bit for bit, in about
    half the bytes of its float32 library. Run before export, it still loads without TVM's
    memory-scope warnings (see CompiledModel.export)."""
    fp32 = edgetvm.compile(fetch("iris"), "host")
    fp16 = edgetvm.compile(fetch("iris"), "host", weights="fp16")
    x = rng.uniform(-1, 1, fp16.inputs[0].shape).astype(np.float32)
    in_process = fp16.run_dict(x)
    vm16 = fp16.export(tmp_path / "iris16.so")
    standalone16 = fp16.export(tmp_path / "iris16_sa.so", standalone=True)
    vm32 = fp32.export(tmp_path / "iris32.so")
    capfd.readouterr()
    loaded = edgetvm.load(vm16).run_dict(x)
    assert "Scope Loaded" not in capfd.readouterr().err
    reference = edgetvm.load(standalone16).run_dict(x)
    for name in reference:
        np.testing.assert_array_equal(loaded[name], reference[name])
        np.testing.assert_array_equal(in_process[name], reference[name])
    assert fp16.report.details["float16_weights"] == 81
    # Half of Iris's 2.6 MB of float32 weights saved, less the widening kernels (0.1 MB): 0.455.
    assert vm32.stat().st_size - vm16.stat().st_size > 0.42 * 2_605_200


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgetvm.cli.main", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_cli_weights_fp16(tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(small_convnet(hw=8).SerializeToString())
    proc = cli("compile", model, "-o", tmp_path / "net16.so", "--standalone", "--weights", "fp16", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "net16.so.json").read_text())["weights"] == "fp16"

    proc = cli("compile", model, "-o", tmp_path / "vm.so", "--weights", "fp16", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "vm.so.json").read_text())["weights"] == "fp16"
    vm, standalone = edgetvm.load(tmp_path / "vm.so"), edgetvm.load(tmp_path / "net16.so")
    x = np.linspace(-1, 1, int(np.prod(vm.inputs[0].shape)), dtype=np.float32).reshape(vm.inputs[0].shape)
    expected = standalone.run_dict(x)
    for name, value in vm.run_dict(x).items():
        np.testing.assert_array_equal(value, expected[name])

    proc = cli("compile", model, "-o", tmp_path / "x.so", "--standalone", "--weights", "int4", cwd=tmp_path)
    assert proc.returncode == 2 and "--weights" in proc.stderr

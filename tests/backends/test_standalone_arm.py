"""ARM standalone builds under qemu-arm against the host TVM VM, and the emulation helpers."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import edgetvm
from edgetvm import emulate
from edgetvm.backends.standalone import build_standalone
from edgetvm.targets import ARM_CROSS_CC, resolve_target

from .standalone_models import parallel_model, parallel_reference, small_convnet

pytestmark = pytest.mark.arm


def rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def assert_arm_matches_vm(model, target: str, tmp_path, inputs: list[np.ndarray], *, input_shapes=None,
                          tolerance: float = 1e-5) -> emulate.StandaloneArmResult:
    """Export ``model`` standalone for ``target``, run it under qemu, compare with the host VM."""
    host = edgetvm.compile(model, "host", input_shapes=input_shapes)
    arm = edgetvm.compile(model, target, input_shapes=input_shapes)
    so = tmp_path / "model_arm.so"
    arm.export(so, standalone=True)
    result = emulate.run_standalone_arm(so, inputs, cpu=arm.target.qemu_cpu)
    expected = host.run_dict(*inputs)
    assert [s.name for s in result.output_specs] == list(expected)
    for spec, got in zip(result.output_specs, result.outputs):
        assert got.shape == expected[spec.name].shape
        assert rel_error(got, expected[spec.name]) <= tolerance, spec.name
    return result


def test_small_convnet_arm_matches_host_vm(tmp_path, rng):
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    result = assert_arm_matches_vm(small_convnet(), "cortex-a7", tmp_path, [x])
    assert [s.name for s in result.input_specs] == ["x"]

    # The example program cross-compiles as its comment says and runs under qemu.
    so = tmp_path / "model_arm.so"
    main_c = tmp_path / "model_arm_main.c"
    assert "arm-linux-gnueabihf-gcc -O2 -mfloat-abi=hard" in main_c.read_text()
    exe = tmp_path / "model_arm_main"
    subprocess.run([ARM_CROSS_CC, "-O2", "-mfloat-abi=hard", "-o", str(exe), str(main_c), f"-I{tmp_path}", str(so),
                    "-Wl,-rpath,$ORIGIN"], check=True, capture_output=True)
    x.tofile(tmp_path / "x.bin")
    emulate.run_arm([exe, tmp_path / "x.bin", tmp_path / "y.out", tmp_path / "r1.out"], cpu="cortex-a7")
    y = np.fromfile(tmp_path / "y.out", np.float32).reshape(1, 10)
    np.testing.assert_array_equal(y, result.outputs[0])


def test_mobilefacenet_arm_matches_host_vm(tmp_path, rng):
    from edgetvm.zoo.architectures import mobilefacenet

    model = mobilefacenet()
    x = rng.standard_normal((1, 3, 112, 112)).astype(np.float32)
    assert_arm_matches_vm(model, "cortex-a7", tmp_path, [x])


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("retinaface", (1, 3, 320, 320)), ("retinaface", (1, 3, 640, 640)),
                                         ("sface", (1, 3, 112, 112))])
def test_real_models_arm_match_host_vm(zoo, tmp_path, rng, name, shape):
    import onnx

    path = zoo(name)
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    data = next(i.name for i in graph.input if i.name not in weights)
    input_shapes = {data: shape}
    x = (rng.random(shape) * 255).astype(np.float32)
    assert_arm_matches_vm(path, "cortex-a7", tmp_path, [x], input_shapes=input_shapes)


def test_parallel_kernels_under_qemu_with_two_threads(tmp_path, rng):
    target = resolve_target("cortex-a7")
    build = build_standalone(parallel_model().mod, parallel_model(), target, tmp_path, "par")
    x = rng.standard_normal((64, 512)).astype(np.float32)
    for threads in (1, 2):
        result = emulate.run_standalone_arm(build.so, [x], threads=threads, repeat=3, cpu=target.qemu_cpu)
        np.testing.assert_array_equal(result.outputs[0], parallel_reference(x))


def test_instruction_counts_are_deterministic_and_per_inference(tmp_path, rng):
    target = resolve_target("cortex-a7")
    build = build_standalone(parallel_model().mod, parallel_model(), target, tmp_path, "par")
    x = rng.standard_normal((64, 512)).astype(np.float32)
    once = emulate.run_standalone_arm(build.so, [x], repeat=1, count=True, cpu="cortex-a7").instructions
    assert once == emulate.run_standalone_arm(build.so, [x], repeat=1, count=True, cpu="cortex-a7").instructions
    per_one = emulate.instructions_per_inference(build.so, [x], n=1, cpu="cortex-a7")
    per_three = emulate.instructions_per_inference(build.so, [x], n=3, cpu="cortex-a7")
    assert per_one == per_three
    # 64x512 elements through two kernels: at least one instruction per element, and far less
    # than the start-up of the whole program.
    assert 64 * 512 < per_one < once


def test_run_arm_and_count_instructions_of_a_plain_program(tmp_path):
    source = tmp_path / "loop.c"
    source.write_text("#include <stdio.h>\n#include <stdlib.h>\n"
                      "int main(int argc, char** argv) { volatile long s = 0; long n = atol(argv[1]);\n"
                      "  for (long i = 0; i < n * 1000; ++i) s += i; printf(\"%d\\n\", (int)(s % 7)); return 0; }\n")
    exe = tmp_path / "loop"
    subprocess.run([ARM_CROSS_CC, "-O1", "-o", str(exe), str(source)], check=True)
    run = emulate.run_arm([exe, 2], cpu="cortex-a7", count=True)
    assert run.stdout.strip() == str(sum(range(2000)) % 7)
    per_repeat = emulate.instructions_per_repeat(lambda k: [exe, k], n=2, cpu="cortex-a7")
    # The printed text has the same length for every k, so each repetition costs the same.
    four, two = (emulate.count_instructions([exe, k], cpu="cortex-a7") for k in (4, 2))
    assert four - two == 2 * per_repeat
    with pytest.raises(edgetvm.errors.ArtifactError, match="failed under qemu-arm"):
        emulate.run_arm([exe])  # argv[1] missing: the program crashes


def test_emulation_errors_are_clear(tmp_path, rng, monkeypatch):
    target = resolve_target("cortex-a7")
    build = build_standalone(parallel_model().mod, parallel_model(), target, tmp_path, "par")
    x = rng.standard_normal((64, 512)).astype(np.float32)
    with pytest.raises(edgetvm.errors.ArtifactError, match=r"takes 1 input\(s\) \['x'\], got 2"):
        emulate.run_standalone_arm(build.so, [x, x])
    with pytest.raises(edgetvm.errors.ArtifactError, match="must hold exactly 131072 bytes"):
        emulate.run_standalone_arm(build.so, [x[:10]])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(edgetvm.errors.ToolchainError, match="qemu-arm is not installed"):
        emulate.run_arm(["/bin/true"])


def test_standalone_runner_under_qemu(tmp_path, rng):
    model = small_convnet()
    arm = edgetvm.compile(model, "cortex-a7")
    so = tmp_path / "net.so"
    arm.export(so, standalone=True)
    runner = emulate.standalone_runner(so, arm.inputs, arm.outputs, cpu="cortex-a7")
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    host = edgetvm.compile(model, "host").run_dict(x)
    got = runner.run_dict(x=x)
    assert rel_error(got["y"], host["y"]) <= 1e-5
    with pytest.raises(edgetvm.errors.InputError, match="expected"):
        runner(x[:, :2])

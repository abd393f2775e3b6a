"""Targets are checked before LLVM sees them: one line naming the bad field, never a crash or a flood."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import tvm
from onnx import TensorProto, helper

from edgetvm.artifact import sidecar_path
from edgetvm.errors import TargetError
from edgetvm.targets import PRESETS, resolve_target


def relu_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run_cli(*args, cwd):
    return subprocess.run([str(Path(sys.executable).with_name("edgetvm")), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=150)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("targets") / "relu.onnx"
    onnx.save(relu_model(), path)
    return path


def test_bogus_triple_is_one_line_not_a_segfault(model_file, tmp_path):
    # Before the check, LLVM dereferenced a null target for this triple: exit 139, a native stack.
    proc = run_cli("compile", str(model_file), "--target", json.dumps({"kind": "llvm", "mtriple": "bogus"}),
                   "-o", str(tmp_path / "m.so"), cwd=tmp_path)
    assert proc.returncode not in (0, 70, -11, 139), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "mtriple 'bogus'" in lines[0] and "armv7l-unknown-linux-gnueabihf" in lines[0]
    assert not (tmp_path / "m.so").exists()


def test_bad_mcpu_is_refused_with_llvm_choices(model_file, tmp_path):
    # Before the check: 228 lines of LLVM "not a recognized processor" warnings, then success.
    target = {"kind": "llvm", "mtriple": "armv7l-unknown-linux-gnueabihf", "mcpu": "cortex-a77x",
              "mattr": ["+neon"], "mfloat-abi": "hard"}
    proc = run_cli("compile", str(model_file), "--target", json.dumps(target), "-o", str(tmp_path / "m.so"),
                   cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "mcpu 'cortex-a77x'" in lines[0] and "did you mean" in lines[0] and "cortex-a9" in lines[0]
    assert not (tmp_path / "m.so").exists()


def test_mistyped_feature_gets_did_you_mean():
    with pytest.raises(TargetError, match="feature 'neno'.*did you mean neon"):
        resolve_target({"kind": "llvm", "mtriple": "armv7l-unknown-linux-gnueabihf", "mcpu": "cortex-a7",
                        "mattr": ["+neno"], "mfloat-abi": "hard"})


def test_unknown_preset_did_you_mean():
    with pytest.raises(TargetError, match="did you mean 'armv7-neon'"):
        resolve_target("armv7neon")
    with pytest.raises(TargetError, match="did you mean 'rpi4'"):
        resolve_target("rpi5")


def test_tvm_target_string_and_object_are_accepted():
    preset = PRESETS["cortex-a7"].target
    text = "llvm -mtriple=armv7l-unknown-linux-gnueabihf -mcpu=cortex-a7 -mattr=+neon,+vfp4 -mfloat-abi=hard"
    from_string = resolve_target(text)
    from_object = resolve_target(tvm.target.Target(preset))
    assert from_string.target_dict == preset
    assert from_string.is_arm and from_object.is_arm
    assert {k: from_object.target_dict[k] for k in preset} == preset
    assert str(from_object.tvm_target) == str(tvm.target.Target(preset))


def test_target_string_through_the_cli_compiles(model_file, tmp_path):
    proc = run_cli("compile", str(model_file), "--target", "llvm -mcpu=x86-64", "-o", str(tmp_path / "m.so"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(sidecar_path(tmp_path / "m.so").read_text())["target"]["target"]["mcpu"] == "x86-64"


def test_malformed_target_string():
    with pytest.raises(TargetError, match="-key=value"):
        resolve_target("llvm mcpu cortex-a7")

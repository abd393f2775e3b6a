"""``edgetvm compile|run|inspect|prune`` and the top level, run as a user runs them (a subprocess)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tvm

import edgetvm
from edgetvm.artifact import read_sidecar
from edgetvm.cli.main import build_parser
from edgetvm.emulate import instructions_per_inference

from .conftest import EDGETVM, SHAPE, edgetvm as run_edgetvm


def test_version_and_help_describe_the_tool():
    done = run_edgetvm("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"edgetvm {edgetvm.__version__} (Apache TVM {tvm.__version__})"
    done = run_edgetvm("--help")
    assert done.returncode == 0
    assert "Compile face-analysis CNNs" in done.stdout and "zoo:NAME" in done.stdout
    # Not the module docstring of cli/main.py, which speaks of the code.
    assert "subcommand is one function" not in done.stdout
    # Where the venv's scripts are not on PATH, the module runs the same command.
    module = subprocess.run([sys.executable, "-m", "edgetvm", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert module.returncode == 0 and module.stdout == run_edgetvm("--version").stdout


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("edgetvm",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_command_and_argument_has_help():
    missing = []
    for path, parser in _parsers(build_parser()):
        if len(path) > 1 and not parser.description:
            missing.append(" ".join(path) + " (description)")
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help:
                missing.append(" ".join(path) + " " + ("/".join(action.option_strings) or action.dest))
    assert missing == []


def test_a_closed_stdout_ends_quietly(small_model, tmp_path):
    """`edgetvm inspect --json m.onnx | head -2`: the reader goes away; no internal error, no crash file."""
    crash_dir = tmp_path / "tmp"
    crash_dir.mkdir()
    env = {"TMPDIR": str(crash_dir)}
    proc = subprocess.Popen([*EDGETVM, "inspect", "--json", str(small_model)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    proc.stdout.close()  # the reader is gone before the first line is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert err == "" and list(crash_dir.iterdir()) == []


def test_zoo_models_in_inspect_and_prune(tmp_path):
    done = run_edgetvm("inspect", "zoo:retinaface", "--input-shape", "input=1,3,64,64", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["source"].endswith("retinaface_mnet025.onnx") and info["inputs"][0]["shape"] == [1, 3, 64, 64]
    out = tmp_path / "pruned.onnx"
    done = run_edgetvm("prune", "zoo:retinaface", "--ratio", "0.25", "--input-shape", "input=1,3,64,64", "-o", out)
    assert done.returncode == 0, done.stderr
    assert out.exists() and "pruned" in done.stdout


def test_zoo_models_reach_quantization_and_pruning(tmp_path):
    """``compile --quantize/--prune zoo:...`` get as far as their calibration set (a whole int8 RetinaFace compile
    is minutes): the model was found, and the message names the flag to give."""
    done = run_edgetvm("compile", "zoo:retinaface", "--input-shape", "input=1,3,32,32", "--quantize", "int8",
                       "-o", tmp_path / "q.so")
    assert done.returncode == 2 and "--quantize int8 on a float model needs calibration inputs: give --calib" \
        in done.stderr, done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_edgetvm("compile", "zoo:retinaface", "--input-shape", "input=1,3,32,32", "--prune", "0.25",
                       "--prune-calib", empty, "-o", tmp_path / "p.so")
    assert done.returncode == 2 and f"calibration {empty}: no .npy or image files" in done.stderr, done.stderr


def test_a_misspelt_zoo_model_lists_models_only():
    done = run_edgetvm("inspect", "zoo:retinafce")
    assert done.returncode == 2
    assert "did you mean 'retinaface'" in done.stderr and "zoo:sface" in done.stderr
    for image in ("astronaut", "grace_hopper", "lfw_subset"):
        assert image not in done.stderr


@pytest.mark.parametrize("flags, says", [
    (["--calib", "DIR"], "--calib DIR is the calibration set of --quantize"),
    (["--prune", "0.2", "--calib", "DIR"], "give it as --prune-calib"),
    (["--prune-calib", "DIR"], "--prune-calib DIR is the calibration set of --prune"),
    (["--prune", "0.2", "--prune-calib", "A", "--quantize", "int8", "--calib", "B"], "give one of the two flags"),
    (["--keep-float", "Conv_0"], "--keep-float chooses what --quantize leaves float"),
    (["--reduce-range"], "--reduce-range chooses the int8 weights' range of --quantize"),
])
def test_calibration_flags_nothing_reads_are_refused(small_model, tmp_path, flags, says):
    done = run_edgetvm("compile", small_model, *flags, "-o", tmp_path / "m.so")
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert not (tmp_path / "m.so").exists()


def test_keep_float_and_the_report_use_onnx_node_names(small_model, calib_dir, tmp_path):
    out = tmp_path / "q.so"
    done = run_edgetvm("compile", small_model, "--quantize", "int8", "--calib", calib_dir, "--keep-float", "Conv_2",
                       "--explain", "-o", out)
    assert done.returncode == 0, done.stderr
    # --explain says what stayed float and why, in the model's names.
    assert "kept float: Conv_2: conv2d kept float, named in keep_float (--keep-float)" in done.stdout
    assert re.search(r"Quantize\(int8\): 4 chain\(s\) quantized", done.stdout), done.stdout
    quantize = read_sidecar(out)["report"]["details"]["quantize"]
    assert quantize["chains_quantized"] == ["Conv_0", "Add_4", "Conv_5", "Gemm_9"]
    done = run_edgetvm("compile", small_model, "--quantize", "int8", "--calib", calib_dir, "--keep-float", "lv3",
                       "-o", tmp_path / "bad.so")
    assert done.returncode == 2
    assert "(--keep-float) names lv3" in done.stderr and "Conv_2" in done.stderr


@pytest.fixture(scope="module")
def host_artifact(small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("host") / "m.so"
    done = run_edgetvm("compile", small_model, "-o", out)
    assert done.returncode == 0, done.stderr
    return out


def test_run_repeat_prints_latency(host_artifact, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).uniform(-1, 1, SHAPE).astype(np.float32))
    done = run_edgetvm("run", host_artifact, "-i", x, "--repeat", "5")
    assert done.returncode == 0, done.stderr
    match = re.search(r"latency over 5 run\(s\) \(ms\): median ([\d.]+)  min ([\d.]+)  max ([\d.]+)", done.stdout)
    assert match, done.stdout
    median, low, high = (float(v) for v in match.groups())
    assert 0 < low <= median <= high
    assert run_edgetvm("run", host_artifact, "-i", x, "--repeat", "0").returncode == 2


def test_run_refuses_an_input_that_is_not_npy(host_artifact, tmp_path):
    table = tmp_path / "x.csv"
    table.write_text(",".join(["0.5"] * 768) + "\n")
    done = run_edgetvm("run", host_artifact, "-i", table)
    assert done.returncode == 2
    assert f"{table} is not a .npy file" in done.stderr and "numpy.save" in done.stderr


@pytest.mark.arm
def test_arm_artifacts_run_and_count_under_qemu(small_model, tmp_path):
    plain = tmp_path / "vm.so"
    assert run_edgetvm("compile", small_model, "--target", "armv7-neon", "-o", plain).returncode == 0
    done = run_edgetvm("run", plain, "-i", tmp_path / "missing.npy")
    assert done.returncode == 2 and "cannot read" in done.stderr
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).uniform(-1, 1, SHAPE).astype(np.float32))
    done = run_edgetvm("run", plain, "-i", x, "--emulate")
    assert done.returncode == 2 and "compile it with --standalone" in done.stderr, done.stderr

    standalone = tmp_path / "sa.so"
    done = run_edgetvm("compile", small_model, "--target", "armv7-neon", "--standalone", "-o", standalone)
    assert done.returncode == 0, done.stderr
    # The header and example main it wrote are listed, and exist.
    for path in (tmp_path / "sa.h", tmp_path / "sa_main.c", tmp_path / "sa.so.json"):
        assert f"wrote {path}" in done.stdout and path.exists(), done.stdout
    done = run_edgetvm("run", standalone, "-i", x, "--emulate")
    assert done.returncode == 0, done.stderr
    count = int(re.search(r"guest instructions per inference: ([\d,]+)", done.stdout).group(1).replace(",", ""))
    # The same N+1 minus 1 count taken here; the two differ only by what qemu's plugin sees of the C library.
    expected = instructions_per_inference(standalone, [np.load(x)], cpu=read_sidecar(standalone)["target"]
                                          .get("qemu_cpu") or None)
    assert count == pytest.approx(expected, rel=0.01)
    assert count > 16 * 16 * 16 * 9  # at least the first conv's multiply-accumulates


@pytest.mark.parametrize("command, says", [
    (["compile", "{model}", "--prune", "1.5", "-o", "m.so"], "argument --prune: 1.5: give the fraction of channels "
                                                            "to remove, in [0, 1)"),
    (["compile", "{model}", "--prune", "0.2", "--prune-criterion", "reconstruction", "-o", "m.so"],
     "--prune-criterion reconstruction ranks channels on calibration inputs: give --prune-calib DIR"),
    (["prune", "{model}", "--ratio", "1", "-o", "p.onnx"], "argument --ratio: 1: give the fraction"),
    (["prune", "{model}", "--criterion", "activation", "-o", "p.onnx"], "--criterion activation ranks channels on "
                                                                        "calibration inputs: give --calib DIR"),
    (["prune", "{model}", "--allocation", "sensitivity", "-o", "p.onnx"], "--allocation sensitivity measures"),
    (["prune", "{model}", "--layer-ratio", "Conv*=2", "-o", "p.onnx"], "--layer-ratio 'Conv*=2': write PATTERN="),
    (["prune", "{model}", "--allocation", "global", "--layer-ratio", "Conv*=0.2", "-o", "p.onnx"],
     "--allocation global spreads one --ratio over all layer groups; --layer-ratio sets each group's own"),
])
def test_pruning_settings_are_refused_by_flag(small_model, tmp_path, command, says):
    done = run_edgetvm(*[str(small_model) if a == "{model}" else a for a in command], cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_optimize_size_flag(small_model, tmp_path):
    from edgetvm.cli.options import compile_kwargs
    from edgetvm.errors import InputError

    def kwargs_of(*argv: str) -> dict:
        return compile_kwargs(build_parser().parse_args(["compile", "m.onnx", "-o", "m.so", *argv]))

    assert kwargs_of("--standalone", "--optimize", "size")["optimize"] == "size"
    assert "optimize" not in kwargs_of("--standalone") and "optimize" not in kwargs_of("--optimize", "speed")
    with pytest.raises(InputError, match="--optimize size builds the standalone C module: add --standalone"):
        kwargs_of("--optimize", "size")
    proc = run_edgetvm("compile", small_model, "--standalone", "--optimize", "size", "-o", tmp_path / "small.so")
    assert proc.returncode == 0, proc.stderr
    assert read_sidecar(tmp_path / "small.so")["optimize"] == "size"
    refused = run_edgetvm("compile", small_model, "--standalone", "--optimize", "tiny", "-o", tmp_path / "x.so")
    assert refused.returncode != 0 and "--optimize: invalid choice: 'tiny'" in refused.stderr

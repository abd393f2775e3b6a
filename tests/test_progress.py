"""Progress on long steps (edgetvm/progress.py): stage lines and bars on a terminal's stderr, nothing
with --quiet, through a pipe, or from the Python API unless asked."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgetvm
from edgetvm import progress

EDGETVM = str(Path(sys.executable).with_name("edgetvm"))
STAGES = ["edgetvm: importing tiny.onnx", "edgetvm: graph passes", "edgetvm: lowering and scheduling the kernels",
          "edgetvm: building the host library", "edgetvm: exporting "]


def _tiny_model_file(tmp_path: Path) -> Path:
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              initializer=[numpy_helper.from_array(w, "w")])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _run_on_terminal(argv: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal, as a user's shell does; its output."""
    master, slave = pty.openpty()
    # A fresh pty has 0x0 cells, a terminal window 80 columns or so (tqdm sizes its bar by them).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout), b"".join(chunks).decode(errors="replace")


def test_compile_on_a_terminal_shows_its_stages(tmp_path):
    model = _tiny_model_file(tmp_path)
    code, out = _run_on_terminal([EDGETVM, "compile", str(model), "-o", str(tmp_path / "m.so")])
    assert code == 0, out
    for stage in STAGES:
        assert stage in out, out
    assert "scheduling kernels" in out  # the per-kernel bar


def test_quiet_and_a_pipe_show_no_progress(tmp_path):
    model = _tiny_model_file(tmp_path)
    for argv in ([EDGETVM, "-q", "compile", str(model), "-o", str(tmp_path / "a.so")],
                 [EDGETVM, "compile", str(model), "-o", str(tmp_path / "b.so"), "--quiet"]):
        code, out = _run_on_terminal(argv)
        assert code == 0, out
        assert not any(stage in out for stage in STAGES), out
    proc = subprocess.run([EDGETVM, "compile", str(model), "-o", str(tmp_path / "c.so")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "edgetvm: importing" not in proc.stderr and "\r" not in proc.stderr


def test_api_is_quiet_unless_asked(tmp_path, capsys):
    model = _tiny_model_file(tmp_path)
    edgetvm.compile(str(model))
    assert capsys.readouterr().err == ""
    edgetvm.compile(str(model), progress=True)
    err = capsys.readouterr().err
    assert "edgetvm: importing tiny.onnx" in err and "edgetvm: lowering and scheduling the kernels" in err
    assert not progress.enabled()  # only for that call


def test_bar_and_stage_cost_nothing_when_off(capsys):
    items = [1, 2, 3]
    assert progress.bar(items) is items
    with progress.stage("nothing to see"):
        pass
    assert capsys.readouterr().err == ""
    with progress.shown(True):
        assert list(progress.bar(items, desc="counting")) == items
        with progress.stage("a step"):
            pass
    err = capsys.readouterr().err
    assert "edgetvm: a step ..." in err and "edgetvm: a step: done in" in err

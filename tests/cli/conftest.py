"""The command line as a user runs it: ``edgetvm`` in a subprocess, on a small ONNX model written to disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from ..quantization.models import small_cnn

# The console script of this environment (what `pip install` puts on PATH); `python -m` where it is absent.
_SCRIPT = Path(sys.executable).with_name("edgetvm")
EDGETVM = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "edgetvm.cli.main"]
SHAPE = (1, 3, 16, 16)


def edgetvm(*args, timeout: float = 140, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``edgetvm ARGS...``; its exit code, stdout and stderr as text."""
    return subprocess.run([*EDGETVM, *(str(a) for a in args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """A 16x16 CNN (conv, depthwise, residual add, gemm) whose ONNX nodes are named by the frontend (Conv_0 ...)."""
    path = tmp_path_factory.mktemp("model") / "small.onnx"
    onnx.save(small_cnn(), str(path))
    return path


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(1)
    for i in range(4):
        np.save(path / f"x{i}.npy", rng.uniform(-1, 1, SHAPE).astype(np.float32))
    return path

"""The check every fp32 ARMv7 microkernel test ends with: the kernel under qemu against a float64
numpy reference and against the host build."""

from __future__ import annotations

import numpy as np

import edgetvm
from edgetvm import emulate

ARM = "cortex-a7"


def assert_arm_matches_reference_and_host(compiled, model, reference, x: np.ndarray, threads: int, tmp_path) -> None:
    """``compiled`` (``model`` built for ARM with ``threads``) run under qemu on ``x`` is within 1e-5
    relative (of the output's largest magnitude) of ``reference(x)`` and of the host build."""
    so = compiled.export(tmp_path / "kernel.so", standalone=True)
    got = emulate.run_standalone_arm(so, [x], threads=threads, cpu=compiled.target.qemu_cpu).outputs[0]
    host = edgetvm.compile(model, "host", num_threads=1)(x)
    host = np.asarray(host[0] if isinstance(host, (list, tuple)) else host)
    want = reference(x)
    scale = np.max(np.abs(want))
    assert np.max(np.abs(got - want)) / scale < 1e-5
    assert np.max(np.abs(got - host)) / scale < 1e-5


def schedule_rule(compiled, prefix: str) -> str | None:
    """The first kernel schedule rule of ``compiled`` starting with ``prefix`` (``neon-gemm``, ...)."""
    rules = [r for r in compiled.report.details["schedules"]["kernels"].values() if r.startswith(prefix)]
    return rules[0] if rules else None

"""The check every fp32 ARMv7 microkernel test ends with: the kernel under qemu against a float64
numpy reference and against the host build, and the float64 reference of a windowed conv."""

from __future__ import annotations

import numpy as np

import edgetvm
from edgetvm import emulate

ARM = "cortex-a7"


def assert_arm_matches_reference_and_host(compiled, model, reference, x: np.ndarray, threads: int, tmp_path,
                                          bit_exact: bool = False) -> None:
    """``compiled`` (``model`` built for ARM with ``threads``) run under qemu on ``x`` is within 1e-5
    relative (of the output's largest magnitude) of ``reference(x)`` and of the host build
    (``bit_exact``: equal to the host build, bit for bit)."""
    so = compiled.export(tmp_path / "kernel.so", standalone=True)
    got = emulate.run_standalone_arm(so, [x], threads=threads, cpu=compiled.target.qemu_cpu).outputs[0]
    host = edgetvm.compile(model, "host", num_threads=1)(x)
    host = np.asarray(host[0] if isinstance(host, (list, tuple)) else host)
    want = reference(x)
    scale = np.max(np.abs(want))
    assert np.max(np.abs(got - want)) / scale < 1e-5
    assert np.max(np.abs(got - host)) / scale < 1e-5
    if bit_exact:
        np.testing.assert_array_equal(got.view(np.uint32), host.astype(np.float32).view(np.uint32))


def schedule_rule(compiled, prefix: str) -> str | None:
    """The first kernel schedule rule of ``compiled`` starting with ``prefix`` (``neon-gemm``, ...)."""
    rules = [r for r in compiled.report.details["schedules"]["kernels"].values() if r.startswith(prefix)]
    return rules[0] if rules else None


def window_conv_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, slope: np.ndarray, stride: int,
                          depthwise: bool) -> np.ndarray:
    """float64 ``prelu(conv(x, weight) + bias, slope)``, NCHW x OIHW, padding ``k // 2`` on every side:
    a sum over the window taps of strided input slices (depthwise: each channel by its own weight)."""
    cout, _, k, _ = weight.shape
    pad = k // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (xp.shape[2] - k) // stride + 1, (xp.shape[3] - k) // stride + 1
    out = np.zeros((1, cout, ho, wo)) + bias.reshape(1, -1, 1, 1)
    for ky in range(k):
        for kx in range(k):
            window = xp[:, :, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
            if depthwise:
                out += window * weight[:, 0, ky, kx].reshape(1, -1, 1, 1)
            else:
                out += np.einsum("nchw,oc->nohw", window, weight[:, :, ky, kx])
    return np.where(out > 0, out, out * slope.reshape(1, -1, 1, 1))

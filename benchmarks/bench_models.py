"""The models the host benchmarks compare, with a seeded input each (shared by bench_fusion and bench_tuning)."""

from __future__ import annotations

import numpy as np

RETINAFACE_SHAPES = {"input": (1, 3, 240, 320)}


def load(name: str):
    """(model for edgetvm, ONNX model for onnxruntime, input shapes, input array)."""
    rng = np.random.default_rng(0)
    if name == "mobilefacenet":
        from edgetvm.zoo.architectures import mobilefacenet

        model = mobilefacenet()
        return model, model, None, rng.standard_normal((1, 3, 112, 112)).astype(np.float32)
    from edgetvm.frontends.onnx import prepare_onnx
    from edgetvm.zoo import fetch

    path = fetch(name)
    shapes = RETINAFACE_SHAPES if name == "retinaface" else None
    reference, _, resolved, _ = prepare_onnx(path, shapes)
    (shape,) = resolved.values()
    return path, reference, shapes, rng.uniform(0, 255, shape).astype(np.float32)

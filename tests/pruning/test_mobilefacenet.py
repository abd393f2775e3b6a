"""Lossless pruning on MobileFaceNet (Chen et al. 2018) with planted zero-gamma channels."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from edgetvm.pruning.prune import prune_model
from edgetvm.zoo.architectures import mobilefacenet

from .nets import initializer_shapes, run_onnx


def plant_zero_gammas(model, every: int = 3, per_layer: int = 8, seed: int = 0):
    """gamma = 0 for ``per_layer`` channels of every ``every``-th BN: those channels output beta."""
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    planted = {}
    for node in [n for n in model.graph.node if n.op_type == "BatchNormalization"][::every]:
        gamma = numpy_helper.to_array(inits[node.input[1]]).copy()
        if gamma.size < 2 * per_layer:
            continue
        idx = rng.choice(gamma.size, size=per_layer, replace=False)
        gamma[idx] = 0.0
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(gamma, node.input[1]))
        planted[node.name] = sorted(idx.tolist())
    return planted


def test_lossless_pruning_of_mobilefacenet_leaves_the_embedding_unchanged():
    model = mobilefacenet()
    planted = plant_zero_gammas(model)
    assert len(planted) >= 10
    pruned = prune_model(model, 0.0)
    before = sum(int(np.prod(d)) for d in initializer_shapes(model).values())
    after = sum(int(np.prod(d)) for d in initializer_shapes(pruned.onnx).values())
    removed = sum(g["channels"] - g["kept"] for g in pruned.report["groups"])
    # Planted channels that feed a residual add stay (the sum is not constant), and so do those
    # whose constant passes a zero-padded depthwise conv (folding them would need an offset map).
    assert removed >= 8 * len(planted) // 3 and after < before
    assert all(g["kept"] == g["channels"] - g.get("removed_constant", 0) for g in pruned.report["groups"])
    assert set(pruned.report["recovery"]["folded"].values()) == {"per-channel"}
    name = model.graph.input[0].name
    for seed in (1, 2):
        x = np.random.default_rng(seed).normal(size=(1, 3, 112, 112)).astype(np.float32)
        want, got = run_onnx(model, x)[0], run_onnx(pruned.onnx, x)[0]
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max())), (name, np.abs(got - want).max())

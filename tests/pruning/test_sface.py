"""The real SFace model (int8 block-quantized weights): pruned, written back as float ONNX that
onnxruntime runs, computing what the pruned Relax graph computes."""

from __future__ import annotations

import numpy as np

from edgetvm.passes.prune_numpy_eval import NumpyEvaluator
from edgetvm.prune import prune_model
from edgetvm.zoo import load_astronaut

from .nets import run_onnx


def test_sface_pruned_onnx_matches_the_pruned_graph(zoo):
    pruned = prune_model(zoo("sface"), 0.3)
    changed = [g for g in pruned.report["groups"] if g["kept"] < g["channels"]]
    assert len(changed) >= 10 and all(g["kept"] % 4 == 0 for g in changed)
    face = load_astronaut()[50:190:5, 158:298:5].astype(np.float32)  # 28x28 crop around the face
    face = np.kron(face.transpose(2, 0, 1), np.ones((4, 4), np.float32))[None]  # -> 1x3x112x112
    want = NumpyEvaluator()(pruned.result.func, pruned.result.weights, [[face]])[0][0]
    got = run_onnx(pruned.onnx, face)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))

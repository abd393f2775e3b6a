"""The real SFace model (int8 block-quantized weights): pruned, written back as float ONNX that
onnxruntime runs, computing what the pruned Relax graph computes."""

from __future__ import annotations

import numpy as np
import pytest

from edgetvm.pruning.numpy_eval import NumpyEvaluator
from edgetvm.pruning.prune import prune_model
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


def _bench_faces():
    """The benchmark's face sets (benchmarks/bench_pruning.py): calibration and held-out faces."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pruning.py"
    spec = importlib.util.spec_from_file_location("bench_pruning", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sface_keeps_embedding_cosine_at_20_percent_pruned_with_recovery(zoo):
    # 20% of every group's channels removed, ranked by reconstruction and refit by least squares on
    # 48 of the benchmark's calibration faces, embedding cosine to the unpruned model on 16 other faces.
    # Uniform allocation: the default sensitivity allocation probes every group (28 prune-and-refit
    # runs, ~17 min on the loaded CI machine); it has its own test (test_recovery.py) and
    # benchmarks/bench_pruning.py measures the goal (defaults, 192 faces: 0.9515 >= 0.95).
    # Measured here: mean 0.9185; the same with the refit on 24 faces: 0.908 (96 faces and 48
    # evaluation faces: 0.9233; 192: 0.930): a weaker refit fails the threshold.
    bench = _bench_faces()
    calib, evaluation = bench.face_sets(16, 4)
    pruned = prune_model(zoo("sface"), 0.2, calibration=calib, allocation="uniform")
    groups = [g for g in pruned.report["groups"] if "blocked" not in g]
    removed = sum(g["channels"] - g["kept"] for g in groups) / sum(g["channels"] for g in groups)
    assert abs(removed - 0.2) < 0.01 and all(g["kept"] % 4 == 0 and g["kept"] > 0 for g in groups)
    run = NumpyEvaluator()
    got = [r[0] for r in run(pruned.result.func, pruned.result.weights, [[x] for x in evaluation])]
    want = [r[0] for r in run_onnx_all(zoo("sface"), evaluation)]
    cos = bench.cosines(got, want)
    assert cos.mean() >= 0.912, cos.mean()


def run_onnx_all(path, images):
    from edgetvm.frontends.onnx import prepare_onnx

    model = prepare_onnx(path)[0]  # SFace lists its weights as graph inputs: the prepared model has them folded
    return [run_onnx(model, x) for x in images]

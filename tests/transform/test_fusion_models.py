"""The fusion passes on whole face networks: no batch_norm survives, and outputs still match onnxruntime.

MobileFaceNet is built from Chen et al. 2018's table with seeded weights (edgetvm.zoo.architectures);
RetinaFace (MobileNet-0.25) and SFace are the real models of models.md. SFace's weights are
block-quantized, which onnxruntime cannot run, so its reference is the frontend's ONNX-level
rewrite of the model (DequantizeLinear folded into float initializers), run by onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from tvm import relax

import edgetvm.api as api
from edgetvm.frontends import load_model
from edgetvm.frontends.onnx import prepare_onnx
from edgetvm.transform.pipeline import fusion_passes, run_passes
from edgetvm.zoo.architectures import mobilefacenet

from .relax_numerics import has_op

RETINAFACE_SHAPES = {"input": (1, 3, 240, 320)}


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def onnxruntime_outputs(model, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def fused(model, shapes=None):
    imported = load_model(model, shapes)
    mod, ran = run_passes(imported.mod, fusion_passes())
    return imported, mod, dict(ran)


def assert_matches_onnxruntime(model, reference, shapes, scale: float):
    compiled = api.compile(model, input_shapes=shapes)
    assert "FoldBatchNorm" in compiled.report.passes
    x = np.random.default_rng(0).uniform(0, scale, compiled.inputs[0].shape).astype("float32")
    got = compiled(x)
    got = got if isinstance(got, (list, tuple)) else [got]
    want = onnxruntime_outputs(reference, {compiled.inputs[0].name: x})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert relative_error(g, w) < 1e-4
    return compiled


@pytest.fixture(scope="module")
def mobilefacenet_model():
    return mobilefacenet()


def test_mobilefacenet_every_batch_norm_folds(mobilefacenet_model):
    imported, mod, findings = fused(mobilefacenet_model)
    assert has_op(imported.mod, "relax.nn.batch_norm")
    assert not has_op(mod, "relax.nn.batch_norm")
    bn = findings["FoldBatchNorm"]
    assert bn["folded"] == bn["batch_norms"] > 0 and bn["declined"] == []


def test_mobilefacenet_compiled_with_fusion_matches_onnxruntime(mobilefacenet_model):
    compiled = assert_matches_onnxruntime(mobilefacenet_model, mobilefacenet_model, None, 1.0)
    details = compiled.report.details["FoldBatchNorm"]
    assert details["folded"] == details["batch_norms"]


def test_sface_batch_norms_fold_or_become_scale_shift(zoo):
    _, mod, findings = fused(zoo("sface"))
    assert not has_op(mod, "relax.nn.batch_norm")
    bn = findings["FoldBatchNorm"]
    assert bn["folded_into"].get("matmul") == 1  # the 1-D batch norm after the final Gemm
    # The one after the last PReLU has no linear producer: it becomes a scale and shift.
    assert [d["reason"] for d in bn["declined"]] == ["produced by R.nn.prelu, not by conv2d or matmul"]
    assert bn["folded"] + bn["scale_shift"] == bn["batch_norms"]


def test_retinaface_is_left_exactly_as_imported(zoo):
    """Its exporter folded every batch norm already and its LeakyReLUs fuse as they are; only the three
    SSH convs its graph computes twice are computed once."""
    imported, mod, findings = fused(zoo("retinaface"), RETINAFACE_SHAPES)
    assert not has_op(mod, "relax.nn.batch_norm")
    tvm.ir.assert_structural_equal(mod, relax.transform.EliminateCommonSubexpr()(imported.mod))
    assert findings["FoldBatchNorm"]["batch_norms"] == 0


def test_sface_compiled_with_fusion_matches_onnxruntime(zoo):
    reference, *_ = prepare_onnx(zoo("sface"))
    assert_matches_onnxruntime(zoo("sface"), reference, None, 255.0)


@pytest.mark.slow
def test_retinaface_compiled_with_fusion_matches_onnxruntime(zoo):
    reference, *_ = prepare_onnx(zoo("retinaface"), RETINAFACE_SHAPES)
    assert_matches_onnxruntime(zoo("retinaface"), reference, RETINAFACE_SHAPES, 255.0)

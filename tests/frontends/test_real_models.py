"""The four real face models of models.md through ``edgetvm.compile``: host numerics against the
reference runtime, and ARMv7 hard-float NEON exports.

Reference runtimes: onnxruntime on the original RetinaFace; onnxruntime on YuNet/SFace after
edgetvm's numpy fold of their blocked DequantizeLinear (onnxruntime 1.32 rejects ``block_size``,
so the float model it runs is the one ``fold_constant_dequantize`` exports); LiteRT on BlazeFace.
Tolerance: max|edgetvm - reference| / max|reference| <= 1e-4 for every output.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgetvm
from edgetvm.frontends.onnx_rewrites import drop_weight_inputs, fold_constant_dequantize
from edgetvm.zoo import fetch

from .checks import (RETINAFACE_SHAPE, assert_arm_hard_float_library, assert_outputs_match, litert_outputs,
                     neon_q_float_ops)

MODELS = {
    # name: (input fixture, input_shapes for compile)
    "retinaface": ("retinaface_input", {"input": RETINAFACE_SHAPE}),
    "yunet": ("yunet_input", None),
    "sface": ("sface_input", None),
    "blazeface": ("blazeface_input", None),
}


def onnxruntime_outputs(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {feed.name: x})))


def reference_outputs(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    path = fetch(name)
    if name == "blazeface":
        return litert_outputs(path, x)
    model = onnx.load(path)
    if name in ("yunet", "sface"):
        model = fold_constant_dequantize(drop_weight_inputs(model))
    return onnxruntime_outputs(model, x)


@pytest.fixture(scope="module", params=list(MODELS))
def host_run(request):
    """(name, edgetvm outputs, reference outputs) for one model, compiled once for the host."""
    name = request.param
    fixture, shapes = MODELS[name]
    x = request.getfixturevalue(fixture)
    compiled = edgetvm.compile(fetch(name), "host", input_shapes=shapes)
    return name, compiled, compiled.run_dict(x), reference_outputs(name, x)


def test_host_matches_reference(host_run):
    name, compiled, outputs, reference = host_run
    assert [t.name for t in compiled.outputs] == list(reference)
    assert_outputs_match(outputs, reference, rtol=1e-4)


def test_detectors_find_the_astronaut(host_run):
    """Guards the preprocessing the numerics test relies on: each detector sees the face."""
    name, _, outputs, _ = host_run
    if name == "retinaface":
        assert outputs["conf"][0, :, 1].max() > 0.9
    elif name == "yunet":
        score = np.sqrt(outputs["cls_8"] * outputs["obj_8"]).max()
        score = max(score, *(np.sqrt(outputs[f"cls_{s}"] * outputs[f"obj_{s}"]).max() for s in (16, 32)))
        assert score > 0.5
    elif name == "blazeface":
        assert 1 / (1 + np.exp(-outputs["classificators"].max())) > 0.5
    else:
        embedding = outputs["fc1"][0]
        assert embedding.shape == (128,) and np.isfinite(embedding).all() and np.abs(embedding).max() > 0


def test_imported_interface(host_run):
    name, compiled, _, _ = host_run
    expected_inputs = {"retinaface": ("input", RETINAFACE_SHAPE), "yunet": ("input", (1, 3, 640, 640)),
                       "sface": ("data", (1, 3, 112, 112)), "blazeface": ("input", (1, 128, 128, 3))}[name]
    assert [(t.name, t.shape, t.dtype) for t in compiled.inputs] == [(*expected_inputs, "float32")]
    if name in ("yunet", "sface"):
        assert any("DequantizeLinear" in note and "blocked" in note for note in compiled.imported.notes)
    if name == "blazeface":
        assert any("float16" in note for note in compiled.imported.notes)


@pytest.fixture(scope="module", params=list(MODELS))
def arm_library(request, tmp_path_factory):
    name = request.param
    compiled = edgetvm.compile(fetch(name), "armv7-neon", input_shapes=MODELS[name][1])
    return compiled.export(tmp_path_factory.mktemp("arm") / f"{name}.so")


@pytest.mark.arm
def test_arm_export_is_32bit_hard_float_elf(arm_library):
    assert arm_library.with_name(arm_library.name + ".json").exists()
    assert_arm_hard_float_library(arm_library)


@pytest.mark.arm
def test_arm_export_uses_neon_quad_float_arithmetic(arm_library):
    ops = neon_q_float_ops(arm_library)
    assert ops, f"{arm_library.name}: no vmul/vadd/vmla/vfma.f32 on q registers in the disassembly"


@pytest.mark.slow
def test_retinaface_at_an_odd_size(rng):
    """300x401: the FPN's Resize sizes are not 2x its input, so only shapes folded from the real
    input shape give the right sizes (a fixed scale of 2 would be off by one)."""
    x = (rng.standard_normal((1, 3, 300, 401)) * 50).astype(np.float32)
    compiled = edgetvm.compile(fetch("retinaface"), "host", input_shapes={"input": x.shape})
    assert_outputs_match(compiled.run_dict(x), reference_outputs("retinaface", x), rtol=1e-4)

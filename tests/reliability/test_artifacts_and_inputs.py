"""Artifacts: atomic, hashed, target-checked. Run-time inputs: checked by name, shape, dtype, layout."""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetvm
from edgetvm import backends
from edgetvm.artifact import sidecar_path
from edgetvm.errors import ArtifactError, InputError, ResourceLimitError


def small_conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y"], ["features"])],
        "small", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 12])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8, 16, 12])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def model():
    return small_conv_model()


@pytest.fixture(scope="module")
def artifact(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "small.so"
    edgetvm.compile(model, "host").export(path)
    return path


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).standard_normal((1, 3, 16, 12)).astype(np.float32)


def reference(model, x):
    return ort.InferenceSession(model.SerializeToString()).run(None, {"image": x})[0]


def test_sidecar_records_interface_target_versions_and_hash(artifact):
    meta = json.loads(sidecar_path(artifact).read_text())
    assert meta["inputs"] == [{"name": "image", "shape": [1, 3, 16, 12], "dtype": "float32"}]
    assert meta["outputs"][0]["name"] == "features"
    assert meta["target"]["preset"] == "host"
    assert meta["tvm_version"].startswith("0.27")
    from edgetvm.artifact import sha256_file

    assert meta["sha256"] == sha256_file(artifact)
    assert oct(os.stat(artifact).st_mode & 0o777) != oct(0o600), "artifacts must not keep mkstemp's 0600"


def test_load_runs_by_position_and_by_name(artifact, model, x):
    runner = edgetvm.load(artifact)
    ref = reference(model, x)
    np.testing.assert_allclose(runner(x), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(runner(image=x), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_tampered_library_is_refused(artifact, tmp_path):
    copy = tmp_path / "t.so"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    sidecar_path(copy).write_text(sidecar_path(artifact).read_text())
    with pytest.raises(ArtifactError, match="SHA-256.*does not match"):
        edgetvm.load(copy)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda text, meta: text[: len(text) // 2], "not valid JSON"),
        (lambda text, meta: "[1, 2]", "not a JSON object"),
        (lambda text, meta: json.dumps({**meta, "format_version": 99}), "sidecar format 99"),
        (lambda text, meta: json.dumps({**meta, "kind": "python-pickle"}), "unknown artifact kind 'python-pickle'"),
        (lambda text, meta: json.dumps({**meta, "target": "host"}), "sha256 or target entry is malformed"),
        (lambda text, meta: json.dumps({**meta, "inputs": [{"name": "image"}]}), "inputs are malformed"),
        (lambda text, meta: json.dumps({k: v for k, v in meta.items() if k != "sha256"}), "lacks 'sha256'"),
    ],
)
def test_corrupt_sidecar_is_refused(artifact, tmp_path, corrupt, message):
    copy = tmp_path / "c.so"
    copy.write_bytes(artifact.read_bytes())
    text = sidecar_path(artifact).read_text()
    sidecar_path(copy).write_text(corrupt(text, json.loads(text)))
    with pytest.raises(ArtifactError, match=message):
        edgetvm.load(copy)


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    from edgetvm.io import atomic_path, atomic_write_bytes

    target = tmp_path / "model.so"
    atomic_write_bytes(target, b"previous artifact")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise OSError("disk full")
    assert target.read_bytes() == b"previous artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["model.so"]


def test_missing_sidecar_is_refused(artifact, tmp_path):
    copy = tmp_path / "nosidecar.so"
    copy.write_bytes(artifact.read_bytes())
    with pytest.raises(ArtifactError, match="sidecar .* is missing"):
        edgetvm.load(copy)


def test_artifact_for_another_target_is_refused(artifact, tmp_path):
    copy = tmp_path / "arm.so"
    copy.write_bytes(artifact.read_bytes())
    meta = json.loads(sidecar_path(artifact).read_text())
    meta["target"] = {"preset": "armv7-neon", "arch": "armv7", "target": {}}
    sidecar_path(copy).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="built for target armv7-neon"):
        edgetvm.load(copy)


def test_failed_export_leaves_no_file(model, tmp_path, monkeypatch):
    compiled = edgetvm.compile(model, "host")
    target = tmp_path / "out.so"

    def half_written(executable, path, target_):
        with open(path, "wb") as fh:
            fh.write(b"\x7fELF half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(backends.vm, "export_vm_library", half_written)
    monkeypatch.setattr(edgetvm.api, "export_vm_library", half_written)
    with pytest.raises(RuntimeError, match="disk full"):
        compiled.export(target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [], "temporary files must be cleaned up"


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda x: x[:, :, :8], r"shape \(1, 3, 8, 12\), expected \(1, 3, 16, 12\)"),
        (lambda x: x.astype(np.float64), "dtype float64, expected float32"),
        (lambda x: x.transpose(0, 2, 3, 1).copy().reshape(1, 16, 12, 3), "looks NHWC"),
        (lambda x: x.tolist(), "must be a numpy array"),
    ],
)
def test_wrong_inputs_are_refused(artifact, x, bad, message):
    runner = edgetvm.load(artifact)
    with pytest.raises(InputError, match=message):
        runner(bad(x))


def test_wrong_and_missing_names_are_refused(artifact, x):
    runner = edgetvm.load(artifact)
    with pytest.raises(InputError, match=r"unknown input name\(s\) \['img'\].*\['image'\]"):
        runner(img=x)
    with pytest.raises(InputError, match="expects 1 input"):
        runner()


def test_non_contiguous_input_gives_the_right_answer(artifact, model, x):
    runner = edgetvm.load(artifact)
    wide = np.zeros((1, 3, 16, 24), np.float32)
    wide[..., ::2] = x
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    ref = reference(model, x)
    np.testing.assert_allclose(runner(view), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_declared_memory_over_the_limit_is_refused_before_allocation(model, monkeypatch):
    monkeypatch.setenv("EDGETVM_MAX_TENSOR_BYTES", str(1 << 20))
    with pytest.raises(ResourceLimitError, match="input 'image' declares .* over the per-tensor limit"):
        edgetvm.compile(model, "host", input_shapes={"image": (64, 3, 64, 64)})

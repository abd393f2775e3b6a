"""``load`` runs what is on disk now, even when this process already loaded another library at that path.

The dynamic loader hands back the handle it already has for a path (dlopen compares names and inodes),
so before the fix the second ``load`` ran the first model's code with the second model's sidecar.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetvm


def conv_model(seed: int) -> onnx.ModelProto:
    """Two models of the same interface, different weights (seeded)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], f"conv{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("standalone", [False, True], ids=["tvm-runtime", "standalone"])
def test_reexport_to_same_path_loads_the_new_library(tmp_path, standalone, monkeypatch):
    monkeypatch.setenv("EDGETVM_CACHE", str(tmp_path / "cache"))
    x = np.random.default_rng(9).standard_normal((1, 3, 8, 8)).astype(np.float32)
    first, second = conv_model(1), conv_model(2)
    path = tmp_path / "m.so"
    edgetvm.compile(first, "host").export(path, standalone=standalone)
    np.testing.assert_allclose(edgetvm.load(path)(x), reference(first, x), rtol=1e-4, atol=1e-4)

    edgetvm.compile(second, "host").export(path, standalone=standalone)
    out = edgetvm.load(path)(x)
    assert not np.allclose(out, reference(first, x), atol=1e-3)
    np.testing.assert_allclose(out, reference(second, x), rtol=1e-4, atol=1e-4)

    # Re-exporting the first model brings its code back, not a stale copy of either.
    edgetvm.compile(first, "host").export(path, standalone=standalone)
    np.testing.assert_allclose(edgetvm.load(path)(x), reference(first, x), rtol=1e-4, atol=1e-4)

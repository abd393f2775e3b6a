"""A tracker with two x86 RPC servers standing in for boards, a two-conv model, one shared tuning run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetvm.tuning.rpc import start_server, start_tracker

KEY = "x86-test"
# Small enough that a few candidates per kernel run in CI; the search is the real one.
TUNE_OPTIONS = {"batch_size": 3, "population_size": 16, "seed": 7}


def two_conv_model() -> onnx.ModelProto:
    """conv3x3/2 (3->16) + relu -> conv3x3 (16->32) + relu on 1x3x32x32, seeded He-scaled weights."""
    rng = np.random.default_rng(0)

    def conv(name, x, cin, cout, stride, out):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        node = helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [out], kernel_shape=[3, 3], pads=[1] * 4,
                                strides=[stride] * 2)
        return node, [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]

    n1, i1 = conv("c1", "x", 3, 16, 2, "y1")
    n2, i2 = conv("c2", "z1", 16, 32, 1, "y2")
    graph = helper.make_graph(
        [n1, helper.make_node("Relu", ["y1"], ["z1"]), n2, helper.make_node("Relu", ["y2"], ["out"])], "two_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 32, 16, 16])], initializer=i1 + i2)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tuning-model") / "two_conv.onnx"
    onnx.save(two_conv_model(), path)
    return path


@pytest.fixture(scope="session")
def boards(tmp_path_factory):
    """A tracker and two servers on 127.0.0.1, each its own process group; stopped at the end."""
    logs = tmp_path_factory.mktemp("rpc-logs")
    tracker = start_tracker(log_path=logs / "tracker.log")
    servers = []
    try:
        for i in range(2):
            servers.append(start_server(tracker.address, KEY, num_threads=1, log_path=logs / f"server{i}.log"))
        yield tracker, servers
    finally:
        for process in servers + [tracker]:
            process.stop()


@pytest.fixture(scope="session")
def first_run(boards, model_path, tmp_path_factory):
    """One tuning run into a fresh database: (db dir, report, progress lines)."""
    import edgetvm

    tracker, _ = boards
    db = tmp_path_factory.mktemp("tuning") / "db"
    lines: list[str] = []
    report = edgetvm.tune(model_path, "host", tracker=tracker.address, key=KEY, trials=4, db=db,
                          progress=lines.append, tune_options=TUNE_OPTIONS)
    return db, report, lines

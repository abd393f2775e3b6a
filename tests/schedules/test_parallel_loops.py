"""Parallel kernels fuse only the outer loops they need for enough tasks (``schedules.cpu._parallel_outer``):
a resize (each output reads a source pixel computed from its position) keeps its channel vectors a
serial loop inside the parallel pixel loop, so the source index and interpolation weights are
computed per pixel, not per vector; a register-tiled conv parallel over its rows, no index recovered
by division per tile. Outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tvm import s_tir, tirx

import edgetvm


def _upsample_nhwc(h: int, w: int, c: int):
    """Channels-last 2x bilinear upsample (half-pixel centers), as MediaPipe's detectors have it."""
    nodes = [helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Resize", ["nchw", "", "scales"], ["up"], mode="linear",
                              coordinate_transformation_mode="half_pixel"),
             helper.make_node("Transpose", ["up"], ["y"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(nodes, "upsample",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, h, w, c])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2 * h, 2 * w, c])],
                              [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _loops(func: tirx.PrimFunc) -> list[tuple[int, int]]:
    """(kind, extent) of every loop of ``func``, outermost first."""
    loops = []

    def visit(stmt):
        if isinstance(stmt, tirx.For):
            loops.append((int(stmt.kind), int(stmt.extent)))
            visit(stmt.body)
        elif isinstance(stmt, s_tir.SBlockRealize):
            visit(stmt.block.body)
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                visit(s)
        elif hasattr(stmt, "body"):
            visit(stmt.body)

    visit(func.body)
    return loops


def test_resize_computes_its_source_pixel_per_pixel_and_matches_onnxruntime():
    model = _upsample_nhwc(6, 6, 32)
    compiled = edgetvm.compile(model, "host", num_threads=2)
    resize = [f for gv, f in compiled.scheduled.functions.items() if "resize" in gv.name_hint]
    assert len(resize) == 1
    loops = _loops(resize[0])
    parallel = [extent for kind, extent in loops if kind == int(tirx.ForKind.PARALLEL)]
    vectorized = [extent for kind, extent in loops if kind == int(tirx.ForKind.VECTORIZED)]
    lanes = vectorized[0]
    # The 12x12 output pixels in parallel; inside, a loop over the channel vectors, then the lanes.
    assert parallel == [144] and (int(tirx.ForKind.SERIAL), 32 // lanes) in loops, loops
    x = np.random.default_rng(0).uniform(-1, 1, (1, 6, 6, 32)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(compiled.run_dict(x)["y"], expected, rtol=1e-6, atol=1e-6)


def _conv3x3(c_in: int, c_out: int, hw: int):
    rng = np.random.default_rng(1)
    w = rng.uniform(-0.5, 0.5, (c_out, c_in, 3, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, hw, hw])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_register_tiled_conv_is_parallel_over_its_rows_and_matches_onnxruntime():
    model = _conv3x3(8, 32, 24)
    compiled = edgetvm.compile(model, "host", num_threads=2, winograd=False)
    convs = [f for gv, f in compiled.scheduled.functions.items() if "conv2d" in gv.name_hint]
    assert len(convs) == 1
    parallel = [extent for kind, extent in _loops(convs[0]) if kind == int(tirx.ForKind.PARALLEL)]
    # The padding pass and the conv: each parallel over the fewest outer loops giving >= 16 tasks
    # (the 24 or 26 rows), never over rows x column tiles x channel tiles.
    assert parallel and all(extent in (24, 26) for extent in parallel), parallel
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8, 24, 24)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(compiled.run_dict(x)["y"], expected, rtol=1e-5, atol=1e-5)

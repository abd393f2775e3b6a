"""Dropout at inference is the identity: rewrite it to Identity.

ONNX Dropout returns its input unchanged unless ``training_mode`` is true (opset 12+) or
``is_test`` is 0 (opset < 7). TVM 0.27's converter reads an opset-12 ``ratio`` input only when it is
a 0-d constant and fails on a shape-[1] ratio (SFace has one). The ratio does not matter at
inference, so the rewrite is exact. A Dropout whose ``mask`` output is read, or that may run in
training mode, is left alone.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper


def dropout_to_identity(model: onnx.ModelProto, notes: list[str] | None = None) -> onnx.ModelProto:
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    rewrite = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.output) > 1 and node.output[1] and node.output[1] in read:
            continue
        if any(a.name == "is_test" and a.i == 0 for a in node.attribute):
            continue
        if len(node.input) > 2 and node.input[2]:
            mode = inits.get(node.input[2])
            if mode is None or bool(numpy_helper.to_array(mode).any()):
                continue
        rewrite.append(index)
    if not rewrite:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for index in rewrite:
        old = graph.node[index]
        out.graph.node[index].CopyFrom(helper.make_node("Identity", [old.input[0]], [old.output[0]], name=old.name))
    if notes is not None:
        notes.append(f"replaced {len(rewrite)} inference-mode Dropout node(s) by Identity")
    return out

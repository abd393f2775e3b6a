"""Resize with an empty ``scales`` next to ``sizes``: blank the empty inputs for TVM's converter.

ONNX Resize-11..18 takes ``(X, roi, scales, sizes)``; exactly one of ``scales``/``sizes`` is used,
and exporters pass the unused one as an empty tensor (PyTorch's RetinaFace export does; at opset
11-12 ONNX even requires ``roi`` and ``scales`` to be present). TVM 0.27's converter treats any
present input as given and asserts "Only one of scales and sizes can be provided". Blanking the
empty inputs' names means the same computation to TVM (and to ONNX from opset 13, where they are
optional); at opset 11-12 the ONNX checker would call the result invalid, so this rewrite runs
last, on the graph handed to TVM only (``frontends.onnx.convert_to_relax``).
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper


def normalize_resize_inputs(model: onnx.ModelProto, notes: list[str] | None = None) -> onnx.ModelProto:
    inits = {t.name: t for t in model.graph.initializer}

    def is_empty(name: str) -> bool:
        return name in inits and numpy_helper.to_array(inits[name]).size == 0

    changes = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx") or len(node.input) < 3:
            continue
        blank = [i for i in (1, 2) if node.input[i] and is_empty(node.input[i])]
        if 2 in blank and not (len(node.input) > 3 and node.input[3]):
            blank.remove(2)  # no sizes either: leave the (invalid) node for the converter to reject
        if blank:
            changes.append((index, blank))
    if not changes:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for index, blank in changes:
        for i in blank:
            out.graph.node[index].input[i] = ""
    if notes is not None:
        notes.append(f"dropped empty roi/scales inputs of {len(changes)} Resize node(s) that carry sizes")
    return out

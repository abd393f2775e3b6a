"""Graph inputs that are not inputs: weights listed in ``graph.input``, and inputs nothing reads.

Older exporters (MXNet, early PyTorch) list every weight among the graph inputs, with its value as
an initializer of the same name (ONNX IR < 4 required that). Such an "input" is a constant: ONNX
lets a caller override it, but no face model is meant to be fed its weights at run time. Graph
inputs that no node reads (SFace keeps the names of its pre-quantization weights) are dropped too.
"""

from __future__ import annotations

import onnx

from .dead_nodes import subgraph_inputs


def drop_weight_inputs(model: onnx.ModelProto, notes: list[str] | None = None) -> onnx.ModelProto:
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    read = set().union(*(subgraph_inputs(n) for n in graph.node)) | {o.name for o in graph.output}
    as_weights = [i.name for i in graph.input if i.name in weights]
    unused = [i.name for i in graph.input if i.name not in weights and i.name not in read]
    if not as_weights and not unused:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    drop = set(as_weights) | set(unused)
    kept = [i for i in graph.input if i.name not in drop]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    if notes is not None:
        if as_weights:
            notes.append(f"{len(as_weights)} graph input(s) with an initializer are weights, not inputs")
        if unused:
            shown = ", ".join(unused[:3]) + (", ..." if len(unused) > 3 else "")
            notes.append(f"dropped {len(unused)} graph input(s) no node reads ({shown})")
    return out

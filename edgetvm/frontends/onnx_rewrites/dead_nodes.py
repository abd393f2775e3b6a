"""Remove nodes and initializers that no graph output depends on."""

from __future__ import annotations

import onnx


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node reads, including outer-scope names read inside its If/Loop/Scan bodies."""
    names = {name for name in node.input if name}
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            for inner in graph.node:
                names |= subgraph_inputs(inner)
    return names


def remove_dead_nodes(model: onnx.ModelProto, notes: list[str] | None = None) -> onnx.ModelProto:
    """Keep only the nodes reachable backwards from the graph outputs, and the initializers they read.

    Graph inputs are kept even when unused (dropping an input changes the model's interface; that is
    ``drop_weight_inputs``' decision, not this rewrite's).
    """
    graph = model.graph
    live = {out.name for out in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in live for name in node.output):
            kept.append(node)
            live |= subgraph_inputs(node)
    removed_nodes = len(graph.node) - len(kept)
    dead_inits = [t.name for t in graph.initializer if t.name not in live]
    if not removed_nodes and not dead_inits:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(reversed(kept))
    kept_inits = [t for t in model.graph.initializer if t.name in live]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept_inits)
    produced = {name for node in kept for name in node.output} | {t.name for t in kept_inits}
    produced |= {i.name for i in graph.input}
    kept_info = [v for v in graph.value_info if v.name in produced]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept_info)
    if notes is not None and removed_nodes:
        notes.append(f"removed {removed_nodes} node(s) no output depends on")
    return out

"""Static input shapes, and the shape arithmetic they make constant.

PyTorch exports compute reshape targets and resize sizes at run time:
``Shape(x) -> Gather -> Unsqueeze -> Concat -> Cast -> Resize/Reshape``. With a dynamic input
TVM 0.27 cannot import such graphs (a Concat of a symbolic shape, a Resize whose ``sizes`` is a
tensor). Once every input dimension is known, ONNX shape inference gives each intermediate
tensor's static shape; then every ``Shape`` node is a constant, and every node whose inputs are all
constants is evaluated here (with ONNX's reference implementation) and replaced by an initializer.
Repeating until nothing changes propagates shapes through ops (Resize, Reshape) whose output
shapes only become known once their shape inputs are constants.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import InputError
from .dead_nodes import remove_dead_nodes

# Nodes never evaluated at compile time: quantization is the dequantize rewrite's (or the int8
# mode's) business, random ops differ per run, control flow holds subgraphs.
NOT_FOLDED = {
    "DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "RandomNormal", "RandomUniform",
    "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "If", "Loop", "Scan",
}
# Largest constant (elements, summed over a node's inputs) evaluated in numpy: shape arithmetic is
# tiny; a big constant computation is left for TVM's FoldConstant.
MAX_FOLD_ELEMENTS = 1 << 22


def set_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Write static ``shapes`` into the graph inputs; drop stale (symbolic) intermediate shapes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in out.graph.input:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for d in shapes[value.name]:
            dims.add().dim_value = int(d)
    del out.graph.value_info[:]
    for value in out.graph.output:
        # Symbolic output dims (``batch_size``) are recomputed by shape inference.
        if value.type.HasField("tensor_type"):
            value.type.tensor_type.ClearField("shape")
    return out


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor whose shape ONNX shape inference can give with all dims known."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises InferenceError and C++ errors
        raise InputError(f"ONNX shape inference failed with the given input shapes: {exc}") from None
    g = inferred.graph
    shapes = {}
    for value in list(g.input) + list(g.value_info) + list(g.output):
        tt = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        dims = tt.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def evaluate_node(node: onnx.NodeProto, inputs: list[np.ndarray | None],
                  opsets: list[onnx.OperatorSetIdProto]) -> list[np.ndarray]:
    """Run one node on constant inputs with ONNX's reference implementation at the model's opset."""
    from onnx.reference import ReferenceEvaluator

    in_infos = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
                for name, value in zip(node.input, inputs) if name]
    out_infos = [helper.make_value_info(name, onnx.TypeProto()) for name in node.output]
    graph = helper.make_graph([node], "fold", in_infos, out_infos)
    model = helper.make_model(graph, opset_imports=list(opsets))
    feeds = {name: value for name, value in zip(node.input, inputs) if name}
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


def fold_shape_subgraphs(model: onnx.ModelProto, notes: list[str] | None = None,
                         max_rounds: int = 32) -> onnx.ModelProto:
    """Replace Shape nodes of statically shaped tensors, and all-constant nodes, by initializers."""
    total = 0
    for _ in range(max_rounds):
        model, folded = _fold_round(model)
        if not folded:
            break
        total += folded
    if total and notes is not None:
        notes.append(f"evaluated {total} all-constant node(s) (shape arithmetic, weight reshapes) at import "
                     f"for the static input shapes")
    return model


def _fold_round(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    graph = model.graph
    shapes = static_shapes(model)
    init_protos = {t.name: t for t in graph.initializer}
    values: dict[str, np.ndarray] = {}

    def constant(name: str) -> np.ndarray | None:
        if name not in values and name in init_protos:
            values[name] = numpy_helper.to_array(init_protos[name])
        return values.get(name)

    graph_outputs = {o.name for o in graph.output}
    new_inits: dict[str, np.ndarray] = {}
    folded = set()
    for index, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED:
            continue
        if any(name in graph_outputs for name in node.output):
            continue
        if node.op_type == "Shape":
            source = node.input[0]
            shape = shapes.get(source)
            if shape is None and (c := constant(source)) is not None:
                shape = c.shape
            if shape is None:
                continue
            attrs = {a.name: a.i for a in node.attribute}
            # Python slicing clamps and wraps negative bounds exactly as ONNX Shape-15 specifies.
            results = [np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))], dtype=np.int64)]
        else:
            inputs = [constant(name) if name else None for name in node.input]
            if any(v is None for name, v in zip(node.input, inputs) if name):
                continue
            if sum(v.size for v in inputs if v is not None) > MAX_FOLD_ELEMENTS:
                continue
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                continue
            try:
                results = evaluate_node(node, inputs, model.opset_import)
            except Exception:  # noqa: BLE001 - leave what the reference cannot evaluate to TVM
                continue
        for name, value in zip(node.output, results):
            if name:
                values[name] = value
                new_inits[name] = value
        folded.add(index)
    if not folded:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(n for i, n in enumerate(graph.node) if i not in folded)
    out.graph.initializer.extend(numpy_helper.from_array(np.array(v, copy=True, order="C"), name)
                                 for name, v in new_inits.items())
    return remove_dead_nodes(out), len(folded)

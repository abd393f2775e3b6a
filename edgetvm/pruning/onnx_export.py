"""Write a pruning's channel selection back into the ONNX model it was imported from.

    conv weights / biases, BN parameters, PReLU slopes, Mul/Add scales  <- sliced like the Relax weights
    depthwise Conv ``group``                                          <- the new channel count
    Gemm / MatMul weights (also after Flatten: whole H*W blocks)      <- sliced like the Relax weights
    Split sizes, Slice bounds on the channel axis                     <- the new channel counts
    Reshape shape constants                                            <- recomputed from the new input
    the offsets of layers that lost inputs                             <- added to the Conv/Gemm bias

The pruned ONNX loads in onnxruntime and computes what the pruned Relax graph computes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedModelError, first_line
from .apply import offset_name
from .dependencies import reshape_axis_map
from .rewrite import PruneResult


def write_pruned_onnx(proto: onnx.ModelProto, result: PruneResult, source: str = "<model>") -> onnx.ModelProto:
    """The original ONNX with ``result``'s channel selection, refit weights and offsets applied."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    weights = result.weights
    inits = {t.name: t for t in graph.initializer}
    old_shapes = {name: tuple(t.dims) for name, t in inits.items()}
    original_shapes = _inferred_shapes(proto)

    for name, init in inits.items():
        if name in weights and name in result.plan.deps.tensors:
            value = weights[name]
            dtype = numpy_helper.to_array(init).dtype
            init.CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))

    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            group = next((a for a in node.attribute if a.name == "group"), None)
            if group is not None and group.i > 1:
                old_out = old_shapes[node.input[1]][0]
                new_out = tuple(inits[node.input[1]].dims)[0]
                if new_out != old_out:
                    group.i = group.i * new_out // old_out

    _fold_offsets(model, result, inits, source)
    _fix_channel_splits(model, result, original_shapes, source)
    _fix_reshapes(model, original_shapes, source)
    del graph.value_info[:]
    _complete_output_types(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise UnsupportedModelError(f"{source}: the pruned ONNX does not validate: {first_line(exc)}") from None
    return model


def _complete_output_types(model: onnx.ModelProto) -> None:
    """Give graph outputs declared without a shape the inferred one (the checker requires a shape)."""
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in missing:
        if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
            out.type.CopyFrom(known[out.name].type)


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.dim_value > 0 for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _fold_offsets(model: onnx.ModelProto, result: PruneResult, inits: dict, source: str) -> None:
    """Add each offset to its layer: into the Conv/Gemm bias when per channel, else as an Add node."""
    graph = model.graph
    for consumer in result.plan.deps.consumers:
        name = offset_name(consumer.out)
        if name not in result.weights:
            continue
        offset = np.asarray(result.weights[name])
        if not np.any(offset):
            continue
        node = next((n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1
                     and n.input[1] == consumer.leaf), None)
        if node is None:
            raise UnsupportedModelError(f"{source}: no Conv/Gemm/MatMul node reads {consumer.leaf!r}; cannot write the "
                                        f"pruned layer's offset back")
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
            offset = offset * alpha
        per_channel = offset.size == offset.shape[1]
        if per_channel and node.op_type in ("Conv", "Gemm"):
            bias_index = 2
            flat = offset.reshape(-1)
            if node.op_type == "Gemm":
                attrs = {a.name: a for a in node.attribute}
                beta = attrs["beta"].f if "beta" in attrs else 1.0
            else:
                beta = 1.0
            if len(node.input) > bias_index and node.input[bias_index] in inits and beta != 0 and \
                    tuple(inits[node.input[bias_index]].dims) == (flat.size,):
                init = inits[node.input[bias_index]]
                value = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array((value + flat / beta).astype(value.dtype), init.name))
                continue
            if len(node.input) <= bias_index or not node.input[bias_index]:
                bias_name = f"{consumer.leaf}.prune_bias"
                graph.initializer.append(numpy_helper.from_array(flat.astype(offset.dtype), bias_name))
                inits[bias_name] = graph.initializer[-1]
                while len(node.input) < bias_index:
                    node.input.append("")
                if len(node.input) == bias_index:
                    node.input.append(bias_name)
                else:
                    node.input[bias_index] = bias_name
                if node.op_type == "Gemm":
                    attrs = {a.name: a for a in node.attribute}
                    if "beta" in attrs:
                        attrs["beta"].f = 1.0
                continue
        # Otherwise an explicit Add after the layer: exact for spatial offsets too.
        raw = f"{node.output[0]}.pruned"
        out = node.output[0]
        node.output[0] = raw
        offset_init = f"{consumer.leaf}.prune_offset"
        graph.initializer.append(numpy_helper.from_array(offset, offset_init))
        index = list(graph.node).index(node)
        graph.node.insert(index + 1, helper.make_node("Add", [raw, offset_init], [out],
                                                      name=f"{node.name}.prune_offset"))


def _fix_reshapes(model: onnx.ModelProto, original_shapes: dict, source: str) -> None:
    """Recompute the constant target of every Reshape whose input lost channels."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        old_in = original_shapes.get(node.input[0])
        old_out = original_shapes.get(node.output[0])
        new_in = _inferred_shapes(model).get(node.input[0])
        if old_in is None or old_out is None or new_in is None or tuple(new_in) == tuple(old_in):
            continue
        target = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64)
        new_out = list(old_out)
        for j in range(len(old_out)):
            mapping = reshape_axis_map(old_in, old_out, j)
            if mapping is None:
                continue
            axis, block = mapping
            if new_in[axis] != old_in[axis]:
                new_out[j] = new_in[axis] * block if block > 0 else new_in[axis] // -block
        if int(np.prod(new_out)) != int(np.prod(new_in)):
            raise UnsupportedModelError(f"{source}: Reshape {node.name or node.output[0]} {list(old_in)} -> "
                                        f"{list(old_out)} cannot follow the pruned input {list(new_in)}")
        fixed = np.where((target == 0) | (target == -1), target, np.array(new_out, dtype=np.int64))
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(fixed.astype(np.int64), node.input[1]))


def _channel_axis_nodes(model: onnx.ModelProto, op_type: str, original_shapes: dict) -> list:
    found = []
    for node in model.graph.node:
        if node.op_type != op_type:
            continue
        rank = len(original_shapes.get(node.input[0], ()))
        if op_type == "Split":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if rank and axis % rank == 1:
                found.append(node)
        else:
            found.append(node)
    return found


def _fix_channel_splits(model: onnx.ModelProto, result: PruneResult, original_shapes: dict, source: str) -> None:
    """New sizes for Split nodes and new bounds for Slice nodes on the channel axis.

    The importer turns the ONNX nodes into Relax ops in graph order, so the k-th channel split in
    Relax is the k-th channel Split in ONNX; the sizes are checked to agree before anything is changed.
    """
    deps, plan = result.plan.deps, result.plan
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    splits = _channel_axis_nodes(model, "Split", original_shapes)
    if len(splits) != len(deps.channel_splits):
        if any(plan.changed(src) for src, _ in deps.channel_splits):
            raise UnsupportedModelError(f"{source}: cannot match the channel Split nodes to the pruned graph")
        return
    for node, (src, outs) in zip(splits, deps.channel_splits):
        old = [deps.tensors[o].shape[1] for o in outs]
        onnx_old = [original_shapes.get(o, (0, 0))[1] for o in node.output]
        if old != onnx_old:
            raise UnsupportedModelError(f"{source}: Split {node.name} sizes {onnx_old} do not match the graph's {old}")
        if not plan.changed(src):
            continue
        sizes = np.array([plan.new_shape(o)[1] for o in outs], dtype=np.int64)
        attr = next((a for a in node.attribute if a.name == "split"), None)
        if attr is not None:
            del attr.ints[:]
            attr.ints.extend(int(v) for v in sizes)
        elif len(node.input) > 1 and node.input[1] in inits:
            name = f"{node.name or node.output[0]}.pruned_split"
            graph.initializer.append(numpy_helper.from_array(sizes, name))
            node.input[1] = name
        else:
            name = f"{node.name or node.output[0]}.pruned_split"
            graph.initializer.append(numpy_helper.from_array(sizes, name))
            if len(node.input) == 1:
                node.input.append(name)
            else:
                node.input[1] = name
            for a in list(node.attribute):
                if a.name == "num_outputs":
                    node.attribute.remove(a)
    slices = [n for n in graph.node if n.op_type == "Slice"]
    changed = [(s, o, st) for s, o, st in deps.channel_slices if plan.changed(s)]
    if not changed:
        return
    by_output = {n.output[0]: n for n in slices}
    candidates = [n for n in slices if original_shapes.get(n.output[0]) and len(original_shapes[n.output[0]]) > 1
                  and original_shapes[n.output[0]][1] != original_shapes.get(n.input[0], (0, 0))[1]]
    if len(candidates) != len(deps.channel_slices):
        raise UnsupportedModelError(f"{source}: cannot match the channel Slice nodes to the pruned graph")
    del by_output
    for node, (src, out, start) in zip(candidates, deps.channel_slices):
        if not plan.changed(src):
            continue
        names = list(node.input) + [""] * (5 - len(node.input))
        starts, ends, axes = (numpy_helper.to_array(inits[n]).astype(np.int64) if n in inits else None
                              for n in names[1:4])
        rank = len(original_shapes[node.input[0]])
        axes = np.arange(rank) if axes is None else axes % rank
        i = int(np.flatnonzero(axes == 1)[0])
        new_start = int(np.sum(plan.kept(src, 1) < start))
        starts[i], ends[i] = new_start, new_start + plan.new_shape(out)[1]
        for j, value in ((1, starts), (2, ends)):
            name = f"{node.name or node.output[0]}.pruned_{'starts' if j == 1 else 'ends'}"
            graph.initializer.append(numpy_helper.from_array(value.astype(np.int64), name))
            node.input[j] = name

"""Fold DequantizeLinear of constant initializers into float initializers.

ONNX DequantizeLinear (opset 21 adds blocked quantization) computes

    y[i] = (x[i] - zero_point[b(i)]) * scale[b(i)]

where ``b(i)`` is the element's quantization group: the whole tensor (scalar scale), its index
along ``axis`` (per-axis, 1-D scale), or, for blocked quantization, the index along ``axis``
integer-divided by ``block_size`` (scale has x's rank, with ``ceil(x.shape[axis] / block_size)``
along ``axis``). YuNet and SFace (int8 "bq" models) store every weight like this; TVM 0.27 and
onnxruntime 1.32 both reject ``block_size``. Folding at import is exact: the products are computed
the way onnxruntime does (integer difference, converted to float, times the float scale), so the
folded float model is bit-identical to a dequantize at run time.

Weights-only: a DequantizeLinear whose input is an activation is left alone. A later int8 mode
that keeps the integer weights simply does not call this rewrite.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ...errors import ModelLoadError
from .dead_nodes import remove_dead_nodes


def dequantize_array(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
                     block_size: int = 0, node_name: str = "") -> np.ndarray:
    """``(x - zero_point) * scale`` with ONNX's per-tensor, per-axis and blocked group layouts."""
    zp = np.zeros((), dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    if zp.ndim and zp.shape != scale.shape:
        raise _malformed(node_name, f"zero point shape {zp.shape} differs from scale shape {scale.shape}")
    if x.ndim == 0 or scale.ndim == 0 or scale.size == 1 and block_size == 0:
        if scale.size != 1:
            raise _malformed(node_name, f"scale of shape {scale.shape} for a scalar input")
        scale_full, zp_full = scale.reshape(()), zp.reshape(())
    else:
        axis = axis % x.ndim
        if block_size > 0:
            # Blocked layout: the scale has the input's shape, with ceil(n / block_size) along ``axis``.
            expected = x.shape[:axis] + (-(-x.shape[axis] // block_size),) + x.shape[axis + 1:]
            if scale.shape != expected:
                raise _malformed(node_name, f"scale shape {scale.shape} does not match input shape {x.shape} "
                                            f"with block_size={block_size} along axis {axis}")
            index = np.arange(x.shape[axis]) // block_size
            scale_full = np.take(scale, index, axis=axis)
            zp_full = np.take(zp, index, axis=axis) if zp.ndim else zp
        else:
            if scale.ndim != 1 or scale.shape[0] != x.shape[axis]:
                raise _malformed(node_name, f"per-axis scale of shape {scale.shape} does not match input "
                                            f"dimension {x.shape[axis]} along axis {axis}")
            bshape = [1] * x.ndim
            bshape[axis] = -1
            scale_full = scale.reshape(bshape)
            zp_full = zp.reshape(bshape) if zp.ndim else zp
    diff = x.astype(np.int32) - zp_full
    return (diff.astype(scale.dtype) * scale_full).astype(scale.dtype)


def _malformed(node_name: str, what: str) -> ModelLoadError:
    return ModelLoadError(f"DequantizeLinear node {node_name!r}: {what}; the model is malformed")


def fold_constant_dequantize(model: onnx.ModelProto, notes: list[str] | None = None) -> onnx.ModelProto:
    """Replace each DequantizeLinear whose inputs are all initializers by a float initializer."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    folded: dict[str, np.ndarray] = {}
    folded_nodes = set()
    blocked = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        names = [n for n in node.input]
        if not all(n in inits for n in names if n) or node.output[0] in graph_outputs:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("output_dtype", 0) not in (0, onnx.TensorProto.FLOAT):
            continue
        x = numpy_helper.to_array(inits[names[0]])
        scale = numpy_helper.to_array(inits[names[1]])
        zp = numpy_helper.to_array(inits[names[2]]) if len(names) > 2 and names[2] else None
        if x.dtype.kind not in "iu" or scale.dtype != np.float32:
            continue  # float8 / float16-scale variants: left to TVM's converter
        block_size = int(attrs.get("block_size", 0))
        blocked += block_size > 0
        folded[node.output[0]] = dequantize_array(x, scale, zp, int(attrs.get("axis", 1)), block_size,
                                                  node.name)
        folded_nodes.add(index)
    if not folded:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(n for i, n in enumerate(graph.node) if i not in folded_nodes)
    out.graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in folded.items())
    out = remove_dead_nodes(out)
    if notes is not None:
        notes.append(f"folded {len(folded)} DequantizeLinear of constant weights to float32 initializers "
                     f"({blocked} blocked, block_size > 0)")
    return out

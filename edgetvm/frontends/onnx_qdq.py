"""Import already-quantized ONNX models keeping their integer weights (the int8 mode's frontend).

The default import (``frontends.onnx``) folds every constant DequantizeLinear into a float weight.
For ``edgetvm.compile(..., quantize="int8")`` this module instead keeps the quantized graph so that
``passes.fold_quant_scales`` can turn it into integer kernels:

* QDQ models (``onnxruntime.quantization.quantize_static``, QuantFormat.QDQ): QuantizeLinear /
  DequantizeLinear pairs are kept; int8 weights stay int8 constants. Only the int32 bias
  ``DequantizeLinear`` is folded to float (exact: ``round(b_float / (s_x s_w))`` gives the int32
  back) because TVM's Conv converter wants a plain bias tensor.
* QOperator models: ``QLinearConv``, ``QLinearMatMul`` and onnxruntime's ``QGemm``, ``QLinearAdd``,
  ``QLinearMul``, ``QLinearLeakyRelu``, ``QLinearSigmoid``, ``QLinear(Global)AveragePool`` are rewritten to the equivalent QDQ
  nodes (``DequantizeLinear`` x2 -> Conv/MatMul -> ``QuantizeLinear``), which TVM imports.
* ``ConvInteger`` / ``MatMulInteger`` (dynamic quantization) become ``DequantizeLinear(scale=1)``
  -> Conv/MatMul -> ``Cast(int32)``: exact while ``|acc| < 2^24``; they run in float because their
  activation scale is only known at run time (``DynamicQuantizeLinear``) and so cannot be folded.
* Blocked DequantizeLinear (YuNet, SFace ``int8bq``: a scale and a zero point per 64 weights) is
  folded to float as in the default import: one int32 accumulator cannot carry several scales and
  the weights are asymmetric, so the int8 mode re-quantizes those weights per output channel.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedModelError
from ..specs import ImportedModel
from . import detect_format, load_model
from .onnx import import_onnx, read_onnx
from .onnx_rewrites.dequantize import dequantize_array


def _attr(node: onnx.NodeProto, name: str, default=0):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _dq(inputs, output, name, axis=None):
    node = helper.make_node("DequantizeLinear", inputs, [output], name=name)
    if axis is not None:
        node.attribute.append(helper.make_attribute("axis", axis))
    return node


# onnxruntime's com.microsoft QOperator ops (QuantFormat.QOperator) that are one float op between
# dequantized inputs and a quantized output: op -> (float op, number of quantized inputs).
ELEMENTWISE_QOPS = {
    "QLinearAdd": ("Add", 2),
    "QLinearMul": ("Mul", 2),
    "QLinearLeakyRelu": ("LeakyRelu", 1),
    "QLinearSigmoid": ("Sigmoid", 1),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", 1),
    "QLinearAveragePool": ("AveragePool", 1),
}


def _expand_elementwise(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    float_type, arity = ELEMENTWISE_QOPS[node.op_type]
    base = node.name or node.output[0]
    nodes, floats = [], []
    for i in range(arity):
        x, xs, xz = node.input[3 * i:3 * i + 3]
        floats.append(f"{base}__in{i}_dq")
        nodes.append(_dq([x, xs] + ([xz] if xz else []), floats[-1], f"{base}__in{i}_dequantize"))
    ys, yz = node.input[3 * arity:3 * arity + 2]
    attrs = [a for a in node.attribute if a.name not in ("channels_last",)]
    if any(a.name == "channels_last" and a.i for a in node.attribute):
        raise UnsupportedModelError(f"{node.op_type} node {node.name!r}: channels_last=1 is not supported")
    nodes.append(helper.make_node(float_type, floats, [f"{base}__y_float"], name=f"{base}__float"))
    nodes[-1].attribute.extend(attrs)
    nodes.append(helper.make_node("QuantizeLinear", [f"{base}__y_float", ys] + ([yz] if yz else []), [node.output[0]],
                                  name=f"{base}__quantize"))
    return nodes


def _expand_qgemm(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """com.microsoft.QGemm(A, a_s, a_z, B, b_s, b_z, C?, y_s?, y_z?): C is int32 with scale a_s * b_s."""
    base = node.name or node.output[0]
    a, a_s, a_z, b, b_s, b_z = node.input[:6]
    c = node.input[6] if len(node.input) > 6 else ""
    y_s = node.input[7] if len(node.input) > 7 else ""
    y_z = node.input[8] if len(node.input) > 8 else ""
    nodes = [_dq([a, a_s, a_z], f"{base}__a_dq", f"{base}__a_dequantize"),
             _dq([b, b_s, b_z], f"{base}__b_dq", f"{base}__b_dequantize",
                 axis=0 if _attr(node, "transB", 0) else 1)]
    inputs = [f"{base}__a_dq", f"{base}__b_dq"]
    if c:
        nodes.append(helper.make_node("Mul", [a_s, b_s], [f"{base}__c_scale"], name=f"{base}__c_scale_mul"))
        nodes.append(_dq([c, f"{base}__c_scale"], f"{base}__c_dq", f"{base}__c_dequantize", axis=0))
        inputs.append(f"{base}__c_dq")
    out = f"{base}__y_float" if y_s else node.output[0]
    gemm = helper.make_node("Gemm", inputs, [out], name=f"{base}__float")
    gemm.attribute.extend(a for a in node.attribute if a.name in ("alpha", "transA", "transB"))
    nodes.append(gemm)
    if y_s:
        nodes.append(helper.make_node("QuantizeLinear", [out, y_s] + ([y_z] if y_z else []), [node.output[0]],
                                      name=f"{base}__quantize"))
    return nodes


def expand_qoperators(model: onnx.ModelProto, notes: list[str] | None = None) -> onnx.ModelProto:
    """QLinearConv / QLinearMatMul / ConvInteger / MatMulInteger and onnxruntime's QLinear* / QGemm
    -> QDQ nodes around float ops."""
    graph = model.graph
    new_nodes, extra_inits = [], []
    count = 0
    for node in graph.node:
        op = node.op_type
        if op in ELEMENTWISE_QOPS or op == "QGemm":
            new_nodes.extend(_expand_elementwise(node) if op != "QGemm" else _expand_qgemm(node))
            count += 1
            continue
        if op not in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"):
            new_nodes.append(node)
            continue
        count += 1
        base = node.name or node.output[0]
        conv_attrs = [a for a in node.attribute]
        if op in ("QLinearConv", "QLinearMatMul"):
            x, xs, xz, w, ws, wz, ys, yz = node.input[:8]
            xd, wd, yf = f"{base}__x_dq", f"{base}__w_dq", f"{base}__y_float"
            new_nodes.append(_dq([x, xs, xz], xd, f"{base}__x_dequantize"))
            new_nodes.append(_dq([w, ws, wz], wd, f"{base}__w_dequantize", axis=0 if op == "QLinearConv" else 1))
            inputs = [xd, wd]
            if op == "QLinearConv" and len(node.input) > 8 and node.input[8]:
                # The int32 bias has scale x_scale * w_scale and zero point 0.
                bs = f"{base}__b_scale"
                new_nodes.append(helper.make_node("Mul", [xs, ws], [bs], name=f"{base}__b_scale_mul"))
                bd = f"{base}__b_dq"
                new_nodes.append(_dq([node.input[8], bs], bd, f"{base}__b_dequantize", axis=0))
                inputs.append(bd)
            float_op = helper.make_node("Conv" if op == "QLinearConv" else "MatMul", inputs, [yf], name=f"{base}__float")
            if op == "QLinearConv":
                float_op.attribute.extend(conv_attrs)
            new_nodes.append(float_op)
            new_nodes.append(helper.make_node("QuantizeLinear", [yf, ys, yz], [node.output[0]], name=f"{base}__quantize"))
        else:
            x, w = node.input[0], node.input[1]
            xz = node.input[2] if len(node.input) > 2 and node.input[2] else ""
            wz = node.input[3] if len(node.input) > 3 and node.input[3] else ""
            one = f"{base}__one"
            extra_inits.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), one))
            xd, wd, yf = f"{base}__x_dq", f"{base}__w_dq", f"{base}__y_float"
            new_nodes.append(_dq([x, one] + ([xz] if xz else []), xd, f"{base}__x_dequantize"))
            new_nodes.append(_dq([w, one] + ([wz] if wz else []), wd, f"{base}__w_dequantize"))
            float_op = helper.make_node("Conv" if op == "ConvInteger" else "MatMul", [xd, wd], [yf], name=f"{base}__float")
            if op == "ConvInteger":
                float_op.attribute.extend(conv_attrs)
            new_nodes.append(float_op)
            new_nodes.append(helper.make_node("Cast", [yf], [node.output[0]], name=f"{base}__to_int32",
                                              to=onnx.TensorProto.INT32))
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(extra_inits)
        if not any(n.domain == "com.microsoft" for n in graph.node):
            kept = [o for o in model.opset_import if o.domain != "com.microsoft"]
            del model.opset_import[:]
            model.opset_import.extend(kept)
        if notes is not None:
            notes.append(f"expanded {count} QLinear*/ *Integer node(s) into QuantizeLinear/DequantizeLinear form")
    return model


def fold_float_only_dequantize(model: onnx.ModelProto, notes: list[str] | None = None) -> onnx.ModelProto:
    """Fold the constant DequantizeLinear nodes an integer kernel cannot keep: blocked ones and
    int32 biases; per-tensor/per-axis int8 weights stay as they are."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    kept, new_inits = [], []
    folded = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            kept.append(node)
            continue
        x = numpy_helper.to_array(inits[node.input[0]])
        block = int(_attr(node, "block_size", 0))
        if block == 0 and x.dtype != np.int32:
            kept.append(node)
            continue
        scale_name = node.input[1]
        if scale_name in inits:
            scale = numpy_helper.to_array(inits[scale_name])
        elif scale_name in producers and producers[scale_name].op_type == "Mul" and \
                all(i in inits for i in producers[scale_name].input):
            a, b = (numpy_helper.to_array(inits[i]) for i in producers[scale_name].input)
            scale = (a * b).astype(np.float32)
        else:
            kept.append(node)
            continue
        zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else None
        try:
            value = dequantize_array(x, scale, zp, int(_attr(node, "axis", 1)), block, node.name)
        except UnsupportedModelError:
            raise
        new_inits.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(new_inits)
        if notes is not None:
            notes.append(f"folded {folded} blocked/int32 DequantizeLinear node(s) to float")
    return model


def import_onnx_qdq(model, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ImportedModel:
    """Import ``model`` keeping integer weights and QDQ pairs (see the module docstring)."""
    proto, source = read_onnx(model)
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    notes: list[str] = []
    proto = expand_qoperators(proto, notes)
    proto = fold_float_only_dequantize(proto, notes)
    imported = import_onnx(proto, input_shapes, fold_dequantize=False)
    imported.source = source if imported.source.startswith("<") else imported.source
    imported.notes = list(imported.notes or []) + notes
    return imported


def load_model_for_quantization(model, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ImportedModel:
    """``frontends.load_model``, except that ONNX models keep their integer weights."""
    if detect_format(model) == "onnx":
        return import_onnx_qdq(model, input_shapes)
    return load_model(model, input_shapes)

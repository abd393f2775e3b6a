"""What is in a model: its operators, parameters, multiply-accumulates, inputs and outputs.

``inspect_model`` imports the model exactly as ``edgetvm.compile`` does (so it fails the same way,
with the same clear errors, on corrupt or unsupported models), then reports

- ``ops``: the model file's own operators by type (ONNX op types, TFLite op codes),
  ``op_mapping``: how the import maps each type (builtin converter, densified sparse, custom op,
  refused, ...; see ``op_mapping``), and ``relax_ops``: the Relax operators the import produced;
- ``params`` / ``param_bytes``: elements and bytes of the weights as imported (constant tensors
  of rank >= 1 and a float or 8/16-bit integer dtype; int32/int64 constants are indices and shapes);
- ``macs``: multiply-accumulates of one inference, from the static shapes:
  conv: ``prod(output shape) * (C_in / groups) * prod(kernel window)``,
  matmul: ``prod(output shape) * K``.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
from tvm import relax
from tvm.ir import GenericConst

from ..errors import UnsupportedModelError
from . import detect_format, load_model, resolve_zoo
from .onnx import DIRECTLY_HANDLED_OPS, name_unnamed_nodes, read_onnx, unsupported_ops as onnx_unsupported_ops
from .tflite import op_mappings, op_names, parse_tflite, read_tflite

# Relax ops whose multiply-accumulates are counted, and their kind in ``macs_by_op``.
CONV_OPS = {"relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d"}
CONV_TRANSPOSE_OPS = {"relax.nn.conv1d_transpose", "relax.nn.conv2d_transpose"}
MATMUL_OPS = {"relax.matmul", "relax.linear"}
INDEX_DTYPES = {"int32", "int64", "uint32", "uint64", "bool"}


def inspect_model(model, input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
    """A JSON-ready description of ``model`` (ONNX path/bytes/ModelProto or TFLite path/bytes).

    A model the import refuses for its operators (UnsupportedModelError) is still described by its
    operators and their mapping, with ``refused`` holding the import's message; any other import
    error is raised, as ``edgetvm.compile`` raises it.
    """
    model = resolve_zoo(model)
    fmt = detect_format(model)
    mapping = op_mapping(model, fmt)
    try:
        imported = load_model(model, input_shapes)
    except UnsupportedModelError as exc:
        ops = model_op_counts(model, fmt)
        return {"source": _source(model), "format": fmt, "ops": dict(ops.most_common()), "num_ops": sum(ops.values()),
                "op_mapping": mapping, "refused": str(exc)}
    ops = model_op_counts(model, imported.format)
    stats = relax_stats(imported.mod["main"])
    return {
        "source": imported.source,
        "format": imported.format,
        "inputs": [t.to_json() for t in imported.inputs],
        "outputs": [t.to_json() for t in imported.outputs],
        "ops": dict(ops.most_common()),
        "num_ops": sum(ops.values()),
        "relax_ops": dict(stats["relax_ops"].most_common()),
        "params": stats["params"],
        "param_bytes": stats["param_bytes"],
        "macs": sum(stats["macs_by_op"].values()),
        "macs_by_op": dict(stats["macs_by_op"]),
        "op_mapping": mapping,
        "notes": list(imported.notes),
    }


def _source(model) -> str:
    return str(model) if isinstance(model, (str, os.PathLike)) else f"<{type(model).__name__}>"


def op_mapping(model, fmt: str) -> list[dict]:
    """Per (op type, mapping): how many of the model file's operators the import maps that way.

    TFLite (``tflite.op_mappings``): ``builtin converter``, ``densified sparse``, ``folded float16
    constant``, ``custom op``, ``refused``. ONNX: ``builtin converter`` (TVM's ONNX converter),
    ``edgetvm`` (handled by edgetvm's own rewrites before TVM), ``custom op`` (a non-default domain
    the converter knows) or ``refused``. Rows by count, then op type.
    """
    if fmt == "tflite":
        data, source = read_tflite(model)
        tfl = parse_tflite(data, source)
        subgraph = tfl.Subgraphs(0)
        pairs = zip((code for code, _ in op_names(tfl, subgraph)), op_mappings(tfl, subgraph))
    else:
        proto = name_unnamed_nodes(read_onnx(model)[0])
        refused = {name for names in onnx_unsupported_ops(proto).values() for name in names}
        pairs = []
        for node in proto.graph.node:
            default = node.domain in ("", "ai.onnx")
            op = node.op_type if default else f"{node.domain}.{node.op_type}"
            how = ("refused" if node.name in refused else "edgetvm" if node.op_type in DIRECTLY_HANDLED_OPS and default
                   else "builtin converter" if default else "custom op")
            pairs.append((op, how))
    counts = Counter(pairs)
    return [{"op": op, "count": n, "mapping": how}
            for (op, how), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def model_op_counts(model, fmt: str | None = None) -> Counter:
    """Operator types of the model file itself, by count (before any edgetvm rewrite)."""
    fmt = fmt or detect_format(model)
    if fmt == "tflite":
        data, source = read_tflite(model)
        tfl = parse_tflite(data, source)
        return Counter(code for code, _ in op_names(tfl, tfl.Subgraphs(0)))
    proto, _ = read_onnx(model)
    return Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in proto.graph.node)


def _shape(ty) -> tuple[int, ...]:
    return tuple(int(d) for d in ty.shape)


def conv_macs(call: relax.Call, out_shape: tuple[int, ...]) -> int:
    """``prod(out) * kernel[I] * prod(kernel window)``: kernel[I] is C_in / groups in any layout."""
    kernel = _shape(call.args[1].ty)
    layout = str(call.attrs.kernel_layout)
    window = int(np.prod([d for axis, d in zip(layout, kernel) if axis not in "OI"]))
    return int(np.prod(out_shape)) * kernel[layout.index("I")] * window


def conv_transpose_macs(call: relax.Call) -> int:
    """Each input element is scattered through the whole kernel window once per output channel."""
    data = _shape(call.args[0].ty)
    kernel = _shape(call.args[1].ty)
    layout = str(call.attrs.kernel_layout)
    window = int(np.prod([d for axis, d in zip(layout, kernel) if axis not in "OI"]))
    return int(np.prod(data)) * kernel[layout.index("O")] * window


def matmul_macs(call: relax.Call, out_shape: tuple[int, ...]) -> int:
    a = _shape(call.args[0].ty)
    return int(np.prod(out_shape)) * a[-1]


def relax_stats(func: relax.Function) -> dict:
    """Relax op counts, weight elements/bytes and MACs of an imported (static-shape) function."""
    op_counts: Counter = Counter()
    macs: Counter = Counter()
    constants: list[GenericConst] = []

    def collect(expr) -> None:
        if isinstance(expr, GenericConst):
            # A weight bound once and read twice is one parameter tensor.
            if not any(expr.same_as(seen) for seen in constants):
                constants.append(expr)
        elif isinstance(expr, relax.Tuple):
            for field in expr.fields:
                collect(field)

    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or not hasattr(value.op, "name"):
                collect(value)
                continue
            op = str(value.op.name)
            op_counts[op.removeprefix("relax.")] += 1
            for arg in value.args:
                collect(arg)
            ty = binding.var.ty
            if not isinstance(ty, relax.TensorType):
                continue
            if op in CONV_OPS:
                macs["conv"] += conv_macs(value, _shape(ty))
            elif op in CONV_TRANSPOSE_OPS:
                macs["conv_transpose"] += conv_transpose_macs(value)
            elif op in MATMUL_OPS:
                macs["matmul"] += matmul_macs(value, _shape(ty))
    params = param_bytes = 0
    for const in constants:
        ty = const.ty
        dtype = str(ty.dtype)
        if ty.ndim < 1 or dtype in INDEX_DTYPES:
            continue
        count = int(np.prod(_shape(ty)))
        params += count
        param_bytes += count * np.dtype(dtype).itemsize
    return {"relax_ops": op_counts, "macs_by_op": macs, "params": params, "param_bytes": param_bytes}


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:g} {unit}".rstrip()


def render_mapping(rows: list[dict]) -> list[str]:
    """The op mapping as aligned lines: op type, count, mapping."""
    width = max((len(row["op"]) for row in rows), default=0)
    return [f"  {row['op']:<{width}}  {row['count']:>4}  {row['mapping']}" for row in rows]


def render_text(info: dict) -> str:
    """The inspection as a readable report."""
    lines = [f"{info['source']} ({info['format']})"]
    if "refused" in info:
        lines.append(f"operators ({info['num_ops']} nodes), how the import maps them:")
        lines.extend(render_mapping(info["op_mapping"]))
        lines.append("refused: " + info["refused"])
        return "\n".join(lines)
    for kind in ("inputs", "outputs"):
        lines.append(f"{kind}:")
        for t in info[kind]:
            lines.append(f"  {t['name']:<24} {t['dtype']:<8} {list(t['shape'])}")
    lines.append(f"parameters: {info['params']:,} ({_si(info['param_bytes'], 'B')} as imported)")
    by_op = ", ".join(f"{k} {_si(v)}" for k, v in info["macs_by_op"].items())
    lines.append(f"MACs: {info['macs']:,} ({_si(info['macs'])}{'; ' + by_op if by_op else ''})")
    lines.append(f"operators ({info['num_ops']} nodes), how the import maps them:")
    lines.extend(render_mapping(info["op_mapping"]))
    if info["notes"]:
        lines.append("import notes:")
        lines.extend(f"  - {note}" for note in info["notes"])
    return "\n".join(lines)


def render_json(info: dict) -> str:
    return json.dumps(info, indent=2)

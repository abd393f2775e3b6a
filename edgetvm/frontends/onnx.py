"""ONNX to Relax, wrapping ``tvm.relax.frontend.onnx`` and adding what real face models need.

The journey of an ONNX model (each step is an ONNX-to-ONNX rewrite in ``onnx_rewrites``):

    read (path, bytes, ModelProto) -> drop weight "inputs" -> static input shapes -> validate
    -> fold constant DequantizeLinear -> check every op against TVM's converter (one error listing
    all unsupported ops) -> fold shape arithmetic -> Dropout to Identity
    -> (for TVM only) blank Resize's empty scales -> TVM's ONNX converter
    -> ImportedModel (ONNX input/output names, static shapes, notes)
"""

from __future__ import annotations

import contextlib
import io
import operator
import warnings
from pathlib import Path

import numpy as np
import onnx
import tvm
from tvm import relax

from ..errors import InputError, ModelLoadError, UnsupportedModelError
from ..specs import ImportedModel, TensorSpec
from .onnx_rewrites import (
    drop_weight_inputs,
    dropout_to_identity,
    fold_constant_dequantize,
    fold_shape_subgraphs,
    normalize_resize_inputs,
    remove_dead_nodes,
    set_input_shapes,
)
from .limits import check_relax_memory
from .signature import output_specs
from .tvm_failures import CONVERTER_CODE_ERRORS, discard_builder, tvm_reason
from .validate import check_convs, validate_onnx

# Op types TVM's importer handles itself rather than through its converter map.
DIRECTLY_HANDLED_OPS = {"Constant", "If"}


def read_onnx(model) -> tuple[onnx.ModelProto, str]:
    """Parse ``model`` (path, bytes or ModelProto); a truncated or corrupt file is a ModelLoadError."""
    if isinstance(model, onnx.ModelProto):
        proto, source = model, "<ModelProto>"
    else:
        if isinstance(model, (bytes, bytearray)):
            source, data = "<bytes>", bytes(model)
        else:
            source = str(model)
            try:
                data = Path(model).read_bytes()
            except OSError as exc:
                raise ModelLoadError(f"{source}: cannot read the model file ({exc.strerror})") from None
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
            raise ModelLoadError(
                f"{source}: not a valid ONNX file ({type(exc).__name__}); the file may be truncated or corrupt. "
                f"Re-export or re-download it."
            ) from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        load_external_weights(proto, model, source)
    if not proto.graph.node or not proto.graph.output:
        raise ModelLoadError(
            f"{source}: the ONNX file holds no graph nodes or outputs; it is empty, truncated or not ONNX"
        )
    check_graph_wiring(proto, source)
    return proto, source


def load_external_weights(proto: onnx.ModelProto, model, source: str) -> None:
    """Weights stored next to the .onnx file (models over 2 GB, or exported with external data)."""
    if isinstance(model, (bytes, bytearray, onnx.ModelProto)):
        raise ModelLoadError(f"{source}: the model keeps its weights in external files; pass the .onnx path "
                             f"instead so they can be found next to it")
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(Path(model).resolve().parent))
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, onnx's checker ValidationError
        raise ModelLoadError(f"{source}: cannot read the model's external weight file ({exc}); keep the "
                             f"weight files next to the .onnx file") from None


def check_graph_wiring(proto: onnx.ModelProto, source: str) -> None:
    """Every node reads only names produced before it (ONNX requires topological order)."""
    known = {v.name for v in proto.graph.input} | {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        for name in node.input:
            if name and name not in known:
                raise ModelLoadError(
                    f"{source}: node {node.name or node.op_type!r} ({node.op_type}) reads {name!r}, which no "
                    f"earlier node, initializer or graph input produces; the graph is malformed or not "
                    f"topologically sorted. Re-export the model."
                )
        known.update(node.output)
    for out in proto.graph.output:
        if out.name not in known:
            raise ModelLoadError(f"{source}: graph output {out.name!r} is produced by no node; re-export the model")


def onnx_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def name_unnamed_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every nameless node the name ``<OpType>_<index>`` so errors can point at it."""
    if all(node.name for node in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {node.name for node in out.graph.node}
    for index, node in enumerate(out.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return out


def unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Op type -> node names, for every node TVM 0.27's ONNX converter cannot convert at this opset."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    convert_map = _get_convert_map()
    opset = onnx_opset(model)
    found: dict[str, list[str]] = {}
    for node in model.graph.node:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            key = f"{node.domain}.{op}"
        elif op in DIRECTLY_HANDLED_OPS:
            continue
        elif op not in convert_map:
            key = op
        else:
            try:
                convert_map[op].get_converter(opset)
                continue
            except NotImplementedError:
                key = f"{op} (opset {opset})"
        found.setdefault(key, []).append(node.name)
    # Blocked DequantizeLinear survives the weight folding only on activations: TVM rejects it.
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx"):
            if any(a.name == "block_size" and a.i for a in node.attribute):
                found.setdefault("DequantizeLinear (block_size on a non-constant input)", []).append(node.name)
    return found


def check_supported(model: onnx.ModelProto, source: str) -> None:
    found = unsupported_ops(model)
    if not found:
        return
    lines = []
    for op, nodes in sorted(found.items()):
        shown = ", ".join(nodes[:5]) + (f", ... ({len(nodes)} nodes)" if len(nodes) > 5 else "")
        lines.append(f"  {op}: {shown}")
    raise UnsupportedModelError(
        f"{source}: {len(found)} operator type(s) are not supported by TVM 0.27's ONNX importer:\n"
        + "\n".join(lines)
        + "\nReplace them in the model (re-export with other ops, or a lower opset), or remove those nodes.",
        found,
    )


def graph_input_dims(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Each graph input's dims: an int when static, the ``dim_param`` name (or None) when dynamic."""
    dims = {}
    for value in model.graph.input:
        tt = value.type.tensor_type
        if not tt.HasField("shape"):
            dims[value.name] = None
            continue
        dims[value.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                            for d in tt.shape.dim]
    return dims


def resolve_input_shapes(model: onnx.ModelProto, source: str,
                         input_shapes: dict[str, tuple[int, ...]] | None) -> dict[str, tuple[int, ...]]:
    """Static shapes for every graph input: the model's own, completed by ``input_shapes``."""
    declared = graph_input_dims(model)
    names = list(declared)
    given = dict(input_shapes or {})
    unknown = [n for n in given if n not in declared]
    if unknown:
        raise InputError(
            f"{source}: input_shapes names {unknown}, but the model's inputs are {names}; "
            f"write for example --input-shape {names[0]}=..." if names else f"{source}: the model has no inputs"
        )
    shapes = {}
    for name, dims in declared.items():
        if name in given:
            try:
                shape = tuple(operator.index(d) for d in given[name])
            except TypeError:
                shape = ()
            if not shape or not all(d > 0 for d in shape):
                raise InputError(f"{source}: input {name!r}: shape {given[name]!r} must be positive integers")
            if dims is not None and len(shape) != len(dims):
                raise InputError(f"{source}: input {name!r} has rank {len(dims)} ({_show(dims)}), "
                                 f"but the given shape {shape} has rank {len(shape)}")
            # A static dim may be overridden too (a fully convolutional model at another resolution);
            # a graph whose constants assume the declared size then fails at that node, named.
            shapes[name] = shape
        elif dims is None or any(not isinstance(d, int) for d in dims):
            # Dynamic dims show as their names (HEIGHT, WIDTH); a dynamic batch is 1 in the example.
            example = [d if isinstance(d, int) else 1 if i == 0 else str(d or f"D{i}").upper()
                       for i, d in enumerate(dims or ["D0"])]
            raise InputError(
                f"{source}: input {name!r} has dynamic dimensions ({_show(dims)}); give it a static shape: "
                f"--input-shape {name}={','.join(map(str, example))} on the command line, or "
                f"input_shapes={{{name!r}: ({', '.join(map(str, example))})}} in Python, with the sizes you will run at"
            )
        else:
            shapes[name] = tuple(dims)
    return shapes


def _show(dims) -> str:
    if dims is None:
        return "unknown rank"
    return "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"


def overridden_dims_note(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    notes = []
    for name, dims in graph_input_dims(model).items():
        if dims and any(isinstance(d, int) and d != s for d, s in zip(dims, shapes[name])):
            notes.append(f"input {name!r} declared {_show(dims)}, compiled at {list(shapes[name])}")
    return notes


def prepare_onnx(model, input_shapes: dict[str, tuple[int, ...]] | None = None, *,
                 fold_dequantize: bool = True) -> tuple[onnx.ModelProto, str, dict[str, tuple[int, ...]], list[str]]:
    """All ONNX-level rewrites, without TVM: ``(rewritten model, source, static input shapes, notes)``.

    The rewritten model is still a valid ONNX model that onnxruntime can run (it is how the tests
    check the rewrites themselves are exact). ``convert_to_relax`` adapts it further for TVM.
    """
    proto, source = read_onnx(model)
    notes: list[str] = []
    proto = name_unnamed_nodes(proto)
    proto = drop_weight_inputs(proto, notes)
    shapes = resolve_input_shapes(proto, source, input_shapes)
    notes += overridden_dims_note(proto, shapes)
    # Corrupt or hostile structure (payload sizes, declared memory, schema) before any rewrite reads it.
    validate_onnx(proto, source, shapes)
    if fold_dequantize:
        try:
            proto = fold_constant_dequantize(proto, notes)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{source}: {exc}") from None
    check_supported(proto, source)
    proto = set_input_shapes(proto, shapes)
    try:
        proto = fold_shape_subgraphs(proto, notes)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    proto = dropout_to_identity(proto, notes)
    proto = remove_dead_nodes(proto, notes)
    # Quantized or reshaped weights are plain initializers only now: check the convolutions reading them.
    check_convs(proto, source)
    return proto, source, shapes, notes


def _static_shape(expr) -> tuple[int, ...] | None:
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    if shape is None or not all(hasattr(d, "value") for d in shape):
        return None
    return tuple(int(d.value) for d in shape)


def check_unidirectional_broadcast(operand, data, where: str, what: str) -> None:
    """ONNX's one-way broadcast: ``operand``'s dims, right-aligned, are each 1 or ``data``'s dim.

    TVM's converters trust this and build ops that only fail when lowered (a bare assertion in
    TOPI), far from the node; a corrupt model is told here instead.
    """
    small, big = _static_shape(operand), _static_shape(data)
    if small is None or big is None:
        return
    if len(small) > len(big) or any(s not in (1, b) for s, b in zip(reversed(small), reversed(big))):
        raise ModelLoadError(f"{where}: {what} of shape {list(small)} does not broadcast to the input's shape "
                             f"{list(big)}; the model is malformed")


def node_tracking_importer(shapes: dict[str, tuple[int, ...]], keep_params_in_input: bool = False):
    """TVM's ONNX graph importer, remembering in ``.current`` the (op, node) it converts.

    Variadic Max, Min, Sum and Mean become a chain of binary ops (``max(a, b, c) = max(max(a, b), c)``,
    TVM's own form for dynamic shapes) instead of TVM's static form, ``reduce(stack(broadcast(a),
    broadcast(b)), axis=0)``: the stacked 5-D tensor defeats the channels-last layout (ConvertLayout
    fails on it) and costs a copy of every operand, where the binary op fuses into its producer.
    """
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter, Max, Mean, Min, Sum

    pairwise = {"Max": Max, "Min": Min, "Sum": Sum, "Mean": Mean}

    class NodeTrackingImporter(ONNXGraphImporter):
        current: tuple[str, str] | None = None

        def _convert_operator(self, op_name, inputs, attrs, opset):
            self.current = (op_name, attrs.get("tvm_custom", {}).get("name", ""))
            if op_name == "PRelu" and len(inputs) == 2:
                check_unidirectional_broadcast(inputs[1], inputs[0], f"PRelu node {self.current[1]!r}", "slope")
            if op_name in pairwise and not all(isinstance(x, tvm.ir.GenericConst) for x in inputs):
                sym = pairwise[op_name]._impl_dynamic(self.bb, list(inputs))
            else:
                sym = super()._convert_operator(op_name, inputs, attrs, opset)
            # Bound here under the node's name, the node's output keeps it through the passes: the quantization
            # report and --keep-float then speak of "Conv_12", as onnxruntime's nodes_to_exclude does, not "lv7".
            if self.current[1] and isinstance(sym, relax.Call) and isinstance(sym.ty, relax.TensorType):
                sym = self.bb.emit(sym, name_hint=self.current[1])
            return sym

    return NodeTrackingImporter({k: list(v) for k, v in shapes.items()}, "float32",
                                keep_params_in_input=keep_params_in_input)


def convert_to_relax(proto: onnx.ModelProto, source: str, shapes: dict[str, tuple[int, ...]],
                     notes: list[str] | None = None, *, keep_params_in_input: bool = False) -> tvm.IRModule:
    """TVM's converter on a prepared graph; its failures become UnsupportedModelError naming the node.

    Resize inputs are normalized here, not in ``prepare_onnx``: the result is what TVM's converter
    reads, but not valid ONNX at opset 11-12 (see ``onnx_rewrites.resize_inputs``).
    ``keep_params_in_input``: the initializers become parameters of ``main`` after the inputs, named
    as in the ONNX file, their values in its ``params`` attribute (``num_input`` counts the inputs).
    """
    proto = normalize_resize_inputs(proto, notes)
    if proto.ir_version < 3:
        raise ModelLoadError(f"{source}: ONNX IR version {proto.ir_version} is too old; re-export with a newer exporter")
    importer = node_tracking_importer(shapes, keep_params_in_input)
    captured = io.StringIO()
    try:
        # TVM prints the failing op's inputs to stdout and warns about renamed inputs: keep both quiet.
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            warnings.simplefilter("ignore")
            return importer.from_onnx(proto.graph, onnx_opset(proto))
    except Exception as exc:  # noqa: BLE001 - TVM raises AssertionError/ValueError/RuntimeError
        discard_builder(getattr(importer, "bb", None))
        if isinstance(exc, ModelLoadError):  # our own checks between TVM's converters
            raise ModelLoadError(f"{source}: {exc}") from None
        reason = tvm_reason(exc)
        if isinstance(exc, CONVERTER_CODE_ERRORS):
            # The converter's own code tripped over the node; its Python error means nothing to the user.
            reason = "the node does not have the inputs or attributes its op takes; the file is likely corrupt"
        if importer.current is None:
            raise UnsupportedModelError(f"{source}: TVM's ONNX importer failed: {reason}") from exc
        op, node = importer.current
        raise UnsupportedModelError(
            f"{source}: TVM's ONNX importer cannot convert {op} node {node!r}: {reason}. "
            f"Re-export the model without this construct, or report it with the node's attributes.",
            {op: [node]},
        ) from exc


def import_onnx(model, input_shapes: dict[str, tuple[int, ...]] | None = None, *,
                fold_dequantize: bool = True) -> ImportedModel:
    """Import an ONNX model into Relax with static shapes; weights become bound constants.

    ``fold_dequantize=False`` keeps DequantizeLinear of integer weights in the graph (for an int8
    mode that consumes them); TVM's converter then needs them unblocked.
    """
    proto, source, shapes, notes = prepare_onnx(model, input_shapes, fold_dequantize=fold_dequantize)
    mod = convert_to_relax(proto, source, shapes, notes)
    func = mod["main"]
    check_relax_memory(func, source)
    params = list(func.params)
    input_names = list(shapes)
    inputs = [TensorSpec(name, shapes[name], str(p.ty.dtype)) for name, p in zip(input_names, params)]
    output_names = [o.name for o in proto.graph.output]
    return ImportedModel(mod, inputs, output_specs(func, output_names, source), source, "onnx", notes)


def import_onnx_with_weights(model, input_shapes: dict[str, tuple[int, ...]] | None = None
                             ) -> tuple[ImportedModel, dict[str, np.ndarray], onnx.ModelProto]:
    """As :func:`import_onnx`, but ``main`` takes the weights as parameters, named as the ONNX initializers.

    Returns ``(imported, weights, prepared)``: ``imported.mod["main"]`` takes the inputs and then the
    weights (its ``num_input`` attribute counts the inputs), ``weights`` maps each weight parameter's
    name to its value, and ``prepared`` is the ONNX model after ``prepare_onnx``'s rewrites: the
    model the function computes, into which a rewrite of the weights (pruning) can be written back.
    """
    proto, source, shapes, notes = prepare_onnx(model, input_shapes)
    mod = convert_to_relax(proto, source, shapes, notes, keep_params_in_input=True)
    func = mod["main"]
    check_relax_memory(func, source)
    num_input = int(func.attrs["num_input"])
    values = list(func.attrs["params"]) if "params" in func.attrs else []
    weight_params = list(func.params[num_input:])
    if len(values) != len(weight_params):
        raise ModelLoadError(f"{source}: TVM's importer returned {len(values)} weights for {len(weight_params)} "
                             f"weight parameters")
    weights = {str(p.name): v.numpy() for p, v in zip(weight_params, values)}
    attrs = {k: v for k, v in func.attrs.items() if k != "params"}
    func = relax.Function(list(func.params), func.body, func.ret_ty, func.is_pure, tvm.ir.DictAttrs(attrs))
    mod = tvm.IRModule({"main": func})
    inputs = [TensorSpec(name, shapes[name], str(p.ty.dtype)) for name, p in zip(shapes, func.params[:num_input])]
    output_names = [o.name for o in proto.graph.output]
    imported = ImportedModel(mod, inputs, output_specs(func, output_names, source), source, "onnx", notes)
    return imported, weights, proto

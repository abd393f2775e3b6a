"""TFLite to Relax, wrapping ``tvm.relax.frontend.tflite`` (needs the ``tflite`` flatbuffer package).

    read + validate the flatbuffer -> check every op against TVM's converter (one error listing
    all unsupported ops) -> TVM's converter, with float16 weights folded to float32 constants,
    sparse weights made dense (tflite_sparse.py; DENSIFY becomes a constant) and PReLU slopes kept
    per channel (TVM's converter widens them to the activation's size)
    -> ImportedModel (TFLite tensor names for inputs and outputs, static shapes, notes)

Custom ops are converted when CUSTOM_OP_CONVERTERS names their custom code (MediaPipe's four, in
mediapipe_ops.py); any other custom op is refused with the rest of the unsupported ops.

BlazeFace (MediaPipe) stores its weights as float16 buffers behind DEQUANTIZE ops. TVM's converter
turns each into ``astype(const_fp16, "float32")``, which works but leaves 74 casts for FoldConstant
and float16 constants in the graph that weight-reading passes (BN folding, pruning) cannot see
through; converting the buffer with numpy at import is exact (every float16 is a float32).
"""

from __future__ import annotations

import contextlib
import functools
import io
import operator
import warnings
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from ..errors import InputError, ModelLoadError, UnsupportedModelError
from ..relax_utils import bound_constant
from ..specs import ImportedModel, TensorSpec
from .limits import check_relax_memory, check_tflite_memory
from .mediapipe_ops import MEDIAPIPE_CUSTOM_OPS
from .signature import output_specs
from .tflite_sparse import SPARSE_KERNEL_ZEROS, dense_coordinates, densify, read_sparsity
from .tvm_failures import CONVERTER_CODE_ERRORS, discard_builder, tvm_reason


# Bytes per element of the TFLite TensorType values whose constants are checked against their shape
# (schema.fbs: FLOAT32=0, FLOAT16=1, INT32=2, UINT8=3, INT64=4, BOOL=6, INT16=7, INT8=9, FLOAT64=10).
TFLITE_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8}

# Custom ops the converter handles, by custom code: ``convert(converter, op) -> relax.Expr``.
CUSTOM_OP_CONVERTERS = dict(MEDIAPIPE_CUSTOM_OPS)


def read_tflite(model) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "<bytes>"
    source = str(model)
    try:
        return Path(model).read_bytes(), source
    except OSError as exc:
        raise ModelLoadError(f"{source}: cannot read the model file ({exc.strerror})") from None


def parse_tflite(data: bytes, source: str):
    """The flatbuffer's ``tflite.Model``, after walking every table a conversion will read.

    Flatbuffers are read lazily: a corrupt offset only fails when the field is first touched, deep
    inside TVM's converter. Touching every field here first turns any corruption into one
    ModelLoadError naming the file.
    """
    import tflite

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelLoadError(f"{source}: not a TFLite file (no 'TFL3' identifier); the file may be truncated or corrupt")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        num_buffers = model.BuffersLength()
        for c in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(c)
            code.DeprecatedBuiltinCode(), code.BuiltinCode()
            (code.CustomCode() or b"").decode("utf-8")
        subgraph = model.Subgraphs(0)
        num_tensors = subgraph.TensorsLength()
        for t in range(num_tensors):
            _walk_tensor(model, subgraph.Tensors(t), t, num_buffers, len(data))
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            if not 0 <= op.OpcodeIndex() < model.OperatorCodesLength():
                raise ValueError(f"operator {i} has opcode index {op.OpcodeIndex()} out of range")
            for index in list(op.InputsAsNumpy()) + list(op.OutputsAsNumpy()):
                if not -1 <= int(index) < num_tensors:
                    raise ValueError(f"operator {i} refers to tensor {int(index)} of {num_tensors}")
            op.BuiltinOptionsType(), op.BuiltinOptions()
        for index in list(subgraph.InputsAsNumpy()) + list(subgraph.OutputsAsNumpy()):
            if not 0 <= int(index) < num_tensors:
                raise ValueError(f"graph input/output tensor {int(index)} out of range ({num_tensors} tensors)")
    except Exception as exc:  # noqa: BLE001 - flatbuffers raise IndexError, struct.error, UnicodeDecodeError, ...
        raise ModelLoadError(
            f"{source}: the TFLite flatbuffer is truncated or corrupt ({type(exc).__name__}: {str(exc)[:200]}); "
            f"re-export or re-download it"
        ) from None
    return model


def _walk_tensor(model, tensor, index: int, num_buffers: int, file_size: int) -> None:
    (tensor.Name() or b"").decode("utf-8")
    tensor.Type(), tensor.ShapeAsNumpy()
    if tensor.ShapeSignatureLength():
        tensor.ShapeSignatureAsNumpy()
    quant = tensor.Quantization()
    if quant is not None:
        for field in ("Scale", "ZeroPoint", "Min", "Max"):
            if getattr(quant, field + "Length")():
                getattr(quant, field + "AsNumpy")()
        quant.QuantizedDimension()
    if not 0 <= tensor.Buffer() < max(num_buffers, 1):
        raise ValueError(f"tensor {index} refers to buffer {tensor.Buffer()} of {num_buffers}")
    buffer = model.Buffers(tensor.Buffer()) if num_buffers else None
    if buffer is None:
        return
    if buffer.Offset() > 1:  # large models keep buffer data after the flatbuffer
        if buffer.Offset() + buffer.Size() > file_size:
            raise ValueError(f"buffer of tensor {index} ends past the end of the file")
    elif buffer.DataLength():
        buffer.DataAsNumpy()
        itemsize = TFLITE_ITEMSIZE.get(tensor.Type())
        name = (tensor.Name() or b"?").decode("utf-8")
        if tensor.Sparsity() is not None:
            # A sparse constant stores only the values its sparsity parameters place (tflite_sparse.py).
            try:
                dense_coordinates(read_sparsity(tensor.Sparsity()), tuple(int(d) for d in tensor.ShapeAsNumpy()),
                                  buffer.DataLength() // (itemsize or 1))
            except ValueError as exc:
                raise ValueError(f"sparse constant tensor {name!r}: {exc}") from None
            return
        expected = int(np.prod(tensor.ShapeAsNumpy(), dtype=np.int64)) * itemsize if itemsize else None
        if expected is not None and buffer.DataLength() != expected:
            raise ValueError(f"constant tensor {name!r} of shape {list(tensor.ShapeAsNumpy())} holds "
                             f"{buffer.DataLength()} bytes, expected {expected}")


def tensor_name(subgraph, index: int) -> str:
    name = subgraph.Tensors(index).Name()
    return name.decode("utf-8") if name is not None else f"tvmgen_tensor_{index}"


def _converter_class():
    """TVM's TFLite OperatorConverter, remembering the op it converts, with float16 weights folded."""
    from tflite.TensorType import TensorType
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    class EdgeOperatorConverter(OperatorConverter):
        current: tuple[str, str] | None = None
        absent_input = False
        folded_fp16 = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.densified: dict[str, float] = {}  # sparse tensor name -> fraction of zeros once dense
            for custom, convert in CUSTOM_OP_CONVERTERS.items():
                self.convert_map[f"CUSTOM:{custom}"] = functools.partial(convert, self)
            for code, convert in list(self.convert_map.items()):
                self.convert_map[code] = functools.partial(self._convert_named, convert)

        def _convert_named(self, convert, op):
            # Bound under the op's output tensor name, the op's values keep it through the passes: the
            # quantization report and --keep-float then speak of "conv2d_3/Relu", not "lv7".
            result = convert(op=op)
            outputs = op.OutputsAsNumpy()
            name = tensor_name(self.subgraph, int(outputs[0])) if len(outputs) else ""
            named = emit_named(self.bb, result, name) if name else None
            result = result if named is None else named
            # The rest of the op bound here too: left nested, the next op's naming would reach into it.
            return self.bb.emit(result) if isinstance(result, relax.Call) else result

        def get_op_code_str(self, op):
            oc = self.model.OperatorCodes(op.OpcodeIndex())
            custom = (oc.CustomCode() or b"").decode("utf-8")
            code = f"CUSTOM:{custom}" if custom in CUSTOM_OP_CONVERTERS else super().get_op_code_str(op)
            outputs = op.OutputsAsNumpy()
            self.current = (code, tensor_name(self.subgraph, int(outputs[0])) if len(outputs) else "")
            self.absent_input = any(int(i) < 0 for i in op.InputsAsNumpy())
            return code

        def get_tensor_value(self, tensor_wrapper, is_sparse=False):
            sparsity = tensor_wrapper.tensor.Sparsity()
            if sparsity is None:
                return super().get_tensor_value(tensor_wrapper, is_sparse)
            # TVM's own densifier loops in Python per element; this one is exact and vectorised.
            stored = super().get_tensor_value(tensor_wrapper, is_sparse=True)
            dense = densify(stored, tuple(int(d) for d in self.get_tensor_shape(tensor_wrapper)),
                            read_sparsity(sparsity))
            self.densified[(tensor_wrapper.tensor.Name() or b"?").decode("utf-8")] = float(np.mean(dense == 0))
            return dense

        def convert_densify(self, op):
            # The dense value is known at import: later ops read it as a constant (a prefetched node).
            (tensor,) = self.get_input_tensors(op)
            (output,) = self.get_output_tensors(op)
            self.set_prefetched_node(output.tensor_idx, self.get_tensor_value(tensor))

        def convert_dequantize(self, op):
            (tensor,) = self.get_input_tensors(op)
            constant = self.is_prefetched(tensor.tensor_idx) or (
                tensor.buffer is not None and tensor.buffer.DataLength() > 0)
            if tensor.tensor.Type() == TensorType.FLOAT16 and constant:
                value = self.get_tensor_value_or_prefetched(tensor).astype(np.float32)
                self.folded_fp16 += 1
                return self.exp_tab.new_const(value, dtype="float32", source_name=tensor.tensor.Name())
            return super().convert_dequantize(op)

        def convert_prelu(self, op):
            # TVM broadcasts the slope to the whole activation and flattens both, so FoldConstant
            # turns a (1, 1, C) slope into an H*W*C constant: palm_detection_lite's 3.8 MB of
            # weights became 14 MB. A slope that varies only along the channels (TFLite's
            # shared_axes=[1, 2], the usual case) is ``prelu(x, alpha[C], axis=-1)`` exactly.
            data, alpha = self.get_input_tensors(op)[:2]
            shape = [int(d) for d in self.get_tensor_shape(data)]
            # A float16 slope is already a float32 constant here (convert_dequantize above).
            value = bound_constant(self.get_tensor_expr(alpha))
            # Quantized PReLU (integer data or slope) keeps TVM's conversion and its requantization.
            floats = data.tensor.Type() == TensorType.FLOAT32 and value is not None and value.dtype == np.float32
            slope = per_channel_slope(value, shape) if floats else None
            if slope is None:
                return super().convert_prelu(op)
            return relax.op.nn.prelu(self.get_tensor_expr(data), relax.const(slope, "float32"), axis=len(shape) - 1)

    return EdgeOperatorConverter


# Ops a TFLite op's converter puts before the op itself (SAME padding, a layout change).
LEADING_DATA_MOVEMENT = {"relax.nn.pad", "relax.reshape", "relax.permute_dims", "relax.expand_dims",
                         "relax.squeeze"}


def emit_named(bb, expr, name: str):
    """``expr`` with the op's own computation bound under ``name``: its first computed call that
    reads an activation and is not padding or a layout change (the conv inside a fused activation,
    the chain the quantization report names by its first node). One binding per op: TFLite's tensor
    names are unique, and the block builder's de-duplication of a second one (``conv2d_1`` ->
    ``conv2d_11``) would collide with another op's name. Returns the expression, or None when no
    call in it qualifies."""
    if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op) or not reads_activation(expr):
        return None
    for i, arg in enumerate(expr.args):
        named = emit_named(bb, arg, name)
        if named is not None:
            args = list(expr.args)
            args[i] = named
            return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
    if str(expr.op.name) in LEADING_DATA_MOVEMENT:
        return None
    return bb.emit(expr, name_hint=name)


def reads_activation(expr) -> bool:
    """Whether a value that is not a constant flows into ``expr``."""
    if isinstance(expr, relax.Var):
        return True
    if isinstance(expr, relax.Call):
        return any(reads_activation(a) for a in expr.args)
    if isinstance(expr, relax.Tuple):
        return any(reads_activation(f) for f in expr.fields)
    return False


def per_channel_slope(alpha: np.ndarray, data_shape: list[int]) -> np.ndarray | None:
    """``alpha`` as a float32 vector over the last axis of ``data_shape``, or None when it varies
    along other axes too (or does not broadcast) and must stay a full tensor."""
    if not data_shape or alpha.ndim > len(data_shape) or any(d != 1 for d in alpha.shape[:-1]):
        return None
    channels = data_shape[-1]
    size = alpha.shape[-1] if alpha.ndim else 1
    if size not in (1, channels):
        return None
    return np.broadcast_to(alpha.reshape(-1).astype(np.float32), (channels,)).copy()


def op_names(model, subgraph) -> list[tuple[str, str]]:
    """(op code, name of its first output tensor) for every operator of the main subgraph."""
    from tflite.BuiltinOperator import BuiltinOperator

    codes = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    result = []
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        code = max(oc.DeprecatedBuiltinCode(), oc.BuiltinCode())
        name = codes.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            custom = oc.CustomCode()
            name = f"CUSTOM:{custom.decode() if custom else '?'}"
        outs = op.OutputsAsNumpy()
        result.append((name, tensor_name(subgraph, int(outs[0])) if len(outs) else f"op#{i}"))
    return result


def supported_op_codes(model, subgraph) -> set[str]:
    """The op codes (``op_names``' spelling) edgetvm's TFLite converter converts."""
    from tvm.relax import BlockBuilder
    from tvm.relax.frontend.tflite.tflite_frontend import ExprTable

    return set(_converter_class()(model, subgraph, ExprTable(), BlockBuilder()).convert_map)


def unsupported_ops(model, subgraph) -> dict[str, list[str]]:
    supported = supported_op_codes(model, subgraph)
    found: dict[str, list[str]] = {}
    for code, output in op_names(model, subgraph):
        if code not in supported:
            found.setdefault(code, []).append(output)
    return found


def op_mappings(model, subgraph) -> list[str]:
    """How the import maps each operator of the main subgraph, in order: ``densified sparse``
    (DENSIFY of a sparse constant: a dense constant at import), ``folded float16 constant``
    (DEQUANTIZE of a float16 constant, densified or not), ``builtin converter`` (TVM's converter),
    ``custom op`` (a CUSTOM op the converter knows) or ``refused``."""
    from tflite.TensorType import TensorType

    supported = supported_op_codes(model, subgraph)
    densified: set[int] = set()
    mappings = []
    for i, (code, _) in enumerate(op_names(model, subgraph)):
        op = subgraph.Operators(i)
        inputs = [int(t) for t in op.InputsAsNumpy()]
        source = subgraph.Tensors(inputs[0]) if inputs and inputs[0] >= 0 else None
        constant = source is not None and (inputs[0] in densified or model.Buffers(source.Buffer()).DataLength() > 0)
        if code not in supported:
            mappings.append("refused")
        elif code == "DENSIFY" and constant and source.Sparsity() is not None:
            densified.update(int(t) for t in op.OutputsAsNumpy())
            mappings.append("densified sparse")
        elif code == "DEQUANTIZE" and constant and source.Type() == TensorType.FLOAT16:
            mappings.append("folded float16 constant")
        else:
            mappings.append("custom op" if code.startswith("CUSTOM:") else "builtin converter")
    return mappings


def resolve_input_shapes(subgraph, source: str, input_shapes) -> dict[str, tuple[int, ...]]:
    declared = {}
    for index in subgraph.InputsAsNumpy():
        tensor = subgraph.Tensors(int(index))
        sig = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
        declared[tensor_name(subgraph, int(index))] = (tuple(int(d) for d in tensor.ShapeAsNumpy()),
                                                       tuple(int(d) for d in sig))
    given = dict(input_shapes or {})
    unknown = [n for n in given if n not in declared]
    if unknown:
        raise InputError(f"{source}: input_shapes names {unknown}, but the model's inputs are {list(declared)}")
    shapes = {}
    for name, (shape, signature) in declared.items():
        if name not in given:
            shapes[name] = shape
            continue
        try:
            new = tuple(operator.index(d) for d in given[name])
        except TypeError:
            raise InputError(f"{source}: input {name!r}: shape {given[name]!r} must be integers") from None
        if not all(d > 0 for d in new):
            raise InputError(f"{source}: input {name!r}: shape {given[name]!r} must be positive integers")
        if len(new) != len(shape) or any(s != -1 and s != n for s, n in zip(signature, new)):
            raise InputError(f"{source}: input {name!r} has shape {list(signature)} (-1 = free); "
                             f"the given shape {new} does not fit it")
        shapes[name] = new
    return shapes


def import_tflite(model, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ImportedModel:
    """Import a TFLite model (path or bytes) into Relax; weights become float32 constants."""
    from tvm.relax.frontend.tflite import from_tflite

    data, source = read_tflite(model)
    tfl = parse_tflite(data, source)
    check_tflite_memory(tfl, source)
    subgraph = tfl.Subgraphs(0)
    found = unsupported_ops(tfl, subgraph)
    if found:
        lines = [f"  {op}: " + ", ".join(names[:5]) + (f", ... ({len(names)} ops)" if len(names) > 5 else "")
                 for op, names in sorted(found.items())]
        raise UnsupportedModelError(
            f"{source}: {len(found)} operator type(s) are not supported by TVM 0.27's TFLite importer "
            f"(listed with their output tensors):\n" + "\n".join(lines)
            + "\nConvert the model without them (TFLite builtins only, no select-TF ops; of custom ops only "
            + ", ".join(sorted(CUSTOM_OP_CONVERTERS)) + " are supported).", found)
    shapes = resolve_input_shapes(subgraph, source, input_shapes)
    converter = _converter_class()
    instances = []

    def make_converter(*args, **kwargs):
        instances.append(converter(*args, **kwargs))
        return instances[-1]

    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            mod = from_tflite(tfl, shape_dict=shapes, op_converter=make_converter)
    except Exception as exc:  # noqa: BLE001 - TVM raises AssertionError/ValueError/RuntimeError
        current = instances[0].current if instances else None
        if instances:
            discard_builder(getattr(instances[0], "bb", None))
        if isinstance(exc, UnsupportedModelError):  # a custom-op converter refused the op and said why
            raise UnsupportedModelError(f"{source}: {exc}", exc.unsupported) from None
        where = f" at {current[0]} op producing {current[1]!r}" if current else ""
        reason = tvm_reason(exc)
        if isinstance(exc, CONVERTER_CODE_ERRORS):
            # The converter's own code tripped over the op; its Python error means nothing to the user.
            absent = " (an input it needs is marked absent, -1)" if instances and instances[0].absent_input else ""
            reason = f"the op's inputs or options are malformed{absent}; the file is likely corrupt"
        raise UnsupportedModelError(f"{source}: TVM's TFLite importer failed{where}: {reason}",
                                    {current[0]: [current[1]]} if current else {}) from exc
    # The frontend also lists every constant in a "params" attribute; they are bound in the body
    # already, and a second copy would only travel through every pass.
    func = mod["main"]
    if func.attrs is not None and "params" in func.attrs:
        mod["main"] = func.without_attr("params")
    notes = []
    if instances[0].folded_fp16:
        notes.append(f"folded {instances[0].folded_fp16} float16 weight DEQUANTIZE op(s) to float32 constants")
    notes.extend(sparse_notes(instances[0].densified))
    func = mod["main"]
    check_relax_memory(func, source)
    inputs = [TensorSpec(name, tuple(int(d) for d in p.ty.shape), str(p.ty.dtype))
              for name, p in zip(shapes, func.params)]
    output_names = [tensor_name(subgraph, int(i)) for i in subgraph.OutputsAsNumpy()]
    return ImportedModel(mod, inputs, output_specs(func, output_names, source), source, "tflite", notes)


def sparse_notes(densified: dict[str, float]) -> list[str]:
    """The compile report's lines on densified sparse weights, naming those sparse enough to pay."""
    if not densified:
        return []
    zeros = sorted(densified.values())
    notes = [f"densified {len(densified)} sparse weight tensor(s) (TFLite sparsity parameters) to dense "
             f"constants: {zeros[0]:.1%} to {zeros[-1]:.1%} zeros"]
    sparse = [name for name, z in densified.items() if z >= SPARSE_KERNEL_ZEROS]
    if sparse:
        shown = ", ".join(sparse[:3]) + (f", ... ({len(sparse)} tensors)" if len(sparse) > 3 else "")
        notes.append(f"{len(sparse)} densified weight tensor(s) are >= {SPARSE_KERNEL_ZEROS:.0%} zeros ({shown}); "
                     f"a sparse kernel would skip those multiplies, but they run as dense convolutions for now "
                     f"(ARMv7 sparse 1x1 kernels are not implemented yet)")
    return notes

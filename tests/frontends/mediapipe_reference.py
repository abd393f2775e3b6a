"""Independent numpy references of MediaPipe's four TFLite custom ops, and LiteRT running a MediaPipe
model with those ops computed in numpy.

The references follow MediaPipe's definitions step by step in float32 (atan2, cos and sin, the
rotation matrices multiplied out), where edgetvm's converters use closed forms; they share no code.
"""

from __future__ import annotations

import struct

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers


def transpose_conv_bias(x: np.ndarray, w_ohwi: np.ndarray, bias: np.ndarray, stride_hw: tuple[int, int],
                        same: bool) -> np.ndarray:
    """Scatter form: every input pixel adds x * w into the output window it reaches, then crop."""
    n, h, w, _ = x.shape
    o, kh, kw, _ = w_ohwi.shape
    sh, sw = stride_hw
    full = np.zeros((n, sh * (h - 1) + kh, sw * (w - 1) + kw, o), np.float64)
    for y in range(h):
        for xx in range(w):
            full[:, y * sh:y * sh + kh, xx * sw:xx * sw + kw, :] += np.einsum(
                "ni,ohwi->nhwo", x[:, y, xx, :].astype(np.float64), w_ohwi.astype(np.float64))
    pad_h = max(0, kh - (h - 1) % sh - 1) if same else 0
    pad_w = max(0, kw - (w - 1) % sw - 1) if same else 0
    out_h, out_w = full.shape[1] - pad_h, full.shape[2] - pad_w
    top, left = pad_h // 2, pad_w // 2
    return (full[:, top:top + out_h, left:left + out_w, :] + bias).astype(np.float32)


def transform_tensor_bilinear(data: np.ndarray, matrix: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Version 2: pixel (x, y) of the output samples the input at S T A (x, y, 0, 1), bilinearly."""
    _, h, w, c = data.shape
    shift = np.eye(4, dtype=np.float64)
    shift[:2, 3] = 0.5
    unshift = np.eye(4, dtype=np.float64)
    unshift[:2, 3] = -0.5
    t = unshift @ matrix[0].astype(np.float64) @ shift
    out = np.zeros((1, out_h, out_w, c), np.float32)
    padded = np.zeros((h + 1, w + 1, c), np.float64)
    padded[:h, :w] = data[0]
    for y in range(out_h):
        for x in range(out_w):
            sx, sy = (t @ np.array([x, y, 0.0, 1.0]))[:2]
            if not (0 <= sx <= w - 1 and 0 <= sy <= h - 1):
                continue
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            ax, ay = sx - x0, sy - y0
            out[0, y, x] = ((1 - ay) * ((1 - ax) * padded[y0, x0] + ax * padded[y0, x0 + 1])
                            + ay * ((1 - ax) * padded[y0 + 1, x0] + ax * padded[y0 + 1, x0 + 1]))
    return out


def rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def landmarks_to_transform_matrix(landmarks: np.ndarray, options: dict) -> np.ndarray:
    """Version 2: the crop of the rotated bounding box of ``subset_idxs``, as a 4x4 matrix."""
    points = landmarks[0, :, :2].astype(np.float64)
    left, right = points[options["left_rotation_idx"]], points[options["right_rotation_idx"]]
    angle = options.get("target_rotation_radians", 0.0) - np.arctan2(right[1] - left[1], right[0] - left[0])
    rotated = points[np.asarray(options["subset_idxs"])] @ rotation(angle).T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    centre = rotation(-angle) @ ((low + high) / 2)
    size = high - low
    out_w, out_h = options["output_width"], options["output_height"]

    def homogeneous(linear, translation):
        m = np.eye(4)
        m[:2, :2], m[:2, 3] = linear, translation
        return m

    t = (homogeneous(np.eye(2), centre) @ homogeneous(rotation(-angle), 0)
         @ homogeneous(np.diag([options["scale_x"] * size[0] / out_w, options["scale_y"] * size[1] / out_h]), 0)
         @ homogeneous(np.eye(2), [-out_w / 2, -out_h / 2]))
    return t[None].astype(np.float32)


def transform_landmarks(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Version 2: (x, y) -> the matrix's first two rows on (x, y, 0, 1); z unchanged."""
    out = landmarks.astype(np.float64).copy()
    m = matrix[0].astype(np.float64)
    xy1 = np.stack([landmarks[0, :, 0], landmarks[0, :, 1], np.ones(landmarks.shape[1])], axis=-1)
    out[0, :, :2] = xy1 @ m[:2, [0, 1, 3]].T
    return out.astype(np.float32)


def custom_op(name: str, version: int, options: bytes, inputs: dict[str, np.ndarray],
              constants: dict[str, np.ndarray], output: tuple[str, tuple[int, ...]]) -> bytes:
    """A TFLite flatbuffer holding one custom op: ``inputs`` are graph inputs, ``constants`` weights."""
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode, code.version = name, version
    model.operatorCodes = [code]
    model.buffers = [schema.BufferT()]
    subgraph = schema.SubGraphT()
    subgraph.tensors = []

    def add_tensor(tensor_name, shape, data=None):
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type = tensor_name, list(shape), schema.TensorType.FLOAT32
        tensor.buffer = 0
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data, np.float32).tobytes(), np.uint8)
            model.buffers.append(buffer)
            tensor.buffer = len(model.buffers) - 1
        subgraph.tensors.append(tensor)
        return len(subgraph.tensors) - 1

    graph_inputs = {n: add_tensor(n, v.shape) for n, v in inputs.items()}
    weights = {n: add_tensor(n, v.shape, v) for n, v in constants.items()}
    out = add_tensor(*output)
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [{**graph_inputs, **weights}[n] for n in {**inputs, **constants}]
    op.outputs = [out]
    op.customOptions = np.frombuffer(options, np.uint8) if options else None
    subgraph.operators = [op]
    subgraph.inputs, subgraph.outputs = list(graph_inputs.values()), [out]
    model.subgraphs = [subgraph]
    return pack(model)


def pack(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def transpose_conv_options(same: bool, stride_w: int, stride_h: int) -> bytes:
    return struct.pack("<3i", 1 if same else 2, stride_w, stride_h)


def flex(options: dict) -> bytes:
    return bytes(flexbuffers.Dumps(options))


def run_custom_op(name: str, options: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    """A custom op of a MediaPipe model on its input values, by the references above."""
    if name == "Convolution2DTransposeBias":
        padding, stride_w, stride_h = struct.unpack("<3i", options[:12])
        return transpose_conv_bias(*inputs, (stride_h, stride_w), same=padding == 1)
    decoded = flexbuffers.Loads(options) if options else {}
    if name == "Landmarks2TransformMatrix":
        return landmarks_to_transform_matrix(inputs[0], decoded)
    if name == "TransformTensorBilinear":
        return transform_tensor_bilinear(*inputs, decoded["output_height"], decoded["output_width"])
    if name == "TransformLandmarks":
        return transform_landmarks(*inputs)
    raise AssertionError(f"no reference for custom op {name}")


def litert_with_numpy_custom_ops(path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The model's outputs on ``x``: LiteRT runs every builtin op, the references above the custom ops.

    The custom ops are cut out: their outputs become extra graph inputs, their inputs extra graph
    outputs. Each LiteRT run then computes everything that does not depend on a custom op not yet
    evaluated; running the references on what it returns and feeding their results back, one run
    per level of custom ops, reaches the model's true values.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = schema.ModelT.InitFromPackedBuf(open(path, "rb").read(), 0)
    graph = model.subgraphs[0]
    names = {i: t.name.decode() if isinstance(t.name, bytes) else t.name for i, t in enumerate(graph.tensors)}
    custom = [op for op in graph.operators if model.operatorCodes[op.opcodeIndex].customCode]
    graph.operators = [op for op in graph.operators if op not in custom]
    constant = {i for i, t in enumerate(graph.tensors) if model.buffers[t.buffer].data is not None}
    original_outputs = [names[i] for i in graph.outputs]
    cut_inputs = [int(op.outputs[0]) for op in custom]
    needed = sorted({int(i) for op in custom for i in op.inputs if int(i) not in constant})
    graph.inputs = list(graph.inputs) + cut_inputs
    graph.outputs = list(graph.outputs) + [i for i in needed if i not in graph.outputs]
    # XNNPACK's delegate refuses a graph whose inputs are also its outputs; the reference kernels run it.
    interpreter = Interpreter(model_content=pack(model), num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    details_in = {d["name"]: d for d in interpreter.get_input_details()}
    details_out = {d["name"]: d for d in interpreter.get_output_details()}
    values = {names[i]: np.zeros(graph.tensors[i].shape, np.float32) for i in cut_inputs}
    for _ in range(len(custom) + 1):
        interpreter.set_tensor(details_in[names[int(graph.inputs[0])]]["index"], x)
        for name, value in values.items():
            interpreter.set_tensor(details_in[name]["index"], value)
        interpreter.invoke()
        got = {n: interpreter.get_tensor(d["index"]).copy() for n, d in details_out.items()}
        for op in custom:
            args = [got[names[int(i)]] if int(i) not in constant else constant_value(model, graph, int(i))
                    for i in op.inputs]
            options = bytes(op.customOptions) if op.customOptions is not None else b""
            code = model.operatorCodes[op.opcodeIndex].customCode
            values[names[int(op.outputs[0])]] = run_custom_op(code.decode() if isinstance(code, bytes) else code,
                                                              options, args)
    return {n: got[n] for n in original_outputs}


def constant_value(model, graph, index: int) -> np.ndarray:
    tensor = graph.tensors[index]
    data = np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes()
    return np.frombuffer(data, np.float32).reshape(tensor.shape)

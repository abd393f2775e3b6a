"""Prune a model's channels and hand back both the compiler's graph and a pruned ONNX file.

The recipe of the field is "prune, train, repeat": ``prune_model`` does the prune (on the Relax
graph, see ``passes/prune_channels.py``), recovers what it can without training (lossless folding
of constant channels, least-squares refit on calibration inputs), and writes the same channel
selection back into the original ONNX file, so the user can fine-tune it and close the loop:

    conv weights / biases, BN parameters, PReLU slopes, Mul/Add scales  <- sliced like the Relax weights
    depthwise Conv ``group``                                          <- the new channel count
    Gemm / MatMul weights (also after Flatten: whole H*W blocks)      <- sliced like the Relax weights
    Reshape shape constants                                            <- recomputed from the new input
    the offsets of layers that lost inputs                             <- added to the Conv/Gemm bias

The pruned ONNX loads in onnxruntime and computes what the pruned Relax graph computes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputError, ModelLoadError, UnsupportedModelError, first_line
from .rewrite import ALLOCATIONS, PruneResult, PruningConfig, offset_name, prune_function
from ..specs import TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


# -- running a Relax function on the host, for calibration ---------------------------------------
class HostEvaluator:
    """``evaluate(func, weights, inputs)``: compiles ``func`` for the host once, runs every input."""

    def __init__(self):
        self._cache: dict[int, tuple] = {}

    def __call__(self, func, weights: dict, inputs: list) -> list[list[np.ndarray]]:
        import tvm
        from tvm import relax

        from ..backends.vm import build_vm
        from .rewrite import split_params
        from ..schedules.lower import legalize_and_fuse
        from ..targets import resolve_target

        entry = self._cache.get(id(func))
        if entry is None or entry[0] is not func:
            target = resolve_target("host")
            mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
            exe = build_vm(legalize_and_fuse(mod, target), target)
            entry = (func, relax.VirtualMachine(exe, tvm.cpu()))
            self._cache = {id(func): entry}
        vm = entry[1]
        device = tvm.cpu()
        _, weight_params = split_params(func)
        weight_args = [tvm.runtime.tensor(np.ascontiguousarray(weights[str(p.name)]), device) for p in weight_params]
        rows = []
        for sample in inputs:
            result = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in sample], *weight_args)
            items = list(result) if isinstance(result, (tvm.ir.Array, list, tuple)) else [result]
            rows.append([item.numpy() for item in items])
        return rows


class CalibrationEvaluator:
    """numpy when it can run every op of the function (fast, no compile), else the host VM."""

    def __init__(self):
        from .numpy_eval import NumpyEvaluator

        self.numpy = NumpyEvaluator()
        self.host = HostEvaluator()
        self.used: set[str] = set()

    def __call__(self, func, weights: dict, inputs: list) -> list[list[np.ndarray]]:
        from .numpy_eval import unsupported_ops

        if not unsupported_ops(func):
            try:
                rows = self.numpy(func, weights, inputs)
                self.used.add("numpy")
                return rows
            except NotImplementedError:
                pass
        self.used.add("tvm-host")
        return self.host(func, weights, inputs)

    def stepper(self, func):
        """A step-by-step runner (sequential refit in one forward pass), if numpy can run ``func``."""
        from .numpy_eval import FunctionStepper, unsupported_ops

        return None if unsupported_ops(func) else FunctionStepper


# -- calibration inputs --------------------------------------------------------------------------
# Least-squares recovery keeps every calibration sample's activations at every refit layer (SFace,
# 192 faces: 4.5 GB at peak); more samples than this are cut, and the report says so.
CALIBRATION_LIMIT = 256


def load_calibration(calibration, inputs: list[TensorSpec], limit: int | None = None,
                     notes: list[str] | None = None) -> list[list[np.ndarray]] | None:
    """Calibration samples as a list of per-sample input lists, each shaped like the model's inputs.

    Accepted: None; an array with a leading sample axis (one-input models); a list of arrays or of
    per-input lists; a directory of ``.npy`` files (one sample each) or images (RGB, 0..255, resized
    to the input's H x W, laid out NCHW; the model must do its own normalisation, as SFace does).
    At most ``limit`` (default ``CALIBRATION_LIMIT``) samples are used (a directory's first, by file
    name); a note in ``notes`` says when some were left out.
    """
    if calibration is None:
        return None
    limit = CALIBRATION_LIMIT if limit is None else limit
    if isinstance(calibration, (str, os.PathLike)):
        return _calibration_dir(Path(calibration), inputs, limit, notes)
    calibration = list(calibration)  # a list, or an array's leading sample axis
    if len(calibration) > limit and notes is not None:
        notes.append(f"calibration: used the first {limit} of {len(calibration)} samples (the least-squares refit "
                     f"keeps every sample's activations in memory)")
    samples = []
    for item in calibration[:limit]:
        arrays = list(item) if isinstance(item, (list, tuple)) else [item]
        if len(arrays) != len(inputs):
            raise InputError(f"calibration sample has {len(arrays)} arrays; the model has {len(inputs)} inputs")
        sample = []
        for spec, arr in zip(inputs, arrays):
            arr = np.asarray(arr, dtype=spec.dtype)
            if arr.shape != spec.shape:
                if arr.size == int(np.prod(spec.shape)):
                    arr = arr.reshape(spec.shape)
                else:
                    raise InputError(f"calibration input {spec.name!r}: shape {list(arr.shape)}, the model wants "
                                     f"{list(spec.shape)}")
            sample.append(arr)
        samples.append(sample)
    if not samples:
        raise InputError("calibration: no samples given")
    return samples


def _calibration_dir(path: Path, inputs: list[TensorSpec], limit: int, notes: list[str] | None):
    if not path.is_dir():
        raise InputError(f"--calib {path}: not a directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npy",) + IMAGE_SUFFIXES)
    if len(files) > limit and notes is not None:
        notes.append(f"calibration: used the first {limit} of the {len(files)} files in {path} (by name)")
    files = files[:limit]
    if not files:
        raise InputError(f"--calib {path}: no .npy or image files in it")
    if len(inputs) != 1 and any(p.suffix.lower() != ".npy" for p in files):
        raise InputError(f"--calib {path}: images need a one-input model; this one has {len(inputs)} inputs")
    samples = []
    for file in files:
        if file.suffix.lower() == ".npy":
            try:
                arr = np.load(file, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"--calib {file}: cannot read ({exc})") from None
            samples.append(arr)
        else:
            samples.append(image_to_input(file, inputs[0]))
    return load_calibration(samples, inputs, limit)


def image_to_input(file: Path, spec: TensorSpec) -> np.ndarray:
    from PIL import Image

    if len(spec.shape) != 4 or spec.shape[1] not in (1, 3):
        raise InputError(f"--calib image {file}: the model input {spec.name} {list(spec.shape)} is not NCHW")
    try:
        image = Image.open(file).convert("RGB" if spec.shape[1] == 3 else "L")
    except OSError as exc:
        raise InputError(f"--calib {file}: cannot read the image ({exc})") from None
    image = image.resize((spec.shape[3], spec.shape[2]), Image.BILINEAR)
    arr = np.asarray(image, dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr[None].astype(spec.dtype)


# -- the user-level API --------------------------------------------------------------------------
@dataclass
class PrunedModel:
    """What ``prune_model`` returns: the pruned ONNX (if the input was ONNX) and the pruned Relax graph."""

    onnx: onnx.ModelProto | None
    result: PruneResult
    inputs: list[TensorSpec]
    notes: list[str] = field(default_factory=list)

    @property
    def report(self) -> dict:
        return {**self.result.report(), "notes": self.result.plan.notes + self.notes}

    def save(self, path: str | os.PathLike) -> Path:
        from ..io import atomic_write_bytes

        if self.onnx is None:
            raise InputError("this model was not ONNX: there is no pruned ONNX file to write")
        atomic_write_bytes(path, self.onnx.SerializeToString())
        return Path(path)


def pruning_config(ratio=0.3, criterion="auto", round_to: int = 4, spatial_folds: bool = False,
                   allocation: str = "auto", calibrated: bool = False) -> PruningConfig:
    """``criterion`` is "auto", "l1", "bn_gamma", "activation", "reconstruction" or a dict of masks
    {layer: keep mask over its outputs}; ``allocation`` "auto", "uniform", "global" or "sensitivity".

    "auto" picks what measured best on SFace (see ``benchmarks/bench_pruning.py``): with calibration
    inputs (``calibrated``), channels chosen by ``reconstruction`` (greedy least-squares elimination;
    embedding cosine at 20% with 48 calibration faces: 0.942; 0.938 with a quadratic cost model and
    activation ranking of the channels before a flatten; 0.9515 with 192 faces) and a ``sensitivity``
    allocation of one global ratio; without, ``l1`` and ``uniform`` (every group loses ``ratio``).
    """
    if allocation == "auto":
        allocation = "sensitivity" if calibrated and not isinstance(ratio, dict) and not isinstance(criterion, dict) \
            and float(ratio) > 0 else "uniform"
    if allocation not in ALLOCATIONS:
        raise InputError(f"prune allocation {allocation!r}: use one of {['auto', *ALLOCATIONS]}")
    if isinstance(criterion, dict):
        return PruningConfig(ratio=ratio, criterion="l1", masks=criterion, round_to=round_to,
                             spatial_folds=spatial_folds, allocation="uniform")
    if criterion == "auto":
        criterion = "reconstruction" if calibrated else "l1"
    return PruningConfig(ratio=ratio, criterion=str(criterion), round_to=round_to, spatial_folds=spatial_folds,
                         allocation=allocation)


def prune_model(model, ratio=0.3, *, criterion="auto", calibration=None, recover: bool = True,
                input_shapes: dict | None = None, round_to: int = 4, spatial_folds: bool = False,
                allocation: str = "auto") -> PrunedModel:
    """Prune ``model`` (ONNX path/bytes/ModelProto, or TFLite path) and recover without retraining.

    ``ratio``: the fraction of channels to remove, or ``{weight name pattern: fraction, "*": default}``
    per layer group; 0 removes only channels whose output is constant (lossless).
    ``allocation``: how one ratio is spread. "uniform": every dependency group loses ``ratio`` of its
    channels. "sensitivity": ``ratio`` of all prunable channels (groups at least two lanes wide) is
    removed, spread by measured cost: each group is pruned alone by 25% and by 50%, recovered on three
    quarters of the calibration inputs and its output error measured on the rest; then the lanes go
    where they cost least (cost ``a_g r^p_g`` through both points, at most 75% of a group). "global": all channels
    ranked together by their normalised criterion scores. "auto" (default): "sensitivity" with
    calibration inputs, else "uniform".
    ``criterion``: "auto" (default: "reconstruction" with calibration inputs, else "l1"), "l1", "bn_gamma",
    "activation", "reconstruction", or ``{layer: keep mask}``.
    With ``calibration`` (and ``recover``), each layer after a pruned group is refit by least squares on
    the pruned model's own inputs, its ridge strength chosen by cross-validation over the inputs. The
    more calibration inputs the better the refit holds on other inputs (SFace at 20%: embedding cosine
    0.942 with 48 faces, 0.9515 with 192); up to ``CALIBRATION_LIMIT`` (256) are used.
    ``spatial_folds``: also remove constant channels whose exact fold needs a ``[C, H, W]`` offset map
    (a constant through a zero-padded depthwise conv) instead of a bias; off by default (memory).
    """
    from ..frontends import detect_format

    samples = None
    evaluate = CalibrationEvaluator()
    if detect_format(model) != "onnx":
        from ..frontends import load_model

        imported = load_model(model, input_shapes)
        notes = ["not ONNX: no pruned ONNX written"]
        samples = load_calibration(calibration, imported.inputs, notes=notes)
        config = pruning_config(ratio, criterion, round_to, spatial_folds, allocation, calibrated=bool(samples))
        result = prune_function(imported.mod["main"], config, evaluate=evaluate, calibration=samples, recover=recover)
        return PrunedModel(None, result, imported.inputs, notes)
    from ..frontends.onnx import prepare_onnx

    # The frontend's exact ONNX-level rewrites first (weights given as inputs, DequantizeLinear of
    # constant weights folded to float32, inference Dropout, static shapes): the pruned ONNX is that
    # prepared float model, which onnxruntime and training frameworks load.
    proto, source, shapes, notes = prepare_onnx(model, input_shapes)
    notes = list(notes)
    func, weights, inputs = import_onnx_named(proto, source, shapes)
    samples = load_calibration(calibration, inputs, notes=notes)
    config = pruning_config(ratio, criterion, round_to, spatial_folds, allocation, calibrated=bool(samples))
    result = prune_function(func, config, weights=weights, evaluate=evaluate, calibration=samples, recover=recover)
    pruned = write_pruned_onnx(proto, result, source)
    return PrunedModel(pruned, result, inputs, notes)


def import_onnx_named(proto: onnx.ModelProto, source: str, input_shapes: dict | None = None):
    """Relax ``main`` whose weight parameters carry the ONNX initializer names, and their values."""
    from tvm.relax.frontend.onnx import from_onnx

    initializer_names = {t.name for t in proto.graph.initializer}
    shapes = {}
    for value in proto.graph.input:
        if value.name in initializer_names:
            continue
        dims = [d.dim_value if d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    for name, shape in (input_shapes or {}).items():
        if name not in shapes:
            raise InputError(f"{source}: input shape given for {name!r}, but the model's inputs are {list(shapes)}")
        shapes[name] = list(shape)
    missing = [n for n, s in shapes.items() if any(d is None for d in s)]
    if missing:
        raise InputError(f"{source}: inputs {missing} have dynamic dimensions; give static input shapes")
    try:
        mod = from_onnx(proto, shape_dict=shapes, keep_params_in_input=True)
    except Exception as exc:  # noqa: BLE001 - TVM's importer raises many kinds
        raise UnsupportedModelError(
            f"{source}: cannot import the ONNX graph with named weights for pruning: {first_line(exc)}") from None
    func = mod["main"]
    num_input = int(func.attrs["num_input"])
    params = list(func.attrs["params"]) if "params" in func.attrs else []
    weight_params = list(func.params[num_input:])
    if len(params) != len(weight_params):
        raise ModelLoadError(f"{source}: the importer returned {len(params)} weights for {len(weight_params)} weight "
                             f"parameters")
    weights = {str(p.name): v.numpy() for p, v in zip(weight_params, params)}
    inputs = [TensorSpec(str(p.name), tuple(int(d) for d in p.ty.shape), str(p.ty.dtype))
              for p in func.params[:num_input]]
    attrs = {k: v for k, v in func.attrs.items() if k != "params"}
    import tvm
    from tvm import relax

    func = relax.Function(list(func.params), func.body, func.ret_ty, func.is_pure, tvm.ir.DictAttrs(attrs))
    return func, weights, inputs


# -- writing the selection back into ONNX --------------------------------------------------------
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
    from .dependencies import reshape_axis_map

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


def prune_for_compile(model, imported, ratio, criterion="auto", calibration=None, input_shapes=None,
                      round_to: int = 4, allocation: str = "auto"):
    """The compile API's hook: ``imported`` with its channels pruned, and what was done.

    ONNX models are pruned through :func:`prune_model` and the pruned ONNX is imported again, so
    the compiled artifact and the ONNX file ``edgetvm prune`` writes are the same model (with the
    same ``round_to``: the target's vector lanes, 4 on NEON, 8 with AVX2). Models
    the named-weight import cannot take (and TFLite) are pruned on their Relax graph directly.
    """
    import dataclasses

    import tvm

    from ..frontends import detect_format, load_model

    notes = []
    if detect_format(model) == "onnx":
        try:
            pruned = prune_model(model, ratio, criterion=criterion, calibration=calibration, input_shapes=input_shapes,
                                 round_to=round_to, allocation=allocation)
        except UnsupportedModelError as exc:
            notes.append(f"pruned on the Relax graph (no pruned ONNX): {exc}")
        else:
            new = load_model(pruned.onnx, input_shapes)
            details = {**pruned.report, "notes": pruned.report["notes"] + notes}
            return dataclasses.replace(new, source=imported.source, notes=imported.notes + new.notes), details
    samples = load_calibration(calibration, imported.inputs, notes=notes)
    config = pruning_config(ratio, criterion, round_to, allocation=allocation, calibrated=bool(samples))
    result = prune_function(imported.mod["main"], config, evaluate=CalibrationEvaluator(), calibration=samples)
    mod = tvm.IRModule({"main": result.bound().with_attr("global_symbol", "main")})
    details = result.report()
    details["notes"] = details["notes"] + notes
    return dataclasses.replace(imported, mod=mod), details

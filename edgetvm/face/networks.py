"""The face networks, their input conventions, and the engines that run them.

A ``Network`` says where a model comes from (the zoo of models.md, or an architecture built from
its paper), its input tensor and how an image becomes that tensor. Engines run it:

* ``edgetvm``: compiled with ``edgetvm.compile`` for the host, once per configuration: kept in the
  compile cache every later process loads it from (compile_cache.py; compiling RetinaFace or SFace
  takes tens of seconds, loading a fraction of one), and once per process in memory. A
  quantized or pruned network without calibration data calibrates on what the caller's
  ``calibrate`` gives (the pipeline and the bundle pass ``calibration.face_calibration``).
* ``onnxruntime``: the numeric reference and the speed peer of the benchmarks. YuNet and SFace
  store block-quantized weights onnxruntime rejects; they run with those weights folded to float
  (exact: ``frontends.onnx_rewrites.fold_constant_dequantize``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from .. import api
from ..errors import EdgeTVMError, InputError
from ..frontends.onnx_rewrites import drop_weight_inputs, fold_constant_dequantize
from ..zoo import PREPROCESSING, fetch
from ..progress import say as show_stage
from ..zoo.architectures import mobilefacenet
from . import compile_cache
from .detect import Letterbox, letterbox


@dataclass(frozen=True)
class Network:
    """One face network: ``role`` is "detector" or "recognizer"."""

    name: str
    role: str
    input_name: str
    # Detector inputs are resized per pipeline; recognizers take a fixed 112x112 crop.
    dynamic_size: bool
    description: str
    # How an image becomes its input (edgetvm.data.Preprocess keys): calibration images given to
    # compile_network are fed so. Matches detector_input / recognizer_input.
    preprocess: dict | None = None

    def source(self):
        """What ``edgetvm.compile`` takes: a model path or an ONNX ModelProto."""
        if self.name == "mobilefacenet":
            return mobilefacenet()
        return fetch(self.name)

    def input_shape(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        width, height = size
        if (self.preprocess or {}).get("layout") == "nhwc":  # TFLite networks (FaceMesh)
            return (1, height, width, 3)
        return (1, 3, height, width)


NETWORKS: dict[str, Network] = {
    n.name: n
    for n in [
        Network("retinaface", "detector", "input", True,
                "RetinaFace MobileNet-0.25 (box, score, 5 landmarks; BGR minus mean)", PREPROCESSING["retinaface"]),
        Network("yunet", "detector", "input", False, "YuNet 2023mar (box, score, 5 landmarks; BGR 0..255)",
                PREPROCESSING["yunet"]),
        Network("sface", "recognizer", "data", False, "SFace 2021dec, 128-d embedding (RGB 0..255)",
                PREPROCESSING["sface"]),
        Network("mobilefacenet", "recognizer", "input", False,
                "MobileFaceNet architecture with seeded random weights (speed and compiler checks only; "
                "its embeddings do not identify people)",
                {"channel_order": "rgb", "mean": 127.5, "scale": 1.0 / 128.0, "layout": "nchw"}),
    ]
}

YUNET_SIZE = (640, 640)
RECOGNIZER_SIZE = (112, 112)


def network(name: str, role: str) -> Network:
    net = NETWORKS.get(name)
    if net is None or net.role != role:
        known = sorted(n for n, v in NETWORKS.items() if v.role == role)
        raise InputError(f"unknown {role} {name!r}; choose one of {known}")
    return net


def detector_input(net: Network, size: tuple[int, int], image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
    """RGB image -> the detector's (1, 3, H, W) float32 input at ``size`` (W, H), letterboxed, and
    where the image went in it. RetinaFace takes BGR minus its mean, YuNet BGR 0..255."""
    return letterbox(image, *size, mean_bgr=detector_mean_bgr(net))


def detector_mean_bgr(net: Network) -> tuple[float, float, float]:
    """The per-channel mean a detector's BGR input is taken minus (its ``preprocess``)."""
    mean = np.broadcast_to(np.asarray(net.preprocess["mean"], dtype=np.float64), (3,))
    return tuple(float(m) for m in mean)


def recognizer_input(net: Network, crop: np.ndarray) -> np.ndarray:
    """Aligned 112x112 RGB crop (float 0..255) -> the recognizer's (1, 3, 112, 112) float32 input.

    SFace normalises inside its graph and takes RGB 0..255. The random-weight MobileFaceNet takes
    the usual ``(x - 127.5) / 128``.
    """
    x = np.asarray(crop, dtype=np.float32).transpose(2, 0, 1)[None]
    # (x - mean) * scale of the network's ``preprocess``: SFace 0 and 1, MobileFaceNet 127.5 and 1/128
    # (a power of two: the same floats as dividing by 128).
    x = (x - np.float32(net.preprocess["mean"])) * np.float32(net.preprocess["scale"])
    return np.ascontiguousarray(x, dtype=np.float32)


def options_for(options: dict | None, role: str) -> dict:
    """The compile options of the ``role`` network: the shared keys of ``options``, overridden by
    ``options[role]`` when that is a dict (``{"recognizer": {"quantize": "int8"}}`` quantizes only
    the recognizer)."""
    options = dict(options or {})
    shared = {k: v for k, v in options.items() if k not in ("detector", "recognizer")}
    specific = options.get(role) or {}
    if not isinstance(specific, dict):
        raise InputError(f"compile options for the {role}: expected a dict, got {type(specific).__name__}")
    return {**shared, **specific}


def freeze_options(options: dict | None) -> tuple:
    """A hashable key for compile options (calibration data is keyed by identity)."""
    items = []
    for key, value in sorted((options or {}).items()):
        try:
            hash(value)
            items.append((key, value))
        except TypeError:
            items.append((key, ("id", id(value))))
    return tuple(items)


# Calibration inputs of a network at an input size (W, H): ``calibration.face_calibration``.
Calibrate = Callable[[Network, tuple[int, int]], list[np.ndarray]]

_COMPILED: dict[tuple, object] = {}
_COMPILE_LOCK = threading.RLock()


def compile_network(net: Network, size: tuple[int, int], target="host", compile_options: dict | None = None,
                    num_threads: int | None = None, calibrate: Calibrate | None = None):
    """``edgetvm.compile`` of ``net`` at input ``size`` (W, H), cached per process.

    Quantizing or pruning without ``calibration`` calibrates on ``calibrate(net, size)``, asked
    only when the network is not in the cache yet.
    """
    key = (net.name, tuple(size), str(target), freeze_options(compile_options), num_threads)
    # Re-entrant: calibrate runs the float networks, which compile through here too.
    with _COMPILE_LOCK:
        if key in _COMPILED:
            return _COMPILED[key]
        kwargs = dict(compile_options or {})
        kwargs.setdefault("preprocess", net.preprocess)
        if (kwargs.get("quantize") or kwargs.get("prune")) and kwargs.get("calibration") is None \
                and calibrate is not None:
            kwargs["calibration"] = calibrate(net, size)
        try:
            compiled = api.compile(net.source(), target, input_shapes={net.input_name: net.input_shape(size)},
                                   num_threads=num_threads, **kwargs)
        except TypeError as exc:
            if kwargs and "unexpected keyword" in str(exc):
                raise EdgeTVMError(f"compiling {net.name}: this edgetvm's compile() does not take the options "
                                   f"{sorted(kwargs)} ({exc})") from None
            raise
        _COMPILED[key] = compiled
        return compiled


def reference_model(net: Network):
    """The float ONNX model onnxruntime runs for ``net`` (blocked int8 weights folded to float)."""
    source = net.source()
    proto = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    return drop_weight_inputs(fold_constant_dequantize(proto))


_SESSIONS: dict[tuple, object] = {}


def onnxruntime_engine(net: Network, num_threads: int | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function running ``net`` in onnxruntime (one session per process, network and thread count)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EdgeTVMError("the onnxruntime engine needs `pip install onnxruntime`") from None
    key = (net.name, num_threads)
    with _COMPILE_LOCK:
        if key not in _SESSIONS:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if num_threads:
                options.intra_op_num_threads = num_threads
                options.inter_op_num_threads = 1
            _SESSIONS[key] = ort.InferenceSession(reference_model(net).SerializeToString(), options,
                                                  providers=["CPUExecutionProvider"])
    session = _SESSIONS[key]
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> list[np.ndarray]:
        return list(session.run(None, {input_name: x}))

    return run


def litert_engine(net: Network, num_threads: int | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function running the TFLite network ``net`` in LiteRT (the reference of FaceMesh), one
    interpreter per call of this function."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise EdgeTVMError("the litert engine needs `pip install ai-edge-litert`") from None
    interpreter = Interpreter(model_path=str(net.source()), num_threads=num_threads or 1)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_indices = [d["index"] for d in interpreter.get_output_details()]
    lock = threading.Lock()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with lock:  # one interpreter holds one set of tensors
            interpreter.set_tensor(input_index, np.ascontiguousarray(x, dtype=np.float32))
            interpreter.invoke()
            return [interpreter.get_tensor(i).copy() for i in output_indices]

    return run


_LOADED: dict[str, object] = {}  # compile cache key -> runner, once per process


def persistent_host_runner(net: Network, size: tuple[int, int], compile_options: dict | None = None,
                           num_threads: int | None = None, calibrate: Calibrate | None = None):
    """``net`` compiled for the host through the compile cache shared by processes (compile_cache.py),
    once per process; None when the options cannot key an entry (calibration arrays given)."""
    options = dict(compile_options or {})
    description = {"network": net.name, "input": list(net.input_shape(size)), "target": "host",
                   "options": options, "num_threads": num_threads, "preprocess": net.preprocess}
    key = compile_cache.entry_key(compile_cache.model_digest(net.source()), description)
    if key is None:
        return None
    with _COMPILE_LOCK:
        if key not in _LOADED:
            _LOADED[key] = compile_cache.cached_runner(
                key, lambda: compile_network(net, size, "host", compile_options, num_threads, calibrate),
                num_threads=num_threads, say=lambda line: show_stage(f"{net.name} at {size[0]}x{size[1]}: {line}"))
        return _LOADED[key]


def edgetvm_engine(net: Network, size: tuple[int, int], target="host", compile_options: dict | None = None,
                   num_threads: int | None = None,
                   calibrate: Calibrate | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    compiled = None
    if str(target) == "host" and compile_cache.enabled():
        compiled = persistent_host_runner(net, size, compile_options, num_threads, calibrate)
    if compiled is None:
        compiled = compile_network(net, size, target, compile_options, num_threads, calibrate)

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = compiled(x)
        return list(out) if isinstance(out, tuple) else [out]

    return run


def make_engine(engine: str, net: Network, size: tuple[int, int], compile_options: dict | None = None,
                num_threads: int | None = None,
                calibrate: Calibrate | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    compile_options = options_for(compile_options, net.role)
    if engine == "edgetvm":
        return edgetvm_engine(net, size, "host", compile_options, num_threads, calibrate)
    if engine == "onnxruntime":
        if compile_options:
            raise InputError(f"compile options {sorted(compile_options)} apply to the edgetvm engine only")
        return onnxruntime_engine(net, num_threads)
    if engine == "litert":
        if compile_options:
            raise InputError(f"compile options {sorted(compile_options)} apply to the edgetvm engine only")
        return litert_engine(net, num_threads)
    raise InputError(f"unknown engine {engine!r}; choose 'edgetvm', 'onnxruntime' or (TFLite networks) 'litert'")

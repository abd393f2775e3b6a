"""Model files to Relax: ONNX (path, bytes or ModelProto) and TFLite (path)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError
from ..specs import ImportedModel
from ..zoo import did_you_mean, fetch, model_names
from .onnx import import_onnx
from .tflite import import_tflite


ZOO_PREFIX = "zoo:"


def resolve_zoo(model):
    """``"zoo:retinaface"`` names a real model of models.md; it is fetched into the cache."""
    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        name = model[len(ZOO_PREFIX):]
        if name not in model_names():
            raise ModelLoadError(f"{model}: no such zoo model{did_you_mean(name, model_names())}; the zoo models are "
                                 f"{', '.join(ZOO_PREFIX + n for n in model_names())}")
        return fetch(name)
    return model


def detect_format(model) -> str:
    model = resolve_zoo(model)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelLoadError(f"{path}: no such model file")
        if path.suffix.lower() == ".tflite":
            return "tflite"
        with open(path, "rb") as fh:
            head = fh.read(8)
        # TFLite flatbuffers carry the file identifier "TFL3" at byte 4.
        return "tflite" if head[4:8] == b"TFL3" else "onnx"
    if isinstance(model, (bytes, bytearray)):
        return "tflite" if bytes(model[4:8]) == b"TFL3" else "onnx"
    return "onnx"


def load_model(model, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ImportedModel:
    """Import ``model`` into Relax with static shapes; weights become bound constants."""
    model = resolve_zoo(model)
    fmt = detect_format(model)
    if fmt == "tflite":
        return import_tflite(model, input_shapes)
    return import_onnx(model, input_shapes)

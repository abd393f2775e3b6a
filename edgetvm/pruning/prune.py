"""Prune a model's channels and hand back both the compiler's graph and a pruned ONNX file.

The recipe of the field is "prune, train, repeat": ``prune_model`` does the prune (on the Relax
graph, see ``rewrite.py``), recovers what it can without training (lossless folding of constant
channels, least-squares refit on calibration inputs, ``recovery.py``), and writes the same channel
selection back into the original ONNX file (``onnx_export.py``), so the user can fine-tune it and
close the loop. ``prune_for_compile`` is the compile API's hook.

Running the model (for recovery) is not this layer's business: the caller passes ``evaluate``
(``edgetvm.host`` builds one that falls back to the host VM where numpy cannot run the graph).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import tvm

from ..data import read_samples
from ..errors import InputError, UnsupportedModelError
from ..frontends import detect_format, load_model
from ..frontends.onnx import import_onnx_with_weights
from ..io import atomic_write_bytes
from ..specs import ImportedModel, TensorSpec
from .numpy_eval import CalibrationEvaluator
from .onnx_export import write_pruned_onnx
from .plan import ALLOCATIONS, PruningConfig
from .rewrite import PruneResult, prune_function

# Least-squares recovery keeps every calibration sample's activations at every refit layer (SFace,
# 192 faces: 4.5 GB at peak); more samples than this are cut, and the report says so.
CALIBRATION_LIMIT = 256


def load_calibration(calibration, inputs: list[TensorSpec], limit: int | None = None,
                     notes: list[str] | None = None) -> list[list[np.ndarray]] | None:
    """Calibration samples (``edgetvm.data.read_samples``: one list of input arrays per sample), or None.

    Images are resized bilinearly. At most ``limit`` (default ``CALIBRATION_LIMIT``, read at call
    time) samples are used (a directory's first, by file name); a note in ``notes`` says when some
    were left out.
    """
    if calibration is None:
        return None
    limit = CALIBRATION_LIMIT if limit is None else limit
    return read_samples(calibration, inputs, limit=limit, notes=notes, resample="bilinear",
                        limit_reason="the least-squares refit keeps every sample's activations in memory")


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
        raise InputError(f"prune allocation={allocation!r} (--allocation): use one of {['auto', *ALLOCATIONS]}")
    if isinstance(criterion, dict):
        return PruningConfig(ratio=ratio, criterion="l1", masks=criterion, round_to=round_to,
                             spatial_folds=spatial_folds, allocation="uniform")
    if criterion == "auto":
        criterion = "reconstruction" if calibrated else "l1"
    return PruningConfig(ratio=ratio, criterion=str(criterion), round_to=round_to, spatial_folds=spatial_folds,
                         allocation=allocation)


def prune_model(model, ratio=0.3, *, criterion="auto", calibration=None, recover: bool = True,
                input_shapes: dict | None = None, round_to: int = 4, spatial_folds: bool = False,
                allocation: str = "auto", evaluate=None) -> PrunedModel:
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
    ``evaluate(func, weights, inputs)`` runs the model for recovery and lossless folding; None: numpy
    only (:class:`~edgetvm.pruning.numpy_eval.CalibrationEvaluator`), an error for a graph with ops
    numpy cannot run. ``edgetvm.api.prune_model`` (the CLI's) passes one that falls back to the host VM.
    """
    evaluate = CalibrationEvaluator() if evaluate is None else evaluate
    if detect_format(model) != "onnx":
        imported = load_model(model, input_shapes)
        notes = ["not ONNX: no pruned ONNX written"]
        samples = load_calibration(calibration, imported.inputs, notes=notes)
        config = pruning_config(ratio, criterion, round_to, spatial_folds, allocation, calibrated=bool(samples))
        result = prune_function(imported.mod["main"], config, evaluate=evaluate, calibration=samples, recover=recover)
        return PrunedModel(None, result, imported.inputs, notes)
    # The frontend's exact ONNX-level rewrites first (weights given as inputs, DequantizeLinear of
    # constant weights folded to float32, inference Dropout, static shapes): the pruned ONNX is that
    # prepared float model, which onnxruntime and training frameworks load.
    imported, weights, prepared = import_onnx_with_weights(model, input_shapes)
    notes = list(imported.notes)
    samples = load_calibration(calibration, imported.inputs, notes=notes)
    config = pruning_config(ratio, criterion, round_to, spatial_folds, allocation, calibrated=bool(samples))
    result = prune_function(imported.mod["main"], config, weights=weights, evaluate=evaluate, calibration=samples,
                            recover=recover)
    return PrunedModel(write_pruned_onnx(prepared, result, imported.source), result, imported.inputs, notes)


def prune_for_compile(model, imported: ImportedModel, ratio, criterion="auto", calibration=None, input_shapes=None,
                      round_to: int = 4, allocation: str = "auto", evaluate=None):
    """The compile API's hook: ``imported`` with its channels pruned, and what was done.

    ONNX models are pruned through :func:`prune_model` and the pruned ONNX is imported again, so
    the compiled artifact and the ONNX file ``edgetvm prune`` writes are the same model (with the
    same ``round_to``: the target's vector lanes, 4 on NEON, 8 with AVX2). Models
    the named-weight import cannot take (and TFLite) are pruned on their Relax graph directly.
    ``evaluate``: as for :func:`prune_model`.
    """
    evaluate = CalibrationEvaluator() if evaluate is None else evaluate
    notes = []
    if detect_format(model) == "onnx":
        try:
            pruned = prune_model(model, ratio, criterion=criterion, calibration=calibration, input_shapes=input_shapes,
                                 round_to=round_to, allocation=allocation, evaluate=evaluate)
        except UnsupportedModelError as exc:
            notes.append(f"pruned on the Relax graph (no pruned ONNX): {exc}")
        else:
            new = load_model(pruned.onnx, input_shapes)
            details = {**pruned.report, "notes": pruned.report["notes"] + notes}
            return dataclasses.replace(new, source=imported.source, notes=imported.notes + new.notes), details
    samples = load_calibration(calibration, imported.inputs, notes=notes)
    config = pruning_config(ratio, criterion, round_to, allocation=allocation, calibrated=bool(samples))
    result = prune_function(imported.mod["main"], config, evaluate=evaluate, calibration=samples)
    mod = tvm.IRModule({"main": result.bound().with_attr("global_symbol", "main")})
    details = result.report()
    details["notes"] = details["notes"] + notes
    return dataclasses.replace(imported, mod=mod), details

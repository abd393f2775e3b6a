"""How the standalone library stores its constants: float32 as the kernels read them, or float16.

    fp32   the plan's blob as is; the kernels read it in place from the library's read-only data.
    fp16   every float32 weight tensor (more than one axis longer than 1: conv and dense weights)
           stored as IEEE float16, half the bytes; vectors (biases, per-channel scales, PReLU slopes)
           and integer constants stay as they are. Each context widens the blob once at create
           time into the float32 layout of the plan (edgetvm_runtime.c: ``vcvt.f32.f16`` where the
           FPU has it, a bit-exact portable conversion elsewhere), as ncnn does for its fp16 weights.

Storing a weight as float16 is lossy (10-bit mantissa, relative error <= 2^-11 per weight); a
tensor with a value outside float16's finite range stays float32 rather than becoming infinite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError
from .plan import StaticPlan, TensorRef

WEIGHT_STORAGE = ("fp32", "fp16")
SEGMENT_COPY, SEGMENT_F16 = 0, 1
# Stored runs start 16-byte aligned: a q-register load of four halves needs no more.
_STORED_ALIGNMENT = 16
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class WeightSegment:
    """``count`` bytes (COPY) or float16 elements (F16) at ``stored_offset`` of the stored blob,
    written at byte ``offset`` of the float32 weights the kernels read."""

    stored_offset: int
    offset: int
    count: int
    kind: int


@dataclass
class StoredWeights:
    blob: bytes  # what the library embeds
    segments: list[WeightSegment]  # empty: the kernels read ``blob`` in place
    kernel_bytes: int  # size of the float32 weights the kernels read
    float16_tensors: int = 0


def check_weight_storage(weights: str) -> str:
    if weights not in WEIGHT_STORAGE:
        raise InputError(f"--weights {weights!r}: choose one of {', '.join(WEIGHT_STORAGE)}")
    return weights


def is_float16_weight(dtype: str, shape, value: np.ndarray) -> bool:
    """Conv and dense weights, not vectors; only when every value stays finite in float16. Both
    backends store the same tensors as float16 (this one, and the TVM runtime's, backends/vm.py)."""
    if dtype != "float32" or sum(int(d) > 1 for d in shape) < 2:
        return False
    return bool(np.isfinite(value).all() and np.abs(value).max(initial=0.0) <= _FLOAT16_MAX)


def stored_weights(plan: StaticPlan, weights: str = "fp32") -> StoredWeights:
    """The blob the library embeds for ``plan`` and the segments that rebuild the kernels' layout."""
    check_weight_storage(weights)
    if weights == "fp32":
        return StoredWeights(plan.weights, [], len(plan.weights))
    blob = bytearray()
    segments = []
    float16 = 0
    for ref in sorted(plan.constants, key=lambda r: r.offset):
        raw = plan.weights[ref.offset:ref.offset + ref.nbytes]
        blob.extend(b"\0" * (-len(blob) % _STORED_ALIGNMENT))
        value = np.frombuffer(raw, dtype=np.float32) if ref.dtype == "float32" else None
        if value is not None and is_float16_weight(ref.dtype, ref.shape, value):
            segments.append(WeightSegment(len(blob), ref.offset, value.size, SEGMENT_F16))
            blob.extend(value.astype(np.float16).tobytes())
            float16 += 1
        else:
            segments.append(WeightSegment(len(blob), ref.offset, len(raw), SEGMENT_COPY))
            blob.extend(raw)
    return StoredWeights(bytes(blob), segments, len(plan.weights), float16)

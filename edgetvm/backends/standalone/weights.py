"""How the standalone library stores its constants: float32 as the kernels read them, or float16.

    fp32   the plan's blob as is; the kernels read it in place from the library's read-only data.
    fp16   every float32 weight tensor (more than one axis longer than 1: conv and dense weights)
           stored as IEEE float16, half the bytes; vectors (biases, per-channel scales, PReLU slopes)
           and integer constants stay as they are. Each context widens the blob once at create
           time into the float32 layout of the plan (edgetvm_runtime.c: ``vcvt.f32.f16`` where the
           FPU has it, a bit-exact portable conversion elsewhere), as ncnn does for its fp16 weights.

    huffman every weight tensor with at most 256 distinct values, per tensor or per outer-axis group
           (an output channel, after ClusterWeights: edgetvm/compression) stored as canonical
           Huffman codes of each element's index into its group's values (most frequent first), plus the value
           tables: a coded record (layout in edgetvm_huffman.h). Each context decodes it once at
           create (edgetvm_huffman.c); the stored values are the tensor's own, so decoding is
           bit-exact. A tensor the record would not make smaller stays as it is.
           A tensor that is a scaled codebook of ClusterWeights(scaled=True) (``codebooks``: each
           layer's codebook T and float16 scales s, element ``fl32(s_g * T[j])``, checked bit for
           bit against the tensor) is stored as a scaled record instead when smaller: T, the
           scales and the codes, the context multiplying them back at create.

Storing a weight as float16 is lossy (10-bit mantissa, relative error <= 2^-11 per weight); a
tensor with a value outside float16's finite range stays float32 rather than becoming infinite.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ...compression import huffman
from ...errors import ArtifactError, InputError
from .plan import StaticPlan, TensorRef

WEIGHT_STORAGE = ("fp32", "fp16", "huffman")
SEGMENT_COPY, SEGMENT_F16, SEGMENT_HUFFMAN = 0, 1, 2
RECORD_MARK, SCALED_MARK = b"EHF1", b"EHS1"
_RECORD_HEADER = struct.Struct("<4sBBHIII")  # mark, element bytes, layout, symbols, groups, per group, payload
LAYOUT_GROUPED, LAYOUT_INTERLEAVED = 0, 1
# Stored runs start 16-byte aligned: a q-register load of four halves needs no more.
_STORED_ALIGNMENT = 16
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class WeightSegment:
    """``count`` bytes (COPY, HUFFMAN) or float16 elements (F16) written at byte ``offset`` of the
    weights the kernels read, from the ``stored_bytes`` at ``stored_offset`` of the stored blob."""

    stored_offset: int
    offset: int
    count: int
    kind: int
    stored_bytes: int


@dataclass
class StoredWeights:
    blob: bytes  # what the library embeds
    segments: list[WeightSegment]  # empty: the kernels read ``blob`` in place
    kernel_bytes: int  # size of the float32 weights the kernels read
    float16_tensors: int = 0
    coded_tensors: int = 0

    @property
    def rebuilt_how(self) -> str:
        """How a context rebuilds the kernels' weights, for the header's memory note."""
        return "weights decoded from the library's Huffman codes" if self.coded_tensors else \
            "float32 weights widened from the library's float16"


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


def stored_weights(plan: StaticPlan, weights: str = "fp32",
                   codebooks: list[tuple[np.ndarray, np.ndarray]] | None = None) -> StoredWeights:
    """The blob the library embeds for ``plan`` and the segments that rebuild the kernels' layout;
    ``codebooks``: ClusterWeights(scaled=True)'s (codebook, scales) per layer, for scaled records."""
    check_weight_storage(weights)
    if weights == "fp32":
        return StoredWeights(plan.weights, [], len(plan.weights))
    blob = bytearray()
    segments = []
    float16 = coded = 0
    for ref in sorted(plan.constants, key=lambda r: r.offset):
        raw = plan.weights[ref.offset:ref.offset + ref.nbytes]
        blob.extend(b"\0" * (-len(blob) % _STORED_ALIGNMENT))
        value = np.frombuffer(raw, dtype=np.float32) if ref.dtype == "float32" else None
        record = coded_record(ref, raw, codebooks) if weights == "huffman" else None
        if record is not None:
            segments.append(WeightSegment(len(blob), ref.offset, len(raw), SEGMENT_HUFFMAN, len(record)))
            blob.extend(record)
            coded += 1
        elif weights == "fp16" and value is not None and is_float16_weight(ref.dtype, ref.shape, value):
            segments.append(WeightSegment(len(blob), ref.offset, value.size, SEGMENT_F16, 2 * value.size))
            blob.extend(value.astype(np.float16).tobytes())
            float16 += 1
        else:
            segments.append(WeightSegment(len(blob), ref.offset, len(raw), SEGMENT_COPY, len(raw)))
            blob.extend(raw)
    return StoredWeights(bytes(blob), segments, len(plan.weights), float16, coded)


def coded_record(ref: TensorRef, raw: bytes,
                 codebooks: list[tuple[np.ndarray, np.ndarray]] | None = None) -> bytes | None:
    """The smallest Huffman record of a weight tensor (one table, or one per slice of its first axis,
    or a scaled codebook of ``codebooks`` that reproduces it exactly), or None when no record is
    smaller than ``raw`` (vectors, or more than 256 distinct values)."""
    elem = np.dtype(ref.dtype).itemsize if ref.dtype in _CODED_DTYPES else 0
    if not elem or sum(d > 1 for d in ref.shape) < 2:
        return None
    # Compared as bit patterns: -0.0 and 0.0 (and NaN payloads) stay distinct, so decoding is exact.
    bits = np.frombuffer(raw, dtype=f"<u{elem}")
    # Per-channel codebooks sit on the first axis (OIHW, int8 per-channel) or the last (HWIO, dense KN).
    candidates = [(bits.reshape(1, -1), LAYOUT_GROUPED)]
    if ref.shape[0] > 1:
        candidates.append((bits.reshape(ref.shape[0], -1), LAYOUT_GROUPED))
    if ref.shape[-1] > 1:
        candidates.append((bits.reshape(-1, ref.shape[-1]).T, LAYOUT_INTERLEAVED))
    best = None
    if ref.dtype == "float32":
        for groups, layout in candidates:
            for codebook, scales in codebooks or []:
                record = _scaled_record(groups, layout, codebook, scales)
                if record is not None and (best is None or len(record) < len(best)):
                    best = record
        if best is not None and len(best) >= len(raw):
            best = None
    for groups, layout in candidates:
        record = _record(groups, elem, layout)
        if record is not None and len(record) < len(raw) and (best is None or len(record) < len(best)):
            best = record
    return best


_CODED_DTYPES = ("float32", "int8", "uint8", "int16", "float16", "int32")


def _record(groups: np.ndarray, elem: int, layout: int) -> bytes | None:
    """One record over the rows of ``groups`` (one value table per row), None past 256 values a row.
    ``layout``: the rows are consecutive runs of the tensor (GROUPED) or its columns (INTERLEAVED)."""
    tables, indices = [], []
    for row in groups:
        values, index = huffman.ranked_symbols(row)
        if values.size > 256:
            return None
        tables.append(values)
        indices.append(index)
    k = max(t.size for t in tables)
    table = np.stack([np.pad(t, (0, k - t.size), mode="edge") for t in tables])
    symbols = np.stack(indices)
    symbols = (symbols if layout == LAYOUT_GROUPED else symbols.T).reshape(-1)  # in memory order
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=k))
    payload = huffman.encode(symbols, lengths)
    header = _RECORD_HEADER.pack(RECORD_MARK, elem, layout, k, groups.shape[0], groups.shape[1], len(payload))
    padding = b"\0" * (-k % 4)
    return header + lengths.astype(np.uint8).tobytes() + padding + table.astype(f"<u{elem}").tobytes() + payload


def scaled_symbols(groups: np.ndarray, codebook: np.ndarray, scales: np.ndarray) -> np.ndarray | None:
    """Per element of ``groups`` (float32 bit patterns, a row per group) the index ``j`` with
    ``fl32(scales[g] * codebook[j])`` equal to it bit for bit, or None when an element has none."""
    if scales.size != groups.shape[0]:
        return None
    products = (scales.astype(np.float32)[:, None] * codebook.astype(np.float32)[None, :]).view(np.uint32)
    row = np.arange(groups.shape[0], dtype=np.uint64)
    keys = (row[:, None] << np.uint64(32)) | products.astype(np.uint64)
    order = np.argsort(keys, axis=None, kind="stable")
    flat = keys.reshape(-1)[order]
    wanted = ((row[:, None] << np.uint64(32)) | groups.astype(np.uint64)).reshape(-1)
    found = np.minimum(np.searchsorted(flat, wanted), flat.size - 1)
    if not np.array_equal(flat[found], wanted):
        return None
    return (order[found] % codebook.size).reshape(groups.shape)


def _scaled_record(groups: np.ndarray, layout: int, codebook: np.ndarray, scales: np.ndarray) -> bytes | None:
    """A scaled record (edgetvm_huffman.h) of the float32 ``groups`` when ``codebook`` and ``scales``
    reproduce every element, else None."""
    if codebook.size > 256 or scales.size != groups.shape[0]:
        return None
    # Most tensors are not this codebook's: a few elements first, before the whole tensor.
    if scaled_symbols(groups[:, :2], codebook, scales) is None:
        return None
    symbols = scaled_symbols(groups, codebook, scales)
    if symbols is None:
        return None
    k = codebook.size
    symbols = (symbols if layout == LAYOUT_GROUPED else symbols.T).reshape(-1)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=k))
    payload = huffman.encode(symbols, lengths)
    header = _RECORD_HEADER.pack(SCALED_MARK, 4, layout, k, groups.shape[0], groups.shape[1], len(payload))
    half = scales.astype(np.float16)
    return (header + lengths.astype(np.uint8).tobytes() + b"\0" * (-k % 4) + codebook.astype("<f4").tobytes()
            + half.astype("<f2").tobytes() + b"\0" * (-2 * half.size % 4) + payload)


def decode_record(record: bytes, out_bytes: int) -> bytes:
    """The bytes a coded record decodes to: the reference for edgetvm_huffman.c, with its checks."""
    if len(record) < _RECORD_HEADER.size:
        raise ArtifactError("coded weights: the record is shorter than its header")
    mark, elem, layout, k, groups, per_group, payload_bytes = _RECORD_HEADER.unpack_from(record)
    lengths_bytes = (k + 3) // 4 * 4
    scaled = mark == SCALED_MARK
    tables = 4 * k + (2 * groups + 3) // 4 * 4 if scaled else groups * k * elem
    start = _RECORD_HEADER.size + lengths_bytes + tables
    if mark not in (RECORD_MARK, SCALED_MARK) or elem not in (1, 2, 4) or (scaled and elem != 4) or \
            layout not in (LAYOUT_GROUPED, LAYOUT_INTERLEAVED) or not 1 <= k <= 256 or \
            start + payload_bytes != len(record):
        raise ArtifactError("coded weights: the header does not match the record (truncated or corrupt)")
    if groups * per_group * elem != out_bytes:
        raise ArtifactError("coded weights: the record decodes to a different number of elements than the tensor")
    lengths = np.frombuffer(record, np.uint8, k, _RECORD_HEADER.size).astype(np.int64)
    if scaled:
        codebook = np.frombuffer(record, "<f4", k, _RECORD_HEADER.size + lengths_bytes)
        scales = np.frombuffer(record, "<f2", groups, _RECORD_HEADER.size + lengths_bytes + 4 * k)
        table = (scales.astype(np.float32)[:, None] * codebook[None, :]).view("<u4")
    else:
        table = np.frombuffer(record, f"<u{elem}", groups * k,
                              _RECORD_HEADER.size + lengths_bytes).reshape(groups, k)
    try:
        symbols = huffman.decode(record[start:], lengths, groups * per_group)
    except huffman.HuffmanError as exc:
        raise ArtifactError(f"coded weights: {exc}") from None
    if layout == LAYOUT_GROUPED:
        return np.take_along_axis(table, symbols.reshape(groups, per_group), axis=1).tobytes()
    return np.take_along_axis(table, symbols.reshape(per_group, groups).T, axis=1).T.tobytes()

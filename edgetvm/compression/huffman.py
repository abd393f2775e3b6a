"""Canonical Huffman coding of small alphabets (at most 256 symbols), the last step of Deep Compression.

Code lengths come from Huffman's algorithm on the symbol counts, limited to ``MAX_CODE_BITS`` by
halving the counts until the longest code fits (the limit makes the decoder a single table look-up
per symbol, a ``2^MAX_CODE_BITS``-entry table). Codes are canonical (Schwartz & Kallick 1964, as
DEFLATE assigns them): symbols sorted by (length, symbol) take consecutive codes, so the lengths
alone describe the code. Bits are packed most significant first.

The artifact's decoder is C (``backends/standalone/edgetvm_runtime.c``, ``huffman_decode``);
:func:`decode` here is its reference and the one the tests compare it with.
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_CODE_BITS = 12


class HuffmanError(ValueError):
    """Coded data that no encoder of this module writes: lengths not a prefix code, or bits missing."""


def ranked_symbols(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``row``, most frequent first (ties by value), and each element's index
    among them. Several tables share one code (a codebook per output channel): ranked so, every
    table's most common value (zero after pruning) is the same symbol, the one with the shortest code,
    where sorted tables would spread it over several symbols."""
    values, index, counts = np.unique(row, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return values[order], rank[index.reshape(-1)]


def code_lengths(counts: np.ndarray, max_bits: int = MAX_CODE_BITS) -> np.ndarray:
    """Huffman code length per symbol (0 for an unused symbol), none longer than ``max_bits``.

    A lone used symbol gets length 1 (a decoder needs at least one bit per symbol)."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size > 1 << max_bits:
        raise ValueError(f"{counts.size} symbols do not fit codes of at most {max_bits} bits")
    while True:
        lengths = _unlimited_lengths(counts)
        if lengths.max(initial=0) <= max_bits:
            return lengths
        counts = np.where(counts > 0, np.maximum(counts // 2, 1), 0)


def _unlimited_lengths(counts: np.ndarray) -> np.ndarray:
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = np.flatnonzero(counts)
    if used.size == 1:
        lengths[used] = 1
        return lengths
    # Heap items (count, tie-break, symbols below): merging adds one bit to every symbol below.
    heap = [(int(counts[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, t1, s1 = heapq.heappop(heap)
        c2, t2, s2 = heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol (its ``lengths[s]`` low bits); raises unless the lengths are a
    prefix code (Kraft: ``sum 2^-l <= 1``) of at most ``MAX_CODE_BITS`` bits."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.min(initial=0) < 0 or lengths.max(initial=0) > MAX_CODE_BITS or not lengths.any():
        raise HuffmanError(f"code lengths must be 0..{MAX_CODE_BITS} with at least one symbol used")
    if sum(1 << (MAX_CODE_BITS - int(n)) for n in lengths if n) > 1 << MAX_CODE_BITS:
        raise HuffmanError("code lengths over-subscribe the code space (not a prefix code)")
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        previous = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """``symbols`` (ints indexing ``lengths``) as canonical codes packed MSB first, zero-padded to a byte."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    codes = canonical_codes(lengths)
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.size and lengths[symbols].min() == 0:
        raise ValueError("a symbol to encode has no code (its length is 0)")
    n = lengths[symbols]
    ends = np.cumsum(n)
    owner = np.repeat(np.arange(symbols.size), n)  # which symbol each output bit belongs to
    shift = ends[owner] - 1 - np.arange(ends[-1] if ends.size else 0)
    bits = (codes[symbols][owner] >> shift) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes()


def decode_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every ``MAX_CODE_BITS``-bit window, the symbol whose code starts it and that code's length
    (0 where no code does: an incomplete code's unused space)."""
    codes = canonical_codes(lengths)
    symbol = np.zeros(1 << MAX_CODE_BITS, dtype=np.int64)
    length = np.zeros(1 << MAX_CODE_BITS, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        span = MAX_CODE_BITS - int(lengths[s])
        first = int(codes[s]) << span
        symbol[first:first + (1 << span)] = s
        length[first:first + (1 << span)] = lengths[s]
    return symbol, length


def decode(payload: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """``count`` symbols from ``payload``; raises :class:`HuffmanError` on a code the lengths do not
    define or when the payload ends before the last symbol."""
    symbol, length = decode_table(lengths)
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
    total = bits.size
    bits = np.concatenate([bits, np.zeros(MAX_CODE_BITS, dtype=np.uint8)])
    weights = 1 << np.arange(MAX_CODE_BITS - 1, -1, -1)
    # The window starting at every bit position, then the chain of code starts from bit 0.
    window = np.lib.stride_tricks.sliding_window_view(bits, MAX_CODE_BITS)[:total + 1] @ weights
    step = length[window].tolist()
    out = np.empty(count, dtype=np.int64)
    position = 0
    for i in range(count):
        if position >= total or step[position] == 0:
            raise HuffmanError(f"coded data ends or breaks at bit {position}, symbol {i} of {count}")
        out[i] = window[position]
        position += step[position]
    if position > total:
        raise HuffmanError(f"coded data ends inside symbol {count - 1} (needs {position} bits, has {total})")
    if total - position >= 8:
        raise HuffmanError(f"{total - position} bits left over after the last symbol")
    return symbol[out]

"""Canonical Huffman coding: round trips, optimality against the entropy, refusal of broken data."""

from __future__ import annotations

import numpy as np
import pytest

from edgetvm.compression import huffman


@pytest.mark.parametrize("k", [1, 2, 16, 256])
def test_round_trip(k, rng):
    symbols = np.minimum(rng.geometric(0.3, size=5000) - 1, k - 1)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=k))
    payload = huffman.encode(symbols, lengths)
    np.testing.assert_array_equal(huffman.decode(payload, lengths, symbols.size), symbols)


def test_lengths_within_one_bit_of_the_entropy_and_limited(rng):
    counts = np.bincount(rng.geometric(0.4, size=20000) - 1)
    p = counts[counts > 0] / counts.sum()
    lengths = huffman.code_lengths(counts)
    mean_bits = (lengths * counts).sum() / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    assert entropy <= mean_bits < entropy + 1
    skewed = 2 ** np.arange(30)[::-1]  # Fibonacci-like counts would need 29-bit codes unlimited
    assert huffman.code_lengths(skewed).max() <= huffman.MAX_CODE_BITS
    assert sum(2.0 ** -n for n in huffman.code_lengths(skewed)) <= 1.0


def test_broken_data_is_refused(rng):
    symbols = rng.integers(0, 5, size=300)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=5))
    payload = huffman.encode(symbols, lengths)
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(payload[: len(payload) // 2], lengths, symbols.size)
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(payload + b"\0", lengths, symbols.size)
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(payload, np.array([1, 1, 1, 0, 0]), symbols.size)  # over-subscribed

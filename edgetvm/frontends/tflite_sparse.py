"""TFLite sparse constant tensors (schema.fbs ``SparsityParameters``) read and made dense at import.

A sparse tensor of original rank ``n`` with ``k`` block dimensions is stored as an ``n + k``-level
tree, one level per dimension in ``traversal_order`` (a permutation of ``0 .. n+k-1``; expanded
dimension ``n + j`` is the inner coordinate of block ``j``, which splits original dimension
``block_map[j]``). Each level is

- DENSE with ``dense_size`` entries: every coordinate ``0 .. dense_size-1`` is present, or
- SPARSE_CSR: the children of node ``p`` of the level above are ``array_indices[array_segments[p] :
  array_segments[p + 1]]`` (row pointers and column indices of CSR, generalised to any level),

and a node's number within its level is ``parent * dense_size + i`` (DENSE) or its position in
``array_indices`` (SPARSE_CSR). The buffer holds one value per leaf, leaves in depth-first order.
A leaf's coordinate in the dense tensor is, for every original dimension ``d`` blocked by ``j``,
``coord[d] * block_size[j] + coord[n + j]`` (``block_size[j]`` is the ``dense_size`` of the level of
dimension ``n + j``), and ``coord[d]`` for the others. This is the semantics of TFLite's
``sparsity/format_converter.cc`` (its DENSIFY op); here every level is expanded at once with numpy,
so a tensor costs a few array operations instead of a Python call per element.

MediaPipe's sparse detectors (face full-range, pose) store 1x1 convolution weights this way,
float16, ``traversal_order = [0, 1, 2, 3]``, CSR on the input channels, behind DENSIFY ->
DEQUANTIZE: 46 and 38 tensors, 70-80% zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# schema.fbs: DimensionType DENSE = 0, SPARSE_CSR = 1; SparseIndexVector NONE = 0, Int32Vector = 1,
# Uint16Vector = 2, Uint8Vector = 3.
DENSE, SPARSE_CSR = 0, 1
INT32_VECTOR, UINT16_VECTOR, UINT8_VECTOR = 1, 2, 3

# A densified layer with at least this fraction of zeros would pay for a sparse 1x1 kernel (about
# 70%: below it the index loads cost more than the skipped multiplies); the compile report names
# such layers. 2/3 rather than 0.7 so that a tensor pruned to 70% of 256 weights (179 zeros, 69.9%)
# counts.
SPARSE_KERNEL_ZEROS = 2 / 3


@dataclass(frozen=True)
class SparseLevel:
    """One level of the tree: ``dense_size`` for DENSE, ``segments``/``indices`` for SPARSE_CSR."""

    dense_size: int = 0
    segments: np.ndarray | None = None
    indices: np.ndarray | None = None

    @property
    def is_dense(self) -> bool:
        return self.segments is None


@dataclass(frozen=True)
class Sparsity:
    """A tensor's ``SparsityParameters``: traversal order, block map and one level per dimension."""

    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...]
    levels: tuple[SparseLevel, ...]


def read_sparsity(params) -> Sparsity:
    """The ``tflite.SparsityParameters`` table as plain arrays (raises ValueError when malformed)."""
    traversal = tuple(int(d) for d in params.TraversalOrderAsNumpy()) if params.TraversalOrderLength() else ()
    block_map = tuple(int(d) for d in params.BlockMapAsNumpy()) if params.BlockMapLength() else ()
    levels = []
    for i in range(params.DimMetadataLength()):
        meta = params.DimMetadata(i)
        if meta.Format() == DENSE:
            levels.append(SparseLevel(dense_size=int(meta.DenseSize())))
        elif meta.Format() == SPARSE_CSR:
            levels.append(SparseLevel(segments=_index_vector(meta.ArraySegmentsType(), meta.ArraySegments(), i),
                                      indices=_index_vector(meta.ArrayIndicesType(), meta.ArrayIndices(), i)))
        else:
            raise ValueError(f"dimension {i} has sparsity format {meta.Format()} (only DENSE and SPARSE_CSR exist)")
    return Sparsity(traversal, block_map, tuple(levels))


def _index_vector(kind: int, table, level: int) -> np.ndarray:
    """An Int32Vector/Uint16Vector/Uint8Vector union member as an int64 array."""
    from tflite.Int32Vector import Int32Vector
    from tflite.Uint8Vector import Uint8Vector
    from tflite.Uint16Vector import Uint16Vector

    classes = {INT32_VECTOR: Int32Vector, UINT16_VECTOR: Uint16Vector, UINT8_VECTOR: Uint8Vector}
    if kind not in classes or table is None:
        raise ValueError(f"dimension {level} is SPARSE_CSR but its index vector type is {kind}")
    vector = classes[kind]()
    vector.Init(table.Bytes, table.Pos)
    if vector.ValuesIsNone():
        return np.zeros(0, np.int64)
    return np.asarray(vector.ValuesAsNumpy(), dtype=np.int64)


def dense_coordinates(sparsity: Sparsity, shape: tuple[int, ...], stored: int) -> np.ndarray:
    """Row-major flat positions in the dense tensor of the ``stored`` values, in storage order.

    Raises ValueError naming what is inconsistent (sizes, orders, indices out of range, a value
    count other than ``stored``), so that a corrupt file is reported as such instead of writing out
    of bounds. Every level holds at most ``max(stored, len(array_segments) of the CSR levels)``
    nodes (a node either has a leaf below it or is the parent of a segment), so a corrupt shape is
    refused before it can make the expansion allocate more than the file holds.
    """
    n = len(shape)
    order = sparsity.traversal_order
    k = len(sparsity.block_map)
    if sorted(order) != list(range(n + k)) or len(sparsity.levels) != n + k:
        raise ValueError(f"traversal_order {list(order)} with {len(sparsity.levels)} dimension metadata is not a "
                         f"permutation of the {n} dimensions and {k} block dimensions")
    if any(not 0 <= d < n for d in sparsity.block_map) or len(set(sparsity.block_map)) != k:
        raise ValueError(f"block_map {list(sparsity.block_map)} does not name distinct dimensions of {list(shape)}")
    level_of = {dim: lvl for lvl, dim in enumerate(order)}
    block_size = [sparsity.levels[level_of[n + j]].dense_size for j in range(k)]
    blocked = list(shape)
    for j, d in enumerate(sparsity.block_map):
        if block_size[j] <= 0 or shape[d] % block_size[j]:
            raise ValueError(f"block size {block_size[j]} does not divide dimension {d} of {list(shape)}")
        blocked[d] = shape[d] // block_size[j]
    expanded = blocked + block_size

    bound = max([stored] + [level.segments.size for level in sparsity.levels if not level.is_dense])
    node = np.zeros(1, np.int64)  # each path's node number within the current level
    coords = np.zeros((n + k, 1), np.int64)
    for dim, level in zip(order, sparsity.levels):
        size = expanded[dim]
        if level.is_dense:
            if level.dense_size != size:
                raise ValueError(f"dimension {dim} is DENSE of size {level.dense_size}, expected {size}")
            if node.size * size > bound:
                raise ValueError(f"the sparsity parameters describe more entries than the {stored} stored values")
            child = np.arange(size, dtype=np.int64)
            coord = np.tile(child, node.size)
            coords = np.repeat(coords, size, axis=1)
            node = np.repeat(node, size) * size + coord
        else:
            segments, indices = level.segments, level.indices
            if node.size and node.max() + 1 >= segments.size:
                raise ValueError(f"dimension {dim} has {segments.size} array_segments for parents up to {node.max()}")
            # Non-decreasing and within array_indices: the parents' ranges cannot overlap or overrun.
            if segments.size and (segments[0] < 0 or segments[-1] > indices.size or (np.diff(segments) < 0).any()):
                raise ValueError(f"dimension {dim}'s array_segments are not increasing within its "
                                 f"{indices.size} array_indices")
            starts, ends = segments[node], segments[node + 1]
            counts = ends - starts
            # Children of parent p are array positions starts[p] .. ends[p]-1, parents kept in order.
            first = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
            position = first + np.arange(int(counts.sum()), dtype=np.int64)
            coord = indices[position]
            if coord.size and (coord.min() < 0 or coord.max() >= size):
                raise ValueError(f"dimension {dim} has an array_indices entry outside 0..{size - 1}")
            coords = np.repeat(coords, counts, axis=1)
            node = position
        coords[dim] = coord
    if node.size != stored:
        raise ValueError(f"the sparsity parameters place {node.size} values but the buffer holds {stored}")
    original = coords[:n].copy()
    for j, d in enumerate(sparsity.block_map):
        original[d] = original[d] * block_size[j] + coords[n + j]
    return np.ravel_multi_index(tuple(original), shape) if n else np.zeros(coords.shape[1], np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Sparsity) -> np.ndarray:
    """The dense tensor of ``shape`` whose stored values (in storage order) are ``values``; zeros elsewhere."""
    positions = dense_coordinates(sparsity, tuple(int(d) for d in shape), values.size)
    dense = np.zeros(int(np.prod(shape, dtype=np.int64)), values.dtype)
    dense[positions] = values.reshape(-1)
    return dense.reshape(shape)

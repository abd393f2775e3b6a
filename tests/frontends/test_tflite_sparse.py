"""TFLite sparse tensors: the densifier against an independent encoder, NNAPI's DENSIFY example and
LiteRT's own DENSIFY on MediaPipe's two sparse models; one sparse model end to end against LiteRT."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tflite
from flatbuffers.table import Table

import edgetvm
from edgetvm.data import Preprocess, image_to_input
from edgetvm.errors import ModelLoadError
from edgetvm.frontends.tflite import parse_tflite
from edgetvm.frontends.tflite_sparse import SparseLevel, Sparsity, densify, read_sparsity
from edgetvm.transform.pipeline import explain
from edgetvm.zoo import PREPROCESSING, fetch, load_astronaut

from .checks import assert_outputs_match, litert_outputs

SPARSE_MODELS = ["face_detection_full_range_sparse", "pose_detection"]


def encode(dense: np.ndarray, order, block_map, block_size, csr_levels) -> tuple[np.ndarray, Sparsity]:
    """TFLite's sparse encoding of ``dense``, written from the schema's prose with Python loops.

    A CSR level keeps a child only when its sub-tree holds a non-zero; stored values are the leaves.
    """
    n = dense.ndim
    blocked = list(dense.shape)
    for d, b in zip(block_map, block_size):
        blocked[d] //= b
    expanded_shape = blocked + list(block_size)
    expanded = np.zeros(expanded_shape, dense.dtype)
    for coord in itertools.product(*map(range, expanded_shape)):
        original = list(coord[:n])
        for j, d in enumerate(block_map):
            original[d] = coord[d] * block_size[j] + coord[n + j]
        expanded[coord] = dense[tuple(original)]
    traversed = expanded.transpose(order)
    parents, levels = [()], []
    for lvl, size in enumerate(traversed.shape):
        if lvl in csr_levels:
            segments, indices, children = [0], [], []
            for prefix in parents:
                kept = [i for i in range(size) if traversed[prefix + (i,)].any()]
                indices += kept
                children += [prefix + (i,) for i in kept]
                segments.append(len(indices))
            levels.append(SparseLevel(segments=np.array(segments), indices=np.array(indices, dtype=np.int64)))
        else:
            children = [prefix + (i,) for prefix in parents for i in range(size)]
            levels.append(SparseLevel(dense_size=size))
        parents = children
    values = np.array([traversed[leaf] for leaf in parents], dense.dtype)
    return values, Sparsity(tuple(order), tuple(block_map), tuple(levels))


def random_sparse(rng, shape, zeros=0.7, block=None) -> np.ndarray:
    """Random float32 values with about ``zeros`` of them (or of the ``block``-shaped blocks) zero."""
    if block is None:
        return (rng.standard_normal(shape) * (rng.random(shape) >= zeros)).astype(np.float32)
    keep = rng.random([s // b for s, b in zip(shape, block)]) >= zeros
    for axis, b in enumerate(block):
        keep = np.repeat(keep, b, axis=axis)
    return (rng.standard_normal(shape) * keep).astype(np.float32)


CASES = {
    # name: (shape, traversal order, block map, block sizes, CSR levels, block of zeros)
    "csr rows": ((6, 9), (0, 1), (), (), {1}, None),
    "csc (column traversal)": ((6, 9), (1, 0), (), (), {1}, None),
    "csr both levels": ((5, 7), (0, 1), (), (), {0, 1}, None),
    "mediapipe 1x1 conv (OHWI, CSR on I)": ((8, 1, 1, 32), (0, 1, 2, 3), (), (), {3}, None),
    "block sparse 2x3 (BSR)": ((8, 12), (0, 1, 2, 3), (0, 1), (2, 3), {1}, (2, 3)),
    "block sparse, 4 along dim 1 only": ((6, 16), (0, 1, 2), (1,), (4,), {1}, (1, 4)),
    "block sparse, blocks traversed in swapped order": ((4, 6), (0, 1, 3, 2), (0, 1), (2, 3), {1}, (2, 3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_densify_inverts_independent_encoder(case, rng):
    shape, order, block_map, block_size, csr, zero_block = CASES[case]
    dense = random_sparse(rng, shape, block=zero_block)
    values, sparsity = encode(dense, order, block_map, block_size, csr)
    assert values.size < dense.size or not csr  # the encoding dropped zeros
    np.testing.assert_array_equal(densify(values, shape, sparsity), dense)


def test_densify_nnapi_block_example():
    """NNAPI's DENSIFY spec example 7: a [10, 21] tensor in 5x7 blocks, every level dense; values
    0, 7, 14, 21 of the traversal land at rows 0, 1, 2, 3 of column 0."""
    sparsity = Sparsity((0, 1, 2, 3), (0, 1), tuple(SparseLevel(dense_size=d) for d in (2, 3, 5, 7)))
    values = np.zeros(210, np.float32)
    values[0:22:7] = [11, 13, 17, 19]
    expected = np.zeros((10, 21), np.float32)
    expected[:4, 0] = [11, 13, 17, 19]
    np.testing.assert_array_equal(densify(values, (10, 21), sparsity), expected)


@pytest.mark.parametrize("change, message", [
    (lambda lv: SparseLevel(segments=lv.segments, indices=lv.indices + 40), "array_indices entry outside"),
    (lambda lv: SparseLevel(segments=lv.segments[:-2], indices=lv.indices), "array_segments"),
    (lambda lv: SparseLevel(segments=lv.segments * 3, indices=lv.indices), "not increasing"),
])
def test_densify_rejects_malformed_levels(change, message, rng):
    dense = random_sparse(rng, (4, 32))
    values, sparsity = encode(dense, (0, 1), (), (), {1})
    broken = Sparsity(sparsity.traversal_order, (), (sparsity.levels[0], change(sparsity.levels[1])))
    with pytest.raises(ValueError, match=message):
        densify(values, (4, 32), broken)
    with pytest.raises(ValueError, match="buffer holds"):
        densify(values[:-1], (4, 32), sparsity)


def densify_pairs(model):
    """(sparse input, DENSIFY output) tensor indices of every DENSIFY op of the main subgraph."""
    from tflite.BuiltinOperator import BuiltinOperator

    subgraph = model.Subgraphs(0)
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == BuiltinOperator.DENSIFY:
            yield int(op.Inputs(0)), int(op.Outputs(0))


@pytest.mark.parametrize("name", SPARSE_MODELS)
def test_densify_matches_litert_on_mediapipe_models(name):
    """Every sparse weight of the model, densified, equals LiteRT's DENSIFY output bit for bit
    (float16). XNNPACK is off so that LiteRT's own kernels run and keep their outputs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path = fetch(name)
    data = path.read_bytes()
    model = tflite.Model.GetRootAsModel(data, 0)
    subgraph = model.Subgraphs(0)
    interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    (feed,) = interpreter.get_input_details()
    interpreter.set_tensor(feed["index"], np.zeros(feed["shape"], np.float32))
    interpreter.invoke()
    pairs = list(densify_pairs(model))
    assert len(pairs) == {"face_detection_full_range_sparse": 46, "pose_detection": 38}[name]
    for sparse, dense in pairs:
        tensor = subgraph.Tensors(sparse)
        values = np.frombuffer(model.Buffers(tensor.Buffer()).DataAsNumpy().tobytes(), np.float16)
        ours = densify(values, tuple(tensor.ShapeAsNumpy()), read_sparsity(tensor.Sparsity()))
        np.testing.assert_array_equal(ours, interpreter.get_tensor(dense), err_msg=tensor.Name().decode())


def test_corrupt_sparse_index_is_reported_with_the_file():
    """An array_indices entry past its dimension is a corrupt file, said as such before TVM runs."""
    path = fetch("face_detection_full_range_sparse")
    data = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(data, 0)
    subgraph = model.Subgraphs(0)
    sparse, _ = next(densify_pairs(model))
    indices = subgraph.Tensors(sparse).Sparsity().DimMetadata(3).ArrayIndices()
    vector = Table(indices.Bytes, indices.Pos)
    data[vector.Vector(vector.Offset(4))] = 200  # a Uint8Vector entry; the dimension has 32 channels
    with pytest.raises(ModelLoadError, match=r"<bytes>: .*truncated or corrupt.*array_indices entry outside 0\.\.31"):
        parse_tflite(bytes(data), "<bytes>")


@pytest.fixture(scope="module")
def full_range_detector():
    """MediaPipe's full-range face detector compiled for the host: (path, compiled model)."""
    return fetch(SPARSE_MODELS[0]), edgetvm.compile(f"zoo:{SPARSE_MODELS[0]}", "host")


def test_sparse_detector_matches_litert(full_range_detector):
    """MediaPipe's full-range face detector (46 sparse 1x1 convolutions) on the astronaut, 192x192, [-1, 1]."""
    path, compiled = full_range_detector
    x = image_to_input(load_astronaut(), compiled.inputs[0],
                       preprocess=Preprocess.coerce(PREPROCESSING["face_detection_full_range_sparse"]))
    reference = litert_outputs(path, x)
    assert [t.name for t in compiled.outputs] == list(reference)
    assert_outputs_match(compiled.run_dict(x), reference, rtol=1e-4)


def test_sparse_detector_report_notes_the_sparse_layers(full_range_detector):
    _, compiled = full_range_detector
    notes = compiled.report.details["import"]["notes"]
    assert any(n.startswith("densified 46 sparse weight tensor(s)") and "69.9% to 70.0% zeros" in n for n in notes)
    assert any(n.startswith("46 densified weight tensor(s) are >= 67% zeros") for n in notes)
    lines = explain(compiled.report.passes, compiled.report.details)  # compile --explain
    assert lines[:len(notes)] == [f"import: {note}" for note in notes]


def test_densify_refuses_a_shape_larger_than_its_values_before_allocating():
    """A corrupt 10^5 x 10^5 all-dense tensor with three stored values fails on the count, at once."""
    sparsity = Sparsity((0, 1), (), (SparseLevel(dense_size=100_000), SparseLevel(dense_size=100_000)))
    with pytest.raises(ValueError, match="more entries than the 3 stored values"):
        densify(np.ones(3, np.float32), (100_000, 100_000), sparsity)


def test_densify_refuses_overlapping_segments():
    """Parents 0 and 2 of a CSR level both claiming all of array_indices: a corrupt file, refused
    rather than expanded into more values than it stores."""
    sparsity = Sparsity((0, 1, 2), (), (SparseLevel(dense_size=3), SparseLevel(dense_size=1),
                                        SparseLevel(segments=np.array([0, 4, 0, 4]), indices=np.arange(4))))
    with pytest.raises(ValueError, match="not increasing"):
        densify(np.ones(8, np.float32), (3, 1, 4), sparsity)

"""GPTQ's codebook assignment (compression/assign.py): against an unblocked OBQ reference in numpy, below
nearest assignment's output error on a conv layer's calibration inputs, and through compile and export."""

from __future__ import annotations

import numpy as np
import pytest

import edgetvm
from edgetvm.compression import ClusterWeights, CompressOptions, cluster_scaled, cluster_tensor, expand_scaled
from edgetvm.compression.assign import DAMPING, DAMPING_FEW_ROWS, FEW_ROWS, gptq_assign
from edgetvm.errors import InputError
from edgetvm.kernels.im2col import im2col


def obq_reference(x, x0, w0, codes, per_output, scales=None):
    """GPTQ as Optimal Brain Quantization states it, one output row and one column at a time: round
    column j to the nearest entry of the row's codebook (a pinned zero stays), spread the error over
    the columns left with the inverse Hessian, then remove column j from that inverse."""
    outputs, depth = w0.shape
    damping = DAMPING if x.shape[0] >= FEW_ROWS * depth else DAMPING_FEW_ROWS
    groups = x.shape[1]
    per_group = outputs // groups
    gains = np.ones(outputs) if scales is None else scales.astype(np.float64)
    out = np.zeros((outputs, depth))
    for o in range(outputs):
        g = o // per_group
        xs, x0s = x[:, g].astype(np.float64), x0[:, g].astype(np.float64)
        h = xs.T @ xs
        h += damping * np.trace(h) / depth * np.eye(depth)
        # The weight that best reproduces the original output on these inputs.
        w = w0[o].astype(np.float64) + np.linalg.solve(h, xs.T @ ((x0s - xs) @ w0[o].astype(np.float64)))
        book = np.unique(codes[o] if per_output else codes)
        pinned = (codes[o] == 0) & (book == 0).any()
        book = book[book != 0]
        hinv = np.linalg.inv(h)
        for j in range(depth):
            q = 0.0 if pinned[j] else book[np.argmin(np.abs(w[j] / gains[o] - book))]
            out[o, j] = q
            error = (w[j] - gains[o] * q) / hinv[j, j]
            w -= error * hinv[j]
            hinv -= np.outer(hinv[:, j], hinv[j]) / hinv[j, j]
    return out


def relu_patches(rng, n, channels, hw, groups=1):
    """A conv layer's im2col inputs as a trained net's are: smooth, non-negative, correlated channels."""
    base = rng.normal(size=(n, 2, hw, hw))
    mix = rng.normal(size=(channels, 2))
    maps = np.einsum("cm,nmhw->nchw", mix, base) + 0.3 * rng.normal(size=(n, channels, hw, hw))
    kernel = np.ones(3) / 3  # a blur: neighbouring pixels correlate
    for axis in (2, 3):
        maps = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), axis, maps)
    maps = np.maximum(maps, 0).astype(np.float32)
    cols = im2col(maps, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1])
    return cols.reshape(-1, groups, cols.shape[-1] // groups)


def output_error(x, x0, w0, w):
    groups = x.shape[1]
    per_group = w0.shape[0] // groups
    got = np.concatenate([x[:, g] @ w[g * per_group:(g + 1) * per_group].T for g in range(groups)], axis=1)
    want = np.concatenate([x0[:, g] @ w0[g * per_group:(g + 1) * per_group].T for g in range(groups)], axis=1)
    return float(((got - want) ** 2).sum() / (want ** 2).sum())


@pytest.mark.parametrize("samples", [1, 12], ids=["few-rows", "rows"])
@pytest.mark.parametrize("case", ["shared", "per-output", "scaled", "grouped", "pruned", "drifted-input"])
def test_gptq_matches_obq_and_errs_less_than_nearest(rng, case, samples):
    channels, outputs = (4, 8) if case == "grouped" else (6, 12)
    groups = 2 if case == "grouped" else 1
    x0 = relu_patches(rng, samples, channels, 8, groups).astype(np.float64)
    assert (x0.shape[0] >= FEW_ROWS * x0.shape[-1]) == (samples == 12)  # each damping of assign.py
    x = x0 + 0.05 * rng.normal(size=x0.shape) if case == "drifted-input" else x0
    depth = x0.shape[-1]
    w0 = (rng.normal(size=(outputs, depth)) * np.geomspace(0.1, 1, outputs)[:, None]).astype(np.float32)
    scales = None
    if case == "scaled":
        codes, scales = cluster_scaled(w0, 8)
    elif case == "per-output":
        codes, _ = cluster_tensor(np.repeat(w0, 8, axis=1), 4)  # 16 k weights a row: a codebook per row
        codes = codes[:, ::8]
    else:
        codes, _ = cluster_tensor(w0, 8, axis=None, sparsity=0.5 if case == "pruned" else 0.0)
    per_output = case == "per-output"
    got = gptq_assign(x, x0, w0, codes, per_output, scales, block=5)  # blocks of 5: the block edges are crossed
    want = obq_reference(x, x0, w0, codes, per_output, scales)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    # Every code an entry of its row's codebook; pruned weights stay exactly zero.
    for row, row_codes in zip(got, codes):
        assert np.isin(row, np.unique(row_codes if per_output else codes)).all()
    if case == "pruned":
        assert (got[codes == 0] == 0).all() and np.isin(got[codes != 0], np.unique(codes[codes != 0])).all()
    scale = np.ones((outputs, 1)) if scales is None else scales[:, None]
    nearest = output_error(x, x0, w0, codes * scale)
    gptq = output_error(x, x0, w0, got * scale)
    assert gptq < nearest, (gptq, nearest)


def test_channel_without_scale_keeps_its_codes(rng):
    x0 = relu_patches(rng, 2, 4, 6)
    w0 = rng.normal(size=(3, x0.shape[-1])).astype(np.float32)
    w0[1] = 0
    codes, scales = cluster_scaled(w0, 4)
    got = gptq_assign(x0, x0, w0, codes, False, scales)
    np.testing.assert_array_equal(got[1], codes[1])
    assert (expand_scaled(got, scales)[1] == 0).all()


def test_assign_option_parses_and_bad_values_are_named():
    options = CompressOptions.coerce({"clusters": 8, "assign": "gptq"})
    assert options.assign == "gptq"
    assert options.cluster_pass(evaluate=lambda *a: None, samples=[1]).assign == "gptq"
    assert CompressOptions.coerce({"clusters": 8, "assign": "nearest"}).cluster_pass().assign == "nearest"
    # The default: GPTQ with calibration inputs and the refit; without them nothing to choose against.
    assert CompressOptions.coerce({"clusters": 8}).cluster_pass(evaluate=lambda *a: None, samples=[1]).assign == "gptq"
    assert CompressOptions.coerce({"clusters": 8}).cluster_pass().assign == "nearest"
    assert CompressOptions.coerce({"clusters": 8, "refit": False}).cluster_pass(
        evaluate=lambda *a: None, samples=[1]).assign == "nearest"
    with pytest.raises(InputError, match="--cluster-assign 'best': choose gptq or nearest"):
        CompressOptions.coerce({"clusters": 8, "assign": "best"})
    with pytest.raises(InputError, match="--cluster-assign gptq chooses the codes .* give calibration"):
        ClusterWeights(8, assign="gptq")
    with pytest.raises(InputError, match="drop --no-cluster-refit"):
        ClusterWeights(8, assign="gptq", evaluate=lambda *a: None, samples=[1], refit=False)


@pytest.mark.parametrize("scaled", [False, True], ids=["codebook", "scaled"])
def test_gptq_compile_reports_less_output_error_and_decodes_bit_exactly(tmp_path, rng, scaled):
    from tests.backends.standalone_models import small_convnet

    calibration = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    compress = {"clusters": 4, "keep": [], "scaled": scaled, "entropy": "huffman"}
    built = {assign: edgetvm.compile(small_convnet(), "host", calibration=calibration,
                                     compress={**compress, "assign": assign}) for assign in ("nearest", "gptq")}
    layers = {assign: c.report.details["ClusterWeights"]["layers"] for assign, c in built.items()}
    assert [layer.get("assign") for layer in layers["gptq"]] == ["gptq"] * 4
    assert not any("assign" in layer for layer in layers["nearest"])
    # The first conv reads the same (exact) input either way: its refit error is GPTQ's gain alone.
    first = [layer for layer in layers["gptq"] if len(layer["shape"]) == 4 and layer["shape"][1] == 3][0]
    nearest_first = [layer for layer in layers["nearest"] if layer["layer"] == first["layer"]][0]
    assert first["output_error_refit"] < nearest_first["output_error_refit"], (first, nearest_first)
    compiled = built["gptq"]
    so = compiled.export(tmp_path / "gptq.so", standalone=True)
    x = calibration[0]
    for got, want in zip(edgetvm.load(so)(x), compiled(x)):
        np.testing.assert_array_equal(got, want)

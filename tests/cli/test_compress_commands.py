"""``edgetvm compile --cluster K [--cluster-layers ...] [--entropy huffman]``, run as a user runs it."""

from __future__ import annotations

import numpy as np
import pytest

import edgetvm
from edgetvm.artifact import read_sidecar
from edgetvm.cli.main import build_parser
from edgetvm.cli.options import compile_kwargs
from edgetvm.errors import InputError

from .conftest import SHAPE, edgetvm as run_edgetvm


def test_cluster_and_entropy_write_a_smaller_artifact_with_the_report(small_model, tmp_path, rng):
    proc = run_edgetvm("compile", small_model, "--standalone", "--cluster", "8", "--entropy", "huffman",
                       "--explain", "-o", tmp_path / "coded.so")
    assert proc.returncode == 0, proc.stderr
    assert "ClusterWeights: clustered=" in proc.stdout
    meta = read_sidecar(tmp_path / "coded.so")
    assert meta["weights"] == "huffman"
    report = meta["report"]["details"]
    sizes = report["compression"]["bytes"]
    assert sizes["coded"] <= sizes["clustered"] < sizes["fp32"] / 1.5
    layers = report["ClusterWeights"]["layers"]
    assert layers and all(layer["k"] == 8 for layer in layers)
    x = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    assert all(np.isfinite(y).all() for y in edgetvm.load(tmp_path / "coded.so")(x))
    refused = run_edgetvm("compile", small_model, "--cluster", "3", "-o", tmp_path / "x.so")
    assert refused.returncode != 0 and "--cluster 3: give a number of clusters from 4 to 256" in refused.stderr
    assert "Traceback" not in refused.stderr


def kwargs_of(*argv: str) -> dict:
    return compile_kwargs(build_parser().parse_args(["compile", "m.onnx", "-o", "m.so", *argv]))


def test_flags_become_compile_options():
    assert kwargs_of("--cluster-layers", "conv_1*=8,pre_fc1*=32", "--cluster", "16", "--standalone",
                     "--entropy", "huffman")["compress"] == {"clusters": 16, "layers": {"conv_1*": 8, "pre_fc1*": 32},
                                                             "entropy": "huffman"}
    assert "compress" not in kwargs_of()
    measured = kwargs_of("--cluster-max-error", "0.01", "--calib", "faces/")
    assert measured["compress"] == {"max_error": 0.01} and measured["calibration"] == "faces/"
    refit = kwargs_of("--cluster", "8", "--calib", "faces/")
    assert refit["compress"] == {"clusters": 8} and refit["calibration"] == "faces/"
    assert kwargs_of("--cluster", "8", "--cluster-sparsity", "0.8")["compress"] == {"clusters": 8, "sparsity": 0.8}
    assert kwargs_of("--cluster", "8", "--cluster-sparsity", "fc*=0.9,conv_*=0.5")["compress"]["sparsity"] == {
        "fc*": 0.9, "conv_*": 0.5}
    assert kwargs_of("--cluster", "8", "--calib", "faces/", "--no-cluster-refit")["compress"] == {"clusters": 8,
                                                                                                 "refit": False}
    assert kwargs_of("--cluster", "8", "--cluster-scaled")["compress"] == {"clusters": 8, "scaled": True}
    assert kwargs_of("--cluster-max-error", "0.005", "--calib", "faces/", "--cluster-scaled")["compress"] == {
        "max_error": 0.005, "scaled": True}
    assert kwargs_of("--cluster", "8", "--calib", "faces/", "--cluster-assign", "gptq")["compress"] == {
        "clusters": 8, "assign": "gptq"}
    assert kwargs_of("--cluster", "8", "--cluster-assign", "nearest")["compress"] == {"clusters": 8,
                                                                                     "assign": "nearest"}


@pytest.mark.parametrize("argv, message", [
    (("--entropy", "huffman"), "--entropy huffman is decoded by the standalone C runtime: add --standalone"),
    (("--cluster-layers", "conv"), "--cluster-layers 'conv': write PATTERN=K"),
    (("--cluster", "8", "--cluster-sparsity", "fc=x"), "--cluster-sparsity 'fc=x': write S or PATTERN=S"),
    (("--cluster-sparsity", "0.5"), "--cluster-sparsity prunes the clustered layers before clustering: add"),
    (("--cluster-max-error", "0.01"), "--cluster-max-error measures each layer's error on calibration inputs"),
    (("--cluster-scaled",), "--cluster-scaled shapes the clustered layers' codebooks: add --cluster K"),
    (("--cluster-assign", "gptq"), "--cluster-assign gptq chooses the clustered layers' codes: add --cluster K"),
    (("--cluster", "8", "--cluster-assign", "best"), "--cluster-assign 'best': choose gptq or nearest"),
])
def test_flag_mistakes_are_named(argv, message):
    with pytest.raises(InputError, match=message):
        kwargs_of(*argv)


def test_entropy_with_fp16_is_refused(small_model):
    with pytest.raises(InputError, match="drop --weights fp16"):
        edgetvm.compile(small_model, weights="fp16", compress={"entropy": "huffman"})

"""Pruning end to end: criteria, ratios, lossless removal, least-squares recovery, the ONNX written
back (checked in onnxruntime), the compile API and the CLI."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgetvm
from edgetvm.cli.main import main as cli_main
from edgetvm.errors import InputError
from edgetvm.host import HostEvaluator, calibration_evaluator
from edgetvm.pruning.prune import prune_model

from .nets import Net, import_named, initializer_shapes, masked_reference, run_onnx


def small_net(seed=0, width=16):
    """conv-BN-PReLU, an inverted residual block (1x1 expand, depthwise, 1x1 project, add), a head."""
    net = Net(shape=(1, 3, 16, 16), seed=seed)
    x = net.prelu(net.bn(net.conv("x", 3, width, name="stem"), width), width)
    e = net.prelu(net.bn(net.conv(x, width, 2 * width, k=1, bias=False, name="expand"), 2 * width), 2 * width)
    d = net.prelu(net.bn(net.conv(e, 2 * width, 2 * width, groups=2 * width, bias=False, name="dw"), 2 * width),
                  2 * width)
    p = net.bn(net.conv(d, 2 * width, width, k=1, bias=False, name="project"), width)
    y = net.op("Add", [p, x])
    out = net.conv(y, width, 8, k=1, name="head")
    return net.model([out])


def inputs(n, seed=1, shape=(1, 3, 16, 16)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(n)]


def rel_error(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_l1_criterion_keeps_the_largest_filters_in_multiples_of_four():
    model = small_net()
    pruned = prune_model(model, 0.3, recover=False)
    by_group = {g["group"]: g for g in pruned.report["groups"]}
    assert by_group["w_expand"]["channels"] == 32 and by_group["w_expand"]["kept"] == 24  # round(22.4 / 4) * 4
    assert all(g["kept"] % 4 == 0 for g in pruned.report["groups"] if g.get("criterion"))
    w = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w_expand"))
    norms = np.abs(w).reshape(32, -1).sum(axis=1)
    kept = pruned.result.plan.kept(pruned.result.plan.deps.producers[1].weight, 0)
    assert pruned.result.plan.deps.producers[1].layer == "w_expand"
    assert set(kept) == set(np.argsort(norms)[8:])


def test_bn_gamma_criterion_and_never_zero_channels():
    net = Net()
    gamma = np.linspace(0.01, 1.6, 16)[::-1]  # channel 15 has the smallest gamma
    y = net.op("Relu", [net.bn(net.conv("x", 3, 16, name="body"), 16, gamma=gamma)])
    model = net.model([net.conv(y, 16, 4, name="head")])
    pruned = prune_model(model, 0.5, criterion="bn_gamma", recover=False)
    assert list(pruned.result.plan.kept("w_body", 0)) == list(range(8))
    almost_all = prune_model(model, 0.99, criterion="bn_gamma", recover=False)
    assert initializer_shapes(almost_all.onnx)["w_body"][0] == 4  # never zero: one NEON lane of 4


def test_masks_and_per_layer_ratios():
    model = small_net()
    mask = np.ones(16, bool)
    mask[[1, 5, 9, 13]] = False
    pruned = prune_model(model, 0.0, criterion={"w_stem": mask}, recover=False)
    assert list(pruned.result.plan.kept("w_stem", 0)) == [i for i in range(16) if mask[i]]
    with pytest.raises(InputError, match="every channel"):
        prune_model(model, 0.0, criterion={"w_stem": np.zeros(16, bool)})
    with pytest.raises(InputError, match="not prunable"):
        prune_model(model, 0.0, criterion={"w_nope": mask})
    per_layer = prune_model(model, {"w_expand": 0.5, "*": 0.0}, recover=False)
    shapes = initializer_shapes(per_layer.onnx)
    assert shapes["w_expand"][0] == 16 and shapes["w_stem"][0] == 16


def test_lossless_removal_of_constant_channels_folds_them_into_the_next_layer():
    # gamma = 0: the channel is beta after BN, PReLU(beta) after the activation, then a padded
    # depthwise conv makes it a fixed *spatial* map: folded exactly as an offset map.
    net = Net(shape=(1, 3, 16, 16))
    gamma = np.ones(16)
    gamma[[2, 3, 7, 11]] = 0.0
    x = net.prelu(net.bn(net.conv("x", 3, 16, k=1, name="expand"), 16, gamma=gamma), 16)
    d = net.prelu(net.bn(net.conv(x, 16, 16, groups=16, name="dw"), 16), 16)
    model = net.model([net.conv(d, 16, 8, k=1, name="project")])
    kept = prune_model(model, 0.0)  # by default only folds into a bias, and this one needs a map
    assert initializer_shapes(kept.onnx)["w_expand"][0] == 16
    pruned = prune_model(model, 0.0, spatial_folds=True)
    assert initializer_shapes(pruned.onnx)["w_expand"][0] == 12
    assert list(pruned.report["recovery"]["folded"].values()) == ["spatial"]
    for x in inputs(2, shape=(1, 3, 16, 16)):
        np.testing.assert_allclose(run_onnx(pruned.onnx, x)[0], run_onnx(model, x)[0], rtol=1e-5, atol=1e-5)


def test_least_squares_recovery_reduces_the_error_and_matches_onnx():
    model = small_net(seed=3)
    calib, held_out = inputs(16, seed=2), inputs(4, seed=9)
    plain = prune_model(model, 0.5, recover=False)
    recovered = prune_model(model, 0.5, calibration=calib)
    assert recovered.report["recovery"]["refit"]
    err_plain = np.mean([rel_error(run_onnx(plain.onnx, x)[0], run_onnx(model, x)[0]) for x in held_out])
    err_rec = np.mean([rel_error(run_onnx(recovered.onnx, x)[0], run_onnx(model, x)[0]) for x in held_out])
    assert err_rec < 0.8 * err_plain, (err_rec, err_plain)  # a random net has little redundancy to recover
    # without recovery, pruning equals zeroing the removed channels at the next layer's input
    np.testing.assert_allclose(run_onnx(plain.onnx, held_out[0])[0],
                               run_onnx(masked_reference(model, plain.result), held_out[0])[0], rtol=1e-4, atol=1e-4)
    # the pruned Relax graph and the pruned ONNX compute the same thing
    relax_out = HostEvaluator()(recovered.result.func, recovered.result.weights, [[held_out[0]]])[0][0]
    np.testing.assert_allclose(relax_out, run_onnx(recovered.onnx, held_out[0])[0], rtol=1e-4, atol=1e-4)


def test_compile_with_prune_matches_the_pruned_onnx(tmp_path):
    model = small_net(seed=4)
    calib = inputs(8, seed=5)
    compiled = edgetvm.compile(model, prune=0.3, calibration=calib, fuse=True)
    assert "PruneChannels" in compiled.report.passes
    assert compiled.report.details["prune"]["recovery"]["refit"]
    from edgetvm.targets import resolve_target

    # compile rounds channel counts to the target's vector lanes (8 with AVX2 on the host, 4 on NEON)
    reference = prune_model(model, 0.3, calibration=calib, round_to=resolve_target("host").vector_lanes).onnx
    x = inputs(1, seed=11)[0]
    got = compiled(x)
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(got, run_onnx(reference, x)[0], rtol=1e-4, atol=1e-4)


def test_cli_prune_writes_an_onnx_that_onnxruntime_runs(tmp_path, capsys):
    src = tmp_path / "net.onnx"
    onnx.save(small_net(), src)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, x in enumerate(inputs(4, seed=6)):
        np.save(calib / f"{i}.npy", x)
    out = tmp_path / "pruned.onnx"
    assert cli_main(["prune", str(src), "--ratio", "0.3", "--calib", str(calib), "--allocation", "uniform",
                     "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    pruned = onnx.load(out)
    assert initializer_shapes(pruned)["w_expand"][0] == 24
    assert run_onnx(pruned, inputs(1)[0])[0].shape == (1, 8, 16, 16)
    assert cli_main(["prune", str(tmp_path / "missing.onnx"), "-o", str(out)]) == 2
    assert "missing.onnx" in capsys.readouterr().err


def test_activation_criterion_and_global_allocation():
    model = small_net(seed=6)
    calib = inputs(8, seed=7)
    with pytest.raises(InputError, match="calibration"):
        prune_model(model, 0.3, criterion="activation")
    by_energy = prune_model(model, 0.5, criterion="activation", calibration=calib)
    assert {g["criterion"] for g in by_energy.report["groups"] if "criterion" in g} == {"activation"}
    from edgetvm.pruning.plan import PruningConfig
    from edgetvm.pruning.rewrite import prune_function

    func, weights = import_named(model)
    result = prune_function(func, PruningConfig(ratio=0.25, allocation="global"), weights=weights,
                            evaluate=calibration_evaluator())
    groups = [g for g in result.plan.report if "criterion" in g or g["kept"] != g["channels"]]
    removed = sum(g["channels"] - g["kept"] for g in result.plan.report if "blocked" not in g)
    total = sum(g["channels"] for g in result.plan.report if "blocked" not in g)
    assert groups and abs(removed - 0.25 * total) <= 4 * len(groups)
    assert all(g["kept"] % 4 == 0 and g["kept"] >= 0.25 * g["channels"] for g in result.plan.report)


def test_cli_compile_takes_prune_options():
    from edgetvm.cli.main import build_parser
    from edgetvm.cli.options import compile_kwargs

    args = build_parser().parse_args(["compile", "m.onnx", "-o", "m.so", "--prune", "0.3", "--prune-criterion",
                                      "bn_gamma", "--prune-calib", "faces/"])
    kwargs = compile_kwargs(args)
    assert kwargs["prune"] == 0.3 and kwargs["prune_criterion"] == "bn_gamma" and kwargs["calibration"] == "faces/"
    assert "prune" not in compile_kwargs(build_parser().parse_args(["compile", "m.onnx", "-o", "m.so"]))


def test_reconstruction_criterion_minimises_the_next_layers_error():
    # Greedy backward elimination is exact for the first layer after the pruned group: its
    # least-squares error after the refit cannot be worse than with an l1 choice of the same size.
    net = Net(shape=(1, 3, 16, 16), seed=8)
    x = net.prelu(net.bn(net.conv("x", 3, 32, name="a"), 32), 32)
    model = net.model([net.conv(x, 32, 8, k=1, name="b")])
    calib = inputs(8, seed=12)
    errors = {}
    for criterion in ("l1", "reconstruction"):
        pruned = prune_model(model, 0.5, criterion=criterion, calibration=calib)
        (stats,) = pruned.report["recovery"]["refit"].values()
        errors[criterion] = stats["rel_error_after"]
    assert errors["reconstruction"] <= errors["l1"] * 1.02, errors


def test_calibration_beyond_the_limit_is_cut_and_the_report_says_so(tmp_path, monkeypatch, capsys):
    from edgetvm.pruning import prune
    from edgetvm.specs import TensorSpec

    spec = [TensorSpec("x", (1, 3, 16, 16), "float32")]
    notes = []
    samples = prune.load_calibration(inputs(5, seed=4), spec, limit=3, notes=notes)
    assert len(samples) == 3 and notes and "first 3 of 5" in notes[0]
    for i, x in enumerate(inputs(4, seed=6)):
        np.save(tmp_path / f"{i}.npy", x)
    notes = []
    assert len(prune.load_calibration(tmp_path, spec, limit=2, notes=notes)) == 2 and "first 2 of the 4" in notes[0]
    monkeypatch.setattr(prune, "CALIBRATION_LIMIT", 3)  # read at call time by prune_model and the CLI
    pruned = prune_model(small_net(seed=3), 0.3, calibration=inputs(6, seed=2), allocation="uniform")
    assert any("first 3 of 6" in n for n in pruned.report["notes"])
    src = tmp_path / "net.onnx"
    onnx.save(small_net(), src)
    assert cli_main(["prune", str(src), "--ratio", "0.3", "--calib", str(tmp_path), "--allocation", "uniform",
                     "-o", str(tmp_path / "pruned.onnx")]) == 0
    assert "note: calibration: used the first 3 of the 4 files" in capsys.readouterr().out

"""Least-squares recovery's safeguards against few calibration inputs, and the sensitivity allocation:
cross-validated ridge, the channel map for a dense layer after a flatten, costs measured per group."""

from __future__ import annotations

import numpy as np

from edgetvm.pruning.plan import PruningConfig
from edgetvm.pruning.recovery import CV_ALPHAS, ridge_dual, ridge_primal
from edgetvm.pruning.rewrite import prune_function
from edgetvm.pruning.sensitivity import sensitivity_allocation
from edgetvm.host import calibration_evaluator
from edgetvm.pruning.prune import prune_model

from .nets import Net, import_named, run_onnx
from .test_prune import inputs, rel_error, small_net


def _regression(rng, images, per_image, d, noise):
    """Rows grouped by image (positions of one image are alike: a shared per-image offset)."""
    shift = rng.normal(size=(images, 1, d))
    a = (rng.normal(size=(images, per_image, d)) + shift).reshape(-1, d)
    w = rng.normal(size=(d, 3))
    t = a @ w + noise * rng.normal(size=(a.shape[0], 3))
    return a - a.mean(0), t - t.mean(0), np.repeat(np.arange(images), per_image), w


def test_cross_validated_ridge_fits_unseen_inputs_better_than_a_fixed_small_ridge():
    rng = np.random.default_rng(0)
    a, t, image, w_true = _regression(rng, images=8, per_image=6, d=40, noise=3.0)
    theta0 = w_true + 0.3 * rng.normal(size=w_true.shape)  # the original weights: close to the truth
    a_test, _, _, _ = _regression(rng, images=50, per_image=6, d=40, noise=0.0)
    t_test = a_test @ w_true
    w_small, alpha_small = ridge_primal(a, t, theta0, image, (1e-4,))
    w_cv, alpha_cv = ridge_primal(a, t, theta0, image, CV_ALPHAS)
    assert alpha_small == 1e-4 and alpha_cv > 1e-3
    err_small = np.linalg.norm(t_test - a_test @ w_small)
    err_cv = np.linalg.norm(t_test - a_test @ w_cv)
    assert err_cv < 0.7 * err_small, (err_cv, err_small)
    # the dual form (more unknowns than samples): cross-validation keeps the noise out of the refit
    a, t, image, w_true = _regression(rng, images=8, per_image=6, d=120, noise=3.0)
    theta0 = w_true + 0.3 * rng.normal(size=w_true.shape)
    a_test, _, _, _ = _regression(rng, images=50, per_image=6, d=120, noise=0.0)
    errors = {}
    for alphas in ((1e-4, 1e-4), CV_ALPHAS):
        w_dual, _ = ridge_dual(a, t, theta0, image, alphas)
        errors[len(alphas)] = np.linalg.norm(a_test @ (w_true - w_dual))
    assert errors[len(CV_ALPHAS)] < 0.9 * errors[2], errors
    # plenty of clean samples: cross-validation picks a small ridge and recovers the truth
    a, t, image, w_true = _regression(rng, images=20, per_image=30, d=10, noise=0.01)
    w, alpha = ridge_primal(a, t, np.zeros_like(w_true), image, CV_ALPHAS)
    assert alpha <= 1e-2 and np.abs(w - w_true).max() < 0.01


def test_sensitivity_allocation_prunes_cheap_groups_more_at_the_same_global_ratio():
    sizes = {"cheap": 64, "dear": 64, "small": 16}
    keep = sensitivity_allocation(sizes, {"cheap": 0.01, "dear": 0.09, "small": 0.01}, probe_ratio=0.25, ratio=0.25)
    removed = {g: sizes[g] - k for g, k in keep.items()}
    assert all(k % 4 == 0 and k >= 4 for k in keep.values())
    assert abs(sum(removed.values()) - 0.25 * 144) <= 2
    assert removed["cheap"] > removed["dear"] > 0
    # quadratic costs: a_g r_g is equal across groups at the optimum (cheap 9x lower -> ~9x the ratio,
    # capped at max_group_ratio)
    keep = sensitivity_allocation({"a": 400, "b": 400}, {"a": 1.0, "b": 1.0}, 0.2, 0.3)
    assert keep == {"a": 280, "b": 280}
    keep = sensitivity_allocation({"a": 400, "b": 400}, {"a": 0.0, "b": 1.0}, 0.2, 0.5, max_group_ratio=0.75)
    assert keep["a"] == 100 and keep["b"] == 300


def flatten_net():
    """conv-BN-PReLU twice, flatten, a fully connected embedding: SFace's head in small."""
    net = Net(shape=(1, 3, 8, 8), seed=21)
    x = net.prelu(net.bn(net.conv("x", 3, 16, name="a"), 16), 16)
    x = net.prelu(net.bn(net.conv(x, 16, 32, stride=2, name="b"), 32), 32)
    flat = net.op("Flatten", [x], axis=1)
    return net.model([net.gemm(flat, 32 * 4 * 4, 8, name="fc")])


def test_dense_after_flatten_is_refit_through_a_channel_map():
    model = flatten_net()
    calib, held_out = inputs(24, seed=3, shape=(1, 3, 8, 8)), inputs(8, seed=4, shape=(1, 3, 8, 8))
    plain = prune_model(model, 0.5, recover=False)
    recovered = prune_model(model, 0.5, calibration=calib)
    refit = recovered.report["recovery"]["refit"]
    fc = [s for s in refit.values() if "channel map" in s.get("method", "")]
    assert len(fc) == 1 and fc[0]["samples"] == 24 * 16  # every image x every position
    ref = [run_onnx(model, x)[0] for x in held_out]
    err_plain = np.mean([rel_error(run_onnx(plain.onnx, x)[0], r) for x, r in zip(held_out, ref)])
    err_rec = np.mean([rel_error(run_onnx(recovered.onnx, x)[0], r) for x, r in zip(held_out, ref)])
    assert err_rec < 0.8 * err_plain, (err_rec, err_plain)


def test_sensitivity_allocation_end_to_end_keeps_the_global_ratio():
    model = small_net(seed=7, width=32)
    func, weights = import_named(model)
    calib = [[x] for x in inputs(12, seed=8)]
    result = prune_function(func, PruningConfig(ratio=0.3, allocation="sensitivity"), weights=weights,
                            evaluate=calibration_evaluator(), calibration=calib)
    groups = [g for g in result.plan.report if "sensitivity" in g]
    assert len(groups) >= 2 and all(g["sensitivity"] > 0 for g in groups)
    removed = sum(g["channels"] - g["kept"] for g in groups)
    assert abs(removed - 0.3 * sum(g["channels"] for g in groups)) <= 2
    assert all(g["kept"] % 4 == 0 and g["kept"] >= 4 for g in groups)
    # the group whose loss costs most keeps the most of its channels
    dearest = max(groups, key=lambda g: g["sensitivity"] / g["channels"])
    cheapest = min(groups, key=lambda g: g["sensitivity"] / g["channels"])
    assert dearest["kept"] / dearest["channels"] >= cheapest["kept"] / cheapest["channels"]


def test_one_group_refit_without_a_model_run_equals_the_stepped_refit():
    # Sensitivity probes prune one group alone: the layers after it then see the original inputs minus
    # the removed channels, so their refit needs no model run. It must equal the stepped refit.
    from edgetvm.pruning.dependencies import analyze_channel_dependencies
    from edgetvm.pruning.selection import plan_pruning
    from edgetvm.pruning.sensitivity import allocation_groups
    from edgetvm.pruning.recovery import original_taps, prune_and_recover

    func, weights = import_named(small_net(seed=9, width=32))
    calib = [[x] for x in inputs(8, seed=10)]
    deps = analyze_channel_dependencies(func, weights)
    config = PruningConfig(ratio=0.5)
    evaluate = calibration_evaluator()
    x_orig = original_taps(func, weights, deps, evaluate, calib)
    for name, n in allocation_groups(deps, config).items():
        plan = plan_pruning(deps, weights, config, {}, x_orig, {name: n // 2})
        _, stepped, report = prune_and_recover(func, weights, plan, evaluate, calib, x_orig=x_orig)
        _, direct, _ = prune_and_recover(func, weights, plan, evaluate, calib, x_orig=x_orig, upstream_unchanged=True)
        assert report.refit
        for key in stepped:
            np.testing.assert_allclose(direct[key], stepped[key], rtol=1e-4, atol=1e-5)


def test_auto_options_and_bad_allocations():
    import pytest

    from edgetvm.errors import InputError
    from edgetvm.pruning.prune import pruning_config

    auto = pruning_config(0.2, calibrated=True)
    assert (auto.criterion, auto.allocation) == ("reconstruction", "sensitivity")
    plain = pruning_config(0.2)
    assert (plain.criterion, plain.allocation) == ("l1", "uniform")
    assert pruning_config({"*": 0.2}, calibrated=True).allocation == "uniform"
    with pytest.raises(InputError, match="allocation"):
        pruning_config(0.2, allocation="everywhere")
    model = small_net(seed=2)
    with pytest.raises(InputError, match="calibration"):
        prune_model(model, 0.3, allocation="sensitivity")
    with pytest.raises(InputError, match="one ratio"):
        prune_model(model, {"*": 0.3}, allocation="sensitivity", calibration=inputs(4))


def test_sensitivity_allocation_follows_each_groups_measured_cost_growth():
    # Same cost at the probe (25% removed); "early" doubles by 50% removed (p = 1: its error rises
    # early), "late" grows 8x (p = 3: cheap at small ratios). Quadratic growth would split evenly.
    sizes = {"early": 256, "late": 256}
    costs = {"early": [0.04, 0.08], "late": [0.04, 0.32]}
    even = sensitivity_allocation(sizes, {g: c[0] for g, c in costs.items()}, 0.25, 0.125)
    assert even["early"] == even["late"] == 224
    keep = sensitivity_allocation(sizes, costs, 0.25, 0.125, growth_probe=0.5)
    assert all(k % 4 == 0 for k in keep.values())
    assert sum(sizes[g] - k for g, k in keep.items()) == 64
    assert keep["late"] < keep["early"], keep  # below the probe, the cubic group is the cheaper one
    # the optimum of a_e r_e + a_l r_l^3 at a fixed total: marginal costs equal, r_l = sqrt(a_e / (3 a_l))
    a_e, a_l = 0.04 / 0.25, 0.04 / 0.25 ** 3
    r_late = (256 - keep["late"]) / 256
    assert abs(r_late - np.sqrt(a_e / (3 * a_l))) < 0.03, r_late
    # a single measured point (or no growth probe) keeps the quadratic model
    assert sensitivity_allocation(sizes, costs, 0.25, 0.125) == even


def test_reconstruction_ranks_the_channels_of_a_flatten_through_the_channel_map():
    # A dense layer after a flatten reads channels x positions; too many inputs to model one by one,
    # the greedy elimination models whole channels (what the channel-map recovery can predict): a
    # channel that duplicates another costs nothing to remove and goes first.
    from edgetvm.pruning.dependencies import analyze_channel_dependencies
    from edgetvm.pruning.selection import greedy_reconstruction
    from edgetvm.pruning.recovery import original_taps

    func, weights = import_named(flatten_net())
    deps = analyze_channel_dependencies(func, weights)
    dense = next(c for c in deps.consumers if c.kind == "dense")
    group = next(g for g in deps.prunable_groups() if dense.data in g.tensors)
    calib = [[x] for x in inputs(24, seed=5, shape=(1, 3, 8, 8))]
    acts = original_taps(func, weights, deps, calibration_evaluator(), calib)
    x = acts[dense.data].reshape(24, 32, 16).copy()
    x[:, 5] = 1.7 * x[:, 3]  # channel 5 carries nothing channel 3 does not
    acts[dense.data] = x.reshape(24, -1)
    notes = []
    drop = greedy_reconstruction(deps, weights, group, acts, 1, None, notes, max_inputs=64)
    assert drop is not None and not notes
    channel = [sorted({i // 16 for k, a, i in group.units[u] if k == dense.data}) for u in np.flatnonzero(drop)]
    assert channel in ([[3]], [[5]]), channel

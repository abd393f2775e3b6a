"""After removing channels: fold what was exact, refit what was lost (He et al. 2017).

A layer ``y = sum_c W[:, c] * x_c`` (conv2d or dense) that loses input channels R keeps
``y' = sum_{c not in R} W[:, c] * x_c + offset``.

* Lossless folding. A removed channel whose value does not depend on the input (a zero filter,
  a BN with gamma = 0 outputs beta everywhere, then the activation) contributes the fixed tensor
  ``k = sum_{c in R} W[:, c] * x_c``; ``offset = k`` makes ``y' = y`` exactly. ``k`` is per output
  channel when the layer has no padding that meets the removed channels' border values, else a full
  ``[C_out, H, W]`` map: both are exact.
* Least-squares recovery (He et al. 2017, "Channel Pruning for Accelerating Very Deep Neural
  Networks", Sec. 3.2): on calibration inputs, with ``X'`` the pruned model's input to the layer
  (im2col patches) and ``Y`` the original model's output of the layer,

      min_{W', b} ||Y - k - X' W' - 1 b||^2 + lambda ||W' - W_kept||^2

  solved in closed form (ridge towards the original weights, so a layer with fewer samples than
  unknowns stays put). Layers are refit in dataflow order, each seeing the already refit layers
  before it, so errors do not accumulate. ``offset = k + b``. The ridge strength ``lambda`` is chosen
  per layer by k-fold cross-validation over calibration inputs (``CV_ALPHAS``): with a few dozen
  faces, the last layers (7x7 positions, 1024 inputs) otherwise fit the calibration faces and not
  others (SFace, 20% of every group, 24 calibration faces: embedding cosine on held-out faces
  0.86 -> 0.90 from this alone).
* A dense layer after a flatten (features = channels x positions, SFace: 1024 x 49 -> 128) has
  far more weights than calibration samples; it is refit through a channel map shared by all
  positions instead (:func:`_refit_flattened`): ``C x K`` unknowns, ``N x positions`` samples.

Running a model is not this layer's business (passes sit below backends): the caller passes
``evaluate(func, weights, inputs) -> [[every output array] per input]``, where ``inputs`` is a list of
per-sample input lists and ``weights`` maps the function's weight parameters to arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import networkx as nx
import numpy as np
from tvm import relax

from ..kernels.im2col import im2col
from .apply import apply_pruning, apply_pruning_tapped, expose_tensors, offset_name
from .dependencies import Consumer, unit_is_constant
from .layers import flatten_block, layer_forward, leaf_of_view, view_of_leaf
from .plan import PruningPlan
from .weights import split_params

Evaluate = Callable[[relax.Function, dict, list], list]
FLATTEN_CHANNEL_MAP = True


@dataclass
class RecoveryReport:
    folded: dict[str, str] = field(default_factory=dict)  # consumer -> "per-channel" | "spatial"
    refit: dict[str, dict] = field(default_factory=dict)  # consumer -> {"rel_error_before", "rel_error_after"}
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"folded": self.folded, "refit": self.refit, "skipped": self.skipped}


def _offset_shape(consumer: Consumer, plan: PruningPlan, spatial: bool) -> tuple:
    shape = plan.new_shape(consumer.out)
    if consumer.kind == "dense":
        return (1, shape[1])
    return (1, shape[1], shape[2], shape[3]) if spatial else (1, shape[1], 1, 1)


def prune_and_recover(func: relax.Function, weights: dict, plan: PruningPlan, evaluate: Evaluate | None,
                      calibration: list | None, recover: bool = True, alpha=None,
                      positions_per_input: int = 256, seed: int = 0, x_orig: dict | None = None,
                      upstream_unchanged: bool = False):
    """Apply ``plan`` and fix up the layers that lost inputs; returns (func, weights, RecoveryReport).

    ``upstream_unchanged``: the caller knows nothing before the changed layers is pruned (one group
    alone), so their pruned inputs are the original ones minus the removed channels: no model run
    (unless one changed layer feeds another, as through a residual: then the refit steps as usual).
    """
    report = RecoveryReport()
    alpha = CV_ALPHAS if alpha is None else alpha
    deps = plan.deps
    consumers = plan.consumers_changed()
    shared = {c.leaf for c in deps.consumers if sum(d.leaf == c.leaf for d in deps.consumers) > 1}
    constant_removed = {}
    for c in consumers:
        mask = deps.constant_channels.get(c.data)
        removed = np.setdiff1d(np.arange(deps.tensors[c.data].shape[1]), plan.kept(c.data, 1))
        constant_removed[c.out] = removed[mask[removed]] if mask is not None else removed[:0]
    need_fold = any(len(v) for v in constant_removed.values())
    do_refit = recover and bool(calibration) and bool(consumers)
    if evaluate is None or not (need_fold or do_refit):
        if need_fold:
            report.skipped["*"] = "no evaluator: constant channels removed without folding"
        new_func, new_weights = apply_pruning(func, weights, plan)
        return new_func, new_weights, report

    inputs = _inputs(func, calibration)
    taps = sorted({c.data for c in consumers})
    missing = [t for t in taps if x_orig is None or t not in x_orig]
    if missing:
        x_orig = {**(x_orig or {}), **original_taps(func, weights, deps, evaluate, calibration, missing)}

    # Lossless folding: the removed input-independent channels' contribution, from any one input.
    offsets: dict[str, np.ndarray] = {}
    for c in consumers:
        kept_out = plan.kept(c.out, 1)
        removed = constant_removed[c.out]
        w_view = view_of_leaf(c, weights[c.leaf], deps.tensors[c.weight].shape)
        if len(removed):
            x = x_orig[c.data][:1][:, removed]
            w_rm = w_view[:, removed] if c.kind == "conv2d" else w_view[removed]
            k = layer_forward(c, x, w_rm)[0]
            k = k[kept_out]
            if c.kind == "conv2d":
                spread = np.abs(k - k.mean(axis=(1, 2), keepdims=True)).max()
                spatial = spread > 1e-6 * max(1.0, float(np.abs(k).max()))
                report.folded[c.out] = "spatial" if spatial else "per-channel"
                k = k[None] if spatial else k.mean(axis=(1, 2))[None, :, None, None]
            else:
                report.folded[c.out] = "per-channel"
                k = k[None]
            offsets[c.out] = k.astype(weights[c.leaf].dtype)
        elif do_refit:
            offsets[c.out] = np.zeros(_offset_shape(c, plan, False), dtype=weights[c.leaf].dtype)

    if not do_refit:
        new_func, new_weights = apply_pruning(func, weights, plan, offsets)
        return new_func, new_weights, report

    new_func, new_weights, tapped = apply_pruning_tapped(func, weights, plan, offsets, taps=taps)
    rng = np.random.default_rng(seed)

    def refit(c: Consumer, x_new: np.ndarray) -> None:
        if c.leaf in shared:
            report.skipped[c.out] = f"weight {c.leaf} is shared by several layers"
            return
        result = _refit_layer(c, plan, weights, new_weights, x_orig[c.data], x_new, offsets[c.out], alpha,
                              positions_per_input, rng)
        if isinstance(result, str):
            report.skipped[c.out] = result
            return
        w_leaf, offset, stats = result
        new_weights[c.leaf] = w_leaf
        new_weights[offset_name(c.out)] = offset
        report.refit[c.out] = stats

    stepper = getattr(evaluate, "stepper", None)
    if upstream_unchanged and len(_refit_batches(deps.dataflow, consumers)) == 1:
        for c in consumers:
            refit(c, x_orig[c.data][:, plan.kept(c.data, 1)])
    elif stepper is not None and stepper(new_func) is not None:
        # Layer by layer in dataflow order, each seeing the refit layers before it: one forward pass.
        run = stepper(new_func)(new_func, new_weights, inputs)
        order = sorted(consumers, key=lambda c: run.position.get(tapped[c.data], -1))
        for c in order:
            refit(c, np.concatenate(run.run_until(tapped[c.data])))
    else:
        for batch in _refit_batches(deps.dataflow, consumers):
            pruned = evaluate(new_func, new_weights, inputs)
            x_new = {key: np.concatenate([row[len(row) - len(taps) + i] for row in pruned])
                     for i, key in enumerate(taps)}
            for c in batch:
                refit(c, x_new[c.data])
    # The tapped function was only for calibration: rebuild the plain one with the refit weights.
    final_func, _ = apply_pruning(func, weights, plan, {k: new_weights[offset_name(k)] for k in offsets})
    return final_func, new_weights, report


def _inputs(func: relax.Function, calibration: list | None) -> list:
    if calibration:
        return list(calibration)
    # Input-independent channels have the same value for any input: zeros will do.
    return [[np.zeros([int(d) for d in p.ty.shape], dtype=str(p.ty.dtype)) for p in split_params(func)[0]]]


def original_taps(func: relax.Function, weights: dict, deps, evaluate: Evaluate, calibration: list | None,
                  taps: list[str] | None = None) -> dict[str, np.ndarray]:
    """The unpruned model's input to every conv2d/dense layer, stacked over the calibration inputs."""
    if taps is None:
        taps = sorted({c.data for c in deps.consumers if deps.tensors[c.data].kind != "input"})
    tapped = expose_tensors(func, deps, taps)
    rows = evaluate(tapped, weights, _inputs(func, calibration))
    return {key: np.concatenate([row[len(row) - len(taps) + i] for row in rows]) for i, key in enumerate(taps)}


def lossless_units(deps, weights: dict, x_orig: dict | None, allow_spatial: bool) -> dict[str, np.ndarray]:
    """Per group, the units removable without changing the output.

    A unit qualifies when every channel of it that a conv2d/dense layer reads is input-independent
    (by the analysis), and, unless ``allow_spatial``, its contribution to each such layer is the same
    at every output position, so it folds into a per-channel bias. (A constant channel through a
    zero-padded depthwise conv is not spatially constant: folding it needs a full offset map.)
    """
    result = {}
    if x_orig is None:
        return result
    consumers_of: dict[str, list[Consumer]] = {}
    for c in deps.consumers:
        consumers_of.setdefault(c.data, []).append(c)
    views = {}
    for group in deps.prunable_groups():
        mask = np.zeros(len(group.units), bool)
        for u, unit in enumerate(group.units):
            if not unit_is_constant(deps, unit, set(consumers_of)):
                continue
            ok = True
            for key in {k for k, a, _ in unit if a == 1 and k in consumers_of}:
                idx = sorted(i for k, a, i in unit if k == key and a == 1)
                for c in consumers_of[key]:
                    if c.kind == "dense" or allow_spatial:
                        continue
                    if c.weight not in views:
                        views[c.weight] = view_of_leaf(c, weights[c.leaf], deps.tensors[c.weight].shape)
                    k = layer_forward(c, x_orig[key][:1][:, idx], views[c.weight][:, idx])[0]
                    spread = np.abs(k - k.mean(axis=(1, 2), keepdims=True)).max()
                    ok &= bool(spread <= 1e-6 * max(1.0, float(np.abs(k).max())))
            mask[u] = ok
        result[group.name] = mask
    return result


def _refit_batches(dataflow: nx.DiGraph, consumers: list[Consumer]) -> list[list[Consumer]]:
    """Consecutive layers none of which feeds another: they can be refit from one calibration run."""
    batches: list[list[Consumer]] = []
    for c in consumers:
        if batches and not any(
                b.out in dataflow and c.data in dataflow and nx.has_path(dataflow, b.out, c.data) for b in batches[-1]):
            batches[-1].append(c)
        else:
            batches.append([c])
    return batches


def _refit_layer(c: Consumer, plan: PruningPlan, weights: dict, new_weights: dict, x_orig: np.ndarray,
                 x_new: np.ndarray, offset_const: np.ndarray, alpha, positions: int, rng):
    deps = plan.deps
    alphas = tuple(alpha) if isinstance(alpha, (tuple, list)) else (float(alpha),)
    kept_out = plan.kept(c.out, 1)
    w_view = view_of_leaf(c, weights[c.leaf], deps.tensors[c.weight].shape)
    w_kept_view = view_of_leaf(c, new_weights[c.leaf], plan.new_shape(c.weight))
    if c.kind == "conv2d":
        # Only the sampled positions, in float64: patches stay in the activations' dtype until then
        # (the first layers' full float64 patches and outputs for a few hundred inputs take gigabytes).
        a = c.attrs
        n = x_new.shape[0]
        ho, wo = plan.new_shape(c.out)[2:]
        take = min(positions, ho * wo)
        idx = np.stack([rng.choice(ho * wo, size=take, replace=False) for _ in range(n)])

        def sampled_patches(x):
            cols = im2col(x, w_view.shape[2:], a["strides"], a["padding"], a["dilation"]).reshape(n, ho * wo, -1)
            return np.take_along_axis(cols, idx[..., None], axis=1).reshape(-1, cols.shape[-1]).astype(np.float64)

        a_mat = sampled_patches(x_new)
        d = a_mat.shape[1]
        w_flat = w_view.reshape(w_view.shape[0], -1)[kept_out].astype(np.float64)
        target = sampled_patches(x_orig) @ w_flat.T
        k = np.broadcast_to(offset_const, (1, len(kept_out), ho, wo)).transpose(0, 2, 3, 1).reshape(ho * wo, -1)
        target = target - k[idx.reshape(-1)]
        theta0 = w_kept_view.reshape(w_kept_view.shape[0], -1).T.astype(np.float64)  # [d, O]
    else:
        block = flatten_block(plan.deps, c)
        if block > 1 and FLATTEN_CHANNEL_MAP:
            return _refit_flattened(c, plan, weights, new_weights, x_orig, x_new, offset_const, block, alphas)
        a_mat = x_new.astype(np.float64)
        target = layer_forward(c, x_orig, w_view)[:, kept_out] - offset_const.reshape(1, -1)
        d = a_mat.shape[1]
        theta0 = w_kept_view.astype(np.float64)  # [F, O]
    a_mean, t_mean = a_mat.mean(axis=0), target.mean(axis=0)
    a_c, t_c = a_mat - a_mean, target - t_mean
    before = target - a_mat @ theta0
    rows_per_image = a_mat.shape[0] // max(len(x_new), 1)
    image = np.arange(a_mat.shape[0]) // max(rows_per_image, 1)
    if d > 4096 and a_mat.shape[0] > 4096:
        rows = rng.choice(a_mat.shape[0], size=4096, replace=False)
        a_c, t_c, image = a_c[rows], t_c[rows], image[rows]
    try:
        if d <= 4096:
            # Primal: (A^T A + lambda I) W = A^T T + lambda W_kept on centred data; the bias takes the means.
            w_new, chosen = ridge_primal(a_c, t_c, theta0, image, alphas)
        else:
            # Dual (more inputs than samples, e.g. a dense layer after a flatten):
            # W = W_kept + A^T (A A^T + lambda I)^-1 (T - A W_kept), the smallest change that fits.
            w_new, chosen = ridge_dual(a_c, t_c, theta0, image, alphas)
    except np.linalg.LinAlgError:
        return "least-squares system is singular"
    bias = t_mean - a_mean @ w_new
    after = target - a_mat @ w_new - bias
    scale = float(np.linalg.norm(target)) or 1.0
    dtype = weights[c.leaf].dtype
    if c.kind == "conv2d":
        w_new_view = w_new.T.reshape(w_kept_view.shape)
        offset = offset_const.astype(np.float64) + bias.reshape(1, -1, 1, 1)
    else:
        w_new_view = w_new
        offset = offset_const.astype(np.float64) + bias.reshape(1, -1)
    w_leaf = leaf_of_view(c, w_new_view, new_weights[c.leaf].shape).astype(dtype)
    stats = {"rel_error_before": float(np.linalg.norm(before)) / scale,
             "rel_error_after": float(np.linalg.norm(after)) / scale, "samples": int(a_mat.shape[0]),
             "alpha": chosen}
    return w_leaf, offset.astype(dtype), stats


def _refit_flattened(c: Consumer, plan: PruningPlan, weights: dict, new_weights: dict, x_orig: np.ndarray,
                     x_new: np.ndarray, offset_const: np.ndarray, block: int, alphas):
    """Recovery of a dense layer after a flatten, through a channel map shared by all positions.

    Fitting the dense weights ``[K*B, O]`` directly needs more samples than calibration gives
    (SFace: 50176 features, a few dozen images) and overfits. Instead the original features are
    predicted from the pruned ones channel-wise, with one map ``A [K, C]`` for all ``B`` positions
    (N*B samples for K unknowns per channel; a 1x1 conv in effect) and a bias per position:

        min_A sum_{n,p} ||x_orig[n, :, p] - mean_p - (x_new[n, :, p] - mean'_p) A||^2 + lambda ||A - S||^2

    (``S`` selects the kept channels: with no data, the plain slice), then the layer reads the
    prediction: ``W'[(k, p), o] = sum_c A[k, c] W[(c, p), o]``, offset ``+= sum_{c,p} b[c, p] W[(c, p), o]``.
    """
    deps = plan.deps
    kept_in_f, kept_out = plan.kept(c.data, 1), plan.kept(c.out, 1)
    kept_ch = kept_in_f[::block] // block
    w_view = view_of_leaf(c, weights[c.leaf], deps.tensors[c.weight].shape).astype(np.float64)[:, kept_out]  # [F, O]
    n, f = x_orig.shape
    channels = f // block
    xo = x_orig.astype(np.float64).reshape(n, channels, block)
    xn = x_new.astype(np.float64).reshape(n, len(kept_ch), block)
    mo, mn = xo.mean(axis=0), xn.mean(axis=0)  # [C, B], [K, B]: the per-position means
    a_c = (xn - mn).transpose(0, 2, 1).reshape(n * block, -1)  # [N*B, K]
    t_c = (xo - mo).transpose(0, 2, 1).reshape(n * block, -1)  # [N*B, C]
    select = np.zeros((len(kept_ch), channels))
    select[np.arange(len(kept_ch)), kept_ch] = 1.0
    try:
        a_map, chosen = ridge_primal(a_c, t_c, select.copy(), np.arange(n * block) // block, alphas)  # [K, C]
    except np.linalg.LinAlgError:
        return "least-squares system is singular"
    bias = mo - a_map.T @ mn  # [C, B]
    w_cbo = w_view.reshape(channels, block, -1)
    w_new = np.einsum("kc,cbo->kbo", a_map, w_cbo).reshape(len(kept_ch) * block, -1)
    b_out = np.einsum("cb,cbo->o", bias, w_cbo)
    y = x_orig.astype(np.float64) @ w_view
    target = y - offset_const.reshape(1, -1)
    before = target - x_new.astype(np.float64) @ w_view[kept_in_f]
    after = target - x_new.astype(np.float64) @ w_new - b_out
    scale = float(np.linalg.norm(target)) or 1.0
    dtype = weights[c.leaf].dtype
    offset = offset_const.astype(np.float64) + b_out.reshape(1, -1)
    w_leaf = leaf_of_view(c, w_new, new_weights[c.leaf].shape).astype(dtype)
    stats = {"rel_error_before": float(np.linalg.norm(before)) / scale,
             "rel_error_after": float(np.linalg.norm(after)) / scale, "samples": int(a_c.shape[0]),
             "method": f"channel map shared by {block} positions", "alpha": chosen}
    return w_leaf, offset.astype(dtype), stats


# Ridge strengths tried by cross-validation, relative to the mean eigenvalue (trace / size) of the
# Gram matrix; inf keeps the original weights (only the bias is refit).
CV_ALPHAS = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, float("inf"))


def _folds(image: np.ndarray, k: int = 4) -> list[np.ndarray]:
    """Held-out masks splitting the samples by calibration input (positions of one image stay together)."""
    ids = np.unique(image)
    if len(ids) < 2 * k:
        k = len(ids) // 2
    if k < 2:
        return []
    return [np.isin(image, ids[f::k]) for f in range(k)]


def ridge_primal(a: np.ndarray, t: np.ndarray, theta0: np.ndarray, image: np.ndarray, alphas):
    """``argmin_W ||T - A W||^2 + lambda ||W - W0||^2``, ``lambda = alpha * tr(A^T A) / d``.

    With several ``alphas``, the one with the least error on held-out calibration inputs (k-fold by
    input: the refit must hold on faces it has not seen, not just on the calibration positions).
    Solved through one eigendecomposition per fold: ``W = V (E + lambda)^-1 V^T (A^T T + lambda W0)``.
    """
    d = a.shape[1]

    def solver(gram, rhs):
        e, v = np.linalg.eigh(gram)
        e = np.maximum(e, 0.0)
        scale = float(e.sum()) / max(d, 1) + 1e-12
        vb, vw = v.T @ rhs, v.T @ theta0

        def solve(alpha):
            if not np.isfinite(alpha):
                return theta0
            lam = alpha * scale
            return v @ ((vb + lam * vw) / (e + lam)[:, None])
        return solve

    gram, rhs = a.T @ a, a.T @ t
    best = alphas[0]
    if len(alphas) > 1:
        errors = np.zeros(len(alphas))
        for held in _folds(image):
            a_te, t_te = a[held], t[held]
            solve = solver(gram - a_te.T @ a_te, rhs - a_te.T @ t_te)
            for i, alpha in enumerate(alphas):
                errors[i] += float(((t_te - a_te @ solve(alpha)) ** 2).sum())
        best = alphas[int(np.argmin(errors))]
    if len(alphas) == 1 and np.isfinite(best):
        lam = best * float(np.trace(gram)) / max(d, 1) + 1e-12
        return np.linalg.solve(gram + lam * np.eye(d), rhs + lam * theta0), float(best)
    return solver(gram, rhs)(best), float(best)


def ridge_dual(a: np.ndarray, t: np.ndarray, theta0: np.ndarray, image: np.ndarray, alphas, default: float = 0.1):
    """The same ridge with more unknowns than samples: ``W = W0 + A^T (A A^T + lambda I)^-1 (T - A W0)``,
    ``lambda = alpha * tr(A A^T) / n``; ``alphas`` chosen by k-fold cross-validation over inputs as in
    :func:`ridge_primal` (a single given value: the historical 0.1 of the dual form is used)."""
    resid = t - a @ theta0
    kernel = a @ a.T

    def fit(rows_tr, alpha):
        k = kernel[np.ix_(rows_tr, rows_tr)]
        lam = alpha * float(np.trace(k)) / max(len(rows_tr), 1) + 1e-12
        return np.linalg.solve(k + lam * np.eye(len(rows_tr)), resid[rows_tr])

    best = default
    if len(alphas) > 1:
        errors = np.zeros(len(alphas))
        everything = np.arange(a.shape[0])
        for held in _folds(image):
            tr, te = everything[~held], everything[held]
            for i, alpha in enumerate(alphas):
                pred = 0.0 if not np.isfinite(alpha) else kernel[np.ix_(te, tr)] @ fit(tr, alpha)
                errors[i] += float(((resid[te] - pred) ** 2).sum())
        best = alphas[int(np.argmin(errors))]
    if not np.isfinite(best):
        return theta0, float(best)
    return theta0 + a.T @ fit(np.arange(a.shape[0]), best), float(best)

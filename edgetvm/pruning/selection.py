"""Which units each prunable group loses (step 3 of :mod:`.rewrite`): rank, then pick.

Criteria: ``l1``: ``s_c = sum_p ||W_p[c]||_1 / mean_c' ||W_p[c']||_1`` over the group's producers p
(Li et al. 2017, "Pruning Filters for Efficient ConvNets"); ``bn_gamma``: ``s_c = sum_bn |gamma_bn[c]|``
(Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming");
``activation``: on calibration inputs, the share of each next layer's output energy the channel
carries beyond its mean (the mean is refit into the bias),
``s_c = sum_layers Var(x_c) ||W[:, c]||^2 / sum_c' Var(x_c') ||W[:, c']||^2``
(a first-order estimate of the reconstruction error He et al. 2017 minimise); ``reconstruction``:
greedy backward elimination on calibration inputs, removing each time the unit whose loss raises the
least-squares reconstruction error of the next layers least (exact for linear regression:
``dRSS_J = tr(B_J^T (G^-1)_JJ^-1 B_J)``; ThiNet, Luo et al. 2017; He et al. 2017; a dense layer after
a flatten is modelled on whole channels, see :func:`_flattened_regression`); or user masks.
Input-independent units rank first: removing them is lossless once folded (:mod:`.recovery`).

How many each group keeps: :func:`keep_count` of its own ratio, or of all channels ranked together
(``allocation="global"``, :func:`_global_allocation`), or counts given by the caller
(``"sensitivity"``, :mod:`.sensitivity`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..kernels.im2col import im2col
from .dependencies import ChannelDependencies, DependencyGroup, unit_is_constant
from .layers import flatten_block, view_of_leaf
from .plan import ALLOCATIONS, CRITERIA, PruningConfig, PruningPlan


def _axis_norm(value: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)).sum(axis=1)


def _activation_energy(deps: ChannelDependencies, weights: dict, activations: dict) -> dict[str, np.ndarray]:
    """Per consumer input tensor: each channel's share of the consumers' output energy."""
    energy: dict[str, np.ndarray] = {}
    for c in deps.consumers:
        x = activations.get(c.data)
        if x is None:
            continue
        var = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 0, 2).reshape(x.shape[1], -1).var(axis=1)
        w = view_of_leaf(c, weights[c.leaf], deps.tensors[c.weight].shape)
        in_axis = 1 if c.kind == "conv2d" else 0
        wnorm = (np.moveaxis(w, in_axis, 0).reshape(w.shape[in_axis], -1) ** 2).sum(axis=1)
        e = var * wnorm
        e = e / (e.sum() or 1.0)
        energy[c.data] = energy.get(c.data, 0) + e
    return energy


def _regression(deps: ChannelDependencies, weights: dict, consumer, x: np.ndarray, rows: int = 16384, seed: int = 0):
    """The consumer as a linear regression on calibration inputs: (centred Gram G, coefficients B [d, O])."""
    w = view_of_leaf(consumer, weights[consumer.leaf], deps.tensors[consumer.weight].shape).astype(np.float64)
    if consumer.kind == "conv2d":
        a = consumer.attrs
        cols = im2col(x, w.shape[2:], a["strides"], a["padding"], a["dilation"])
        samples = cols.reshape(-1, cols.shape[-1])
        coef = w.reshape(w.shape[0], -1).T
        block = w.shape[2] * w.shape[3]
    else:
        samples, coef, block = x.reshape(x.shape[0], -1), w, 1
    if samples.shape[0] > rows:
        samples = samples[np.random.default_rng(seed).choice(samples.shape[0], rows, replace=False)]
    samples = samples.astype(np.float64)  # once subsampled: the full patches stay in the activations' dtype
    samples = samples - samples.mean(axis=0)
    gram = samples.T @ samples
    gram += (1e-3 * float(np.trace(gram)) / max(gram.shape[0], 1) + 1e-12) * np.eye(gram.shape[0])
    return gram, coef, block


def _flattened_regression(deps: ChannelDependencies, weights: dict, consumer, x: np.ndarray, positions: int):
    """A dense layer after a flatten as a regression on channels: (centred channel Gram G, coefficients).

    Recovery predicts the removed channels from the kept ones with one map shared by all positions
    (:mod:`.recovery`, a dense layer after a flatten), so what a lost channel costs is the part of it the kept
    channels cannot predict, weighted by how much the layer reads it:
    ``G = sum_{n,p} x~[n, :, p]^T x~[n, :, p]`` (``x~`` centred per channel and position) and
    coefficients ``diag(s)``, ``s_c^2 = sum_{p,o} W[(c, p), o]^2``. The greedy elimination then keeps
    the channels that reconstruct the others best (channels of a 7x7 map: 1024 unknowns, not 50176).
    """
    w = view_of_leaf(consumer, weights[consumer.leaf], deps.tensors[consumer.weight].shape).astype(np.float64)
    n, f = x.shape[0], int(np.prod(x.shape[1:]))
    channels = f // positions
    xs = x.reshape(n, channels, positions).astype(np.float64)
    xs = (xs - xs.mean(axis=0)).transpose(0, 2, 1).reshape(-1, channels)
    gram = xs.T @ xs
    gram += (1e-3 * float(np.trace(gram)) / max(channels, 1) + 1e-12) * np.eye(channels)
    scale = np.sqrt((w.reshape(channels, positions, -1) ** 2).sum(axis=(1, 2)))
    return gram, np.diag(scale)


def greedy_reconstruction(deps, weights, group, activations, n_remove: int, constant, notes, max_inputs: int = 4096):
    """Units to drop by greedy backward elimination; None if a next layer is too wide to model."""
    models = []
    for c in deps.consumers:
        if c.data not in group.tensors or activations is None or c.data not in activations:
            continue
        d = int(np.prod(deps.tensors[c.weight].shape)) // deps.tensors[c.weight].shape[0 if c.kind == "conv2d" else 1]
        positions = flatten_block(deps, c) if c.kind == "dense" and d > max_inputs else 1
        if d > max_inputs and (positions == 1 or d // positions > max_inputs):
            notes.append(f"group {group.name}: layer {c.out} reads {d} inputs, too many to model; ranked by activation")
            return None
        if positions > 1:
            gram, coef = _flattened_regression(deps, weights, c, activations[c.data], positions)
            index = [np.unique([i // positions for k, a, i in unit if k == c.data and a == 1]).astype(int)
                     for unit in group.units]
        else:
            gram, coef, block = _regression(deps, weights, c, activations[c.data])
            index = [np.concatenate([np.arange(i * block, (i + 1) * block) for k, a, i in sorted(unit)
                                     if k == c.data and a == 1] or [np.zeros(0, int)]) for unit in group.units]
        ginv = np.linalg.inv(gram)
        total = float(np.trace(coef.T @ gram @ coef)) or 1.0
        models.append([ginv, coef, index, total])
    if not models:
        return None
    n = len(group.units)
    drop = np.zeros(n, dtype=bool)
    if constant is not None:
        free = np.flatnonzero(constant)[:n_remove]
        drop[free] = True  # input-independent units first: their loss is folded exactly
    for _ in range(n_remove - int(drop.sum())):
        cost = np.zeros(n)
        alive = np.flatnonzero(~drop)
        for ginv, coef, index, total in models:
            lengths = {len(index[u]) for u in alive}
            if len(lengths) == 1 and 0 not in lengths:
                # every candidate is a block of the same size: one batched solve
                js = np.stack([index[u] for u in alive])
                g_jj = ginv[js[:, :, None], js[:, None, :]]
                b_j = coef[js]
                cost[alive] += np.einsum("ulo,ulo->u", b_j, np.linalg.solve(g_jj, b_j)) / total
                continue
            for u in alive:
                j = index[u]
                if len(j):
                    cost[u] += float(np.trace(coef[j].T @ np.linalg.solve(ginv[np.ix_(j, j)], coef[j]))) / total
        cost[drop] = np.inf
        u = int(np.argmin(cost))
        drop[u] = True
        for model in models:
            ginv, coef, index, _ = model
            j = index[u]
            if len(j):
                solve = np.linalg.solve(ginv[np.ix_(j, j)], np.eye(len(j)))
                model[1] = coef - ginv[:, j] @ solve @ coef[j]
                model[0] = ginv - ginv[:, j] @ solve @ ginv[j, :]
                model[1][j] = 0.0
                model[0][j, :] = 0.0
                model[0][:, j] = 0.0
                model[0][j, j] = 1.0  # a removed input: kept out of every later cost
    return drop


def _scores(deps: ChannelDependencies, weights: dict, group: DependencyGroup, criterion: str, notes: list,
            energy: dict | None = None) -> np.ndarray:
    values = {}

    def value_of(key):
        if key not in values:
            info = deps.tensors[key]
            if info.kind == "weight":
                values[key] = weights[key]
            else:
                src, op, attrs = info.source
                v = value_of(src)
                values[key] = np.transpose(v, attrs) if op == "relax.permute_dims" else \
                    (v if op == "relax.astype" else v.reshape(info.shape))
        return values[key]

    per_unit = np.zeros(len(group.units))
    sources = []
    if criterion == "activation":
        read = [k for k in group.tensors if energy and k in energy]
        if read:
            for u, unit in enumerate(group.units):
                per_unit[u] = sum(energy[k][i] for k, a, i in unit if a == 1 and k in read)
            return per_unit
        notes.append(f"group {group.name}: no calibrated layer reads it; ranked by l1")
    if criterion == "bn_gamma":
        gammas = [(g, 0) for out, g in deps.batch_norms if out in group.tensors]
        if gammas:
            sources = [(key, axis, np.abs(value_of(key))) for key, axis in gammas]
        else:
            notes.append(f"group {group.name}: no batch_norm left to read gamma from (already folded?); ranked by l1")
    if not sources:
        sources = [(p.weight, p.axis, _axis_norm(value_of(p.weight), p.axis)) for p in group.producers]
    for key, axis, norms in sources:
        scale = float(np.mean(norms)) or 1.0
        for u, unit in enumerate(group.units):
            per_unit[u] += sum(norms[i] for k, a, i in unit if k == key and a == axis) / scale
    return per_unit


def keep_count(n: int, ratio: float, n_constant: int, round_to: int, lossless: bool) -> int:
    """Units a group keeps: ``n * (1 - ratio)`` in whole lanes of ``round_to``; never zero.

    Input-independent units are removed whatever the ratio (they cost nothing once folded), in
    whole lanes too, so a lossless-only run (ratio 0) keeps a lane-aligned count as well.
    """
    free = (n_constant // round_to) * round_to if lossless else 0
    keep = n - free if ratio <= 0 else min(int(round(n * (1.0 - ratio) / round_to)) * round_to, n - free)
    return min(n, max(keep, min(round_to, n), 1))


def plan_pruning(deps: ChannelDependencies, weights: dict, config: PruningConfig,
                 lossless: dict[str, np.ndarray] | None = None, activations: dict | None = None,
                 keep_counts: dict[str, int] | None = None) -> PruningPlan:
    """Pick the units to remove in every prunable group.

    ``lossless[group name]`` marks the units whose removal can be folded exactly (see
    :func:`.recovery.lossless_units`); without it, the analysis alone decides (input-independent
    channels), which is exact only if the caller folds their contributions.
    """
    if config.criterion not in CRITERIA and config.masks is None:
        raise InputError(f"prune criterion={config.criterion!r} (--prune-criterion, `edgetvm prune --criterion`): use one of {list(CRITERIA)} or give masks")
    if config.allocation not in ALLOCATIONS:
        raise InputError(f"prune allocation={config.allocation!r} (--allocation): use one of {list(ALLOCATIONS)}")
    plan = PruningPlan(deps)
    data_driven = config.criterion in ("activation", "reconstruction")
    if data_driven and config.masks is None and not activations:
        raise InputError(f"prune criterion={config.criterion!r} ranks channels on calibration inputs: give calibration= "
                         f"(--prune-calib DIR; `edgetvm prune`: --calib DIR)")
    energy = _activation_energy(deps, weights, activations) if data_driven and activations else None
    masks = dict(config.masks or {})
    used_masks = set()
    consumer_inputs = {c.data for c in deps.consumers}
    global_keep = keep_counts
    if global_keep is None and config.allocation == "global":
        global_keep = _global_allocation(deps, weights, config, lossless, energy, masks, plan.notes)
    for group in deps.groups:
        if not group.producers:
            continue
        n = len(group.units)
        if lossless is not None:
            constant = np.asarray(lossless.get(group.name, np.zeros(len(group.units), bool)), dtype=bool)
        else:
            constant = np.array([unit_is_constant(deps, u, consumer_inputs) for u in group.units], dtype=bool)
        entry = {"group": group.name, "channels": n, "kept": n, "constant": int(constant.sum()),
                 "tensors": group.tensors}
        plan.report.append(entry)
        if not group.prunable:
            entry["blocked"] = group.blocked
            continue
        layers = {p.layer: p for p in group.producers}
        group_masks = {layer: m for layer, m in masks.items() if layer in layers}
        if group_masks:
            drop = np.zeros(n, dtype=bool)
            for layer, mask in group_masks.items():
                used_masks.add(layer)
                producer = layers[layer]
                mask = np.asarray(mask).astype(bool).reshape(-1)
                size = deps.tensors[producer.weight].shape[producer.axis]
                if mask.size != size:
                    raise InputError(f"prune mask for {layer!r} has {mask.size} entries; the layer has {size} "
                                     f"output channels")
                for u, unit in enumerate(group.units):
                    if any(not mask[i] for k, a, i in unit if k == producer.weight and a == producer.axis):
                        drop[u] = True
            if drop.all():
                raise InputError(f"prune masks for {sorted(group_masks)} remove every channel of group "
                                 f"{group.name}; keep at least one")
            entry["criterion"] = "masks"
        else:
            ratio = config.ratio_for(group)
            if not 0.0 <= ratio < 1.0:
                raise InputError(f"prune ratio {ratio} for group {group.name} (--prune, --ratio, --layer-ratio): give a fraction in [0, 1)")
            if n < 2 * config.round_to and not constant.any():
                continue
            keep = keep_count(n, ratio, int(constant.sum()), config.round_to, config.lossless) \
                if global_keep is None else global_keep.get(group.name, n)
            if keep >= n:
                continue
            drop = None
            if config.criterion == "reconstruction":
                drop = greedy_reconstruction(deps, weights, group, activations, n - keep,
                                              constant if config.lossless else None, plan.notes)
            if drop is None:
                criterion = "activation" if config.criterion == "reconstruction" else config.criterion
                scores = _scores(deps, weights, group, criterion, plan.notes, energy)
                if config.lossless:
                    scores = np.where(constant, -np.inf, scores)
                order = np.argsort(scores, kind="stable")
                drop = np.zeros(n, dtype=bool)
                drop[order[: n - keep]] = True
            entry["criterion"] = config.criterion
        for u in np.flatnonzero(drop):
            plan.removed |= group.units[u]
        entry["kept"] = int(n - drop.sum())
        entry["removed_constant"] = int((drop & constant).sum())
    unused = set(masks) - used_masks
    if unused:
        known = sorted({p.layer for g in deps.prunable_groups() for p in g.producers})
        raise InputError(f"prune masks name layers {sorted(unused)} that are not prunable here; prunable layers: "
                         f"{known[:20]}{' ...' if len(known) > 20 else ''}")
    return plan


def _global_allocation(deps, weights, config: PruningConfig, lossless, energy, masks, notes) -> dict[str, int]:
    """How many units each group keeps when ``ratio`` is a fraction of all channels, ranked together.

    Scores are made comparable across groups by dividing by the group's mean score (1 = a typical
    channel of its layer); the lowest go first, at most ``max_group_ratio`` of any group, then each
    group's count is rounded to whole lanes.
    """
    if isinstance(config.ratio, dict):
        raise InputError("prune allocation='global' (--allocation global) takes one ratio, not per-layer ratios (--layer-ratio)")
    pool, sizes = [], {}
    for group in deps.prunable_groups():
        n = len(group.units)
        if not group.producers or n < 2 * config.round_to or any(p.layer in masks for p in group.producers):
            continue
        sizes[group.name] = n
        scores = _scores(deps, weights, group, config.criterion, notes, energy)
        scores = scores / (float(np.mean(scores)) or 1.0)
        constant = lossless.get(group.name) if lossless else None
        if config.lossless and constant is not None:
            scores = np.where(constant, -np.inf, scores)
        pool += [(float(v), group.name) for v in scores]
    target = int(round(float(config.ratio) * sum(sizes.values())))
    removed = dict.fromkeys(sizes, 0)
    for _, name in sorted(pool, key=lambda t: t[0]):
        if target <= 0:
            break
        if removed[name] < int(sizes[name] * config.max_group_ratio):
            removed[name] += 1
            target -= 1
    keep = {}
    for name, n in sizes.items():
        k = int(round((n - removed[name]) / config.round_to)) * config.round_to
        keep[name] = min(n, max(k, config.round_to))
    return keep

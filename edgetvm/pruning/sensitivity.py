"""Sensitivity allocation (``allocation="sensitivity"``): a global ratio spread over the groups by
what removing their channels costs, measured.

Each group is pruned alone by ``sensitivity_probe`` and by ``sensitivity_growth_probe`` and recovered
(:func:`measure_sensitivity`); its output error on held-out calibration inputs, fit by ``a_g r^p_g``
through both, gives the counts that minimise ``sum_g a_g r_g^p_g`` at the global count, in whole lanes
(:func:`sensitivity_allocation`).
"""

from __future__ import annotations

import heapq

import numpy as np
from tvm import relax

from ..errors import InputError
from .dependencies import ChannelDependencies
from .plan import PruningConfig
from .recovery import Evaluate, prune_and_recover
from .selection import keep_count, plan_pruning


def sensitivity_keep_counts(func: relax.Function, weights: dict, deps: ChannelDependencies, config: PruningConfig,
                            evaluate: Evaluate | None, calibration: list | None, x_orig: dict | None, alpha):
    """Kept units per group for ``config.ratio`` spread by measured cost, and the costs
    (``{group: [cost at the probe, cost at the growth probe]}``; those in ``config.sensitivity`` are not
    measured again)."""
    if isinstance(config.ratio, dict):
        raise InputError("prune allocation='sensitivity' (--allocation sensitivity) takes one ratio, not per-layer ratios "
                         "(--layer-ratio)")
    sizes = allocation_groups(deps, config)
    probe, growth = config.sensitivity_probe, config.sensitivity_growth_probe
    probes = [probe] if growth is None or growth == probe else [probe, growth]
    sensitivity = {name: list(c) if isinstance(c, (list, tuple)) else [c]
                   for name, c in (config.sensitivity or {}).items()}
    missing = {name: n for name, n in sizes.items() if len(sensitivity.get(name, [])) < len(probes)}
    if missing and (evaluate is None or not calibration or len(calibration) < 2):
        raise InputError("prune allocation='sensitivity' measures each layer group's cost on calibration inputs: give "
                         "at least 2 calibration samples (--prune-calib DIR; `edgetvm prune`: --calib DIR)")
    for i, r in enumerate(probes):
        need = {name: n for name, n in missing.items() if len(sensitivity.get(name, [])) <= i}
        if need:
            measured = measure_sensitivity(func, weights, deps, config, need, r, evaluate, calibration, x_orig, alpha)
            for name, cost in measured.items():
                sensitivity[name] = sensitivity.get(name, [])[:i] + [cost]
    keep_counts = sensitivity_allocation(sizes, sensitivity, probe, float(config.ratio), config.round_to,
                                         config.max_group_ratio, growth)
    return keep_counts, sensitivity


def allocation_groups(deps: ChannelDependencies, config: PruningConfig) -> dict[str, int]:
    """The groups a global ratio spreads over, and their sizes: prunable, with producers, no user
    masks, at least two lanes wide. The global ratio is the fraction of their channels removed."""
    masks = set(config.masks or {})
    return {g.name: len(g.units) for g in deps.prunable_groups()
            if g.producers and len(g.units) >= 2 * config.round_to and not any(p.layer in masks for p in g.producers)}


def sensitivity_allocation(sizes: dict[str, int], costs: dict, probe_ratio: float, ratio: float,
                           round_to: int = 4, max_group_ratio: float = 0.75,
                           growth_probe: float | None = None) -> dict[str, int]:
    """Kept units per group minimising the summed cost at a global ratio.

    Pruning group g alone by ``probe_ratio`` (with recovery) cost ``costs[g]`` (output error on
    held-out calibration inputs). Costs of separately pruned groups add up closely (measured on
    SFace: the sum of single-group costs is within 5% of the joint cost) and grow as a power of the
    fraction removed, ``cost_g(r) = a_g r^p_g``; with ``r_g = removed_g / n_g`` the allocation solves

        min sum_g a_g r_g^p_g   s.t.   sum_g removed_g = ratio * sum_g n_g

    greedily in whole lanes of ``round_to`` (exact for convex separable costs): each step removes
    one more lane from the group whose cost rises least, at most ``max_group_ratio`` of a group and
    never its last lane. The result keeps ``round_to`` multiples, like uniform pruning.

    ``costs[g]`` a number: quadratic growth, ``p = 2``, ``a_g = cost_g / probe_ratio^2``. ``costs[g]`` a pair
    (cost at ``probe_ratio``, cost at ``growth_probe``): ``p_g = log(c2 / c1) / log(r2 / r1)`` (kept in
    [1, 3]: convex, and no steeper than cubic), the curve through both. Groups differ (SFace: p from
    1.4 for the middle 512-channel blocks, whose error rises early, to 2.1 for the last one).
    """

    def first(c):
        return float(c[0]) if isinstance(c, (list, tuple)) else float(c)

    target = int(round(ratio * sum(sizes.values())))
    floor = 1e-12 * max([first(c) for c in costs.values() if first(c) > 0] or [1.0])
    a, power = {}, {}
    for g in sizes:
        c = costs.get(g, 0.0)
        c1 = max(first(c), floor)
        power[g] = 2.0
        if isinstance(c, (list, tuple)) and len(c) > 1 and growth_probe is not None and growth_probe != probe_ratio:
            c2 = max(float(c[1]), floor)
            power[g] = float(np.clip(np.log(c2 / c1) / np.log(growth_probe / probe_ratio), 1.0, 3.0))
        a[g] = c1 / probe_ratio ** power[g]

    def step_cost(g, removed):
        n = sizes[g]
        return a[g] * (((removed + round_to) / n) ** power[g] - (removed / n) ** power[g])

    removed = dict.fromkeys(sizes, 0)
    limit = {g: min(int(n * max_group_ratio) // round_to * round_to, (n - round_to) // round_to * round_to)
             for g, n in sizes.items()}
    heap = [(step_cost(g, 0), g) for g in sizes if limit[g] >= round_to]
    heapq.heapify(heap)
    total = 0
    while heap and total + round_to / 2 < target:
        _, g = heapq.heappop(heap)
        removed[g] += round_to
        total += round_to
        if removed[g] + round_to <= limit[g]:
            heapq.heappush(heap, (step_cost(g, removed[g]), g))
    return {g: n - removed[g] for g, n in sizes.items()}


def measure_sensitivity(func: relax.Function, weights: dict, deps, config, sizes: dict[str, int], probe: float,
                        evaluate: Evaluate, calibration: list, x_orig: dict, alpha) -> dict[str, float]:
    """Per group: the output error when that group alone loses ``probe`` of its channels, recovered.

    The recovery is fit on three quarters of the calibration inputs and the error measured on the
    rest, ``sum ||y' - y||^2 / sum ||y||^2`` over the model's outputs: what the refit does on inputs it
    has not seen (on its own fitting inputs it looks better than it is, most for the last layers).
    """
    held = list(range(len(calibration)))[3::4] or [len(calibration) - 1]
    fit = [i for i in range(len(calibration)) if i not in held]
    rows = {key: value.shape[0] // len(calibration) for key, value in x_orig.items()}
    x_fit = {key: np.concatenate([value[i * rows[key]:(i + 1) * rows[key]] for i in fit])
             for key, value in x_orig.items()}
    held_inputs = [calibration[i] for i in held]
    n_out = None
    reference = []
    for row in evaluate(func, weights, held_inputs):
        n_out = n_out or len(row)
        reference.append([np.asarray(r, np.float64) for r in row])
    scale = sum(float((r ** 2).sum()) for row in reference for r in row) or 1.0
    costs = {}
    for name, n in sizes.items():
        keep = keep_count(n, probe, 0, config.round_to, False)
        if keep >= n:
            costs[name] = 0.0
            continue
        plan = plan_pruning(deps, weights, config, {}, x_fit, {name: keep})
        new_func, new_weights, _ = prune_and_recover(func, weights, plan, evaluate, [calibration[i] for i in fit],
                                                     True, alpha, x_orig=x_fit, upstream_unchanged=True)
        out = evaluate(new_func, new_weights, held_inputs)
        costs[name] = sum(float(((np.asarray(o, np.float64) - r) ** 2).sum())
                          for got, want in zip(out, reference) for o, r in zip(got, want)) / scale
    return costs

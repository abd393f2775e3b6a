"""How many clusters each layer gets: measured, as pruning's sensitivity allocation measures channels.

Each weight tensor ``i`` is clustered alone with every candidate ``k`` and the model's output error
measured on calibration inputs, ``e_i(k) = sum ||y' - y||^2 / sum ||y||^2`` over the outputs (the
measure of ``pruning/sensitivity.py``). Errors of separately clustered layers add up closely (the
same assumption pruning makes, measured there on SFace), so the choice

    min sum_i bytes_i(k_i)   s.t.   sum_i e_i(k_i) <= max_error

(bytes: Huffman-coded indices plus tables, ``cluster.shared_weight_bytes``) is made greedily: from
every layer left as it is, repeatedly take the step to a smaller option (``keep`` -> 256 -> ... ->
the smallest k) that saves the most bytes per unit of error added, while the budget holds. A layer
whose every option costs more than the budget stays as it is: the stem and the embedding of a
recognizer, as a rule, come out so by measurement, not by name.

Scaled codebooks (sharing.cluster_scaled) are measured the same way, each candidate k with its scales
and codebook refit as the pass will refit them (the scales refit on a copy: the refit writes them in
place), and sized with the float16 scales and the one table (``scaled_weight_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from .constants import replace_constants
from .sharing import cluster_scaled, cluster_tensor, expand_scaled, scaled_weight_bytes, shared_weight_bytes

# evaluate(func, weights, inputs) -> [[outputs] per sample]: the Evaluate of pruning.recovery, which
# edgetvm.api hands down (edgetvm.host.calibration_evaluator: numpy first, compiled on the host else).
Evaluate = Callable[[relax.Function, dict, list], list]
KEEP = 0  # the option "leave the layer as it is"


def lift_constants(func: relax.Function, constants: list[relax.Constant]) -> tuple[relax.Function, dict]:
    """``func`` with ``constants`` as parameters ``w0, w1, ...`` after its inputs (``num_input``), and their
    values: the form ``evaluate`` runs with other weights without compiling again."""
    params = [relax.Var(f"w{i}", relax.TensorType(c.value.shape, str(c.value.dtype))) for i, c in enumerate(constants)]
    body = replace_constants(func, {c.__chandle__(): p for c, p in zip(constants, params)}).body
    attrs = {**dict(func.attrs or {}), "num_input": len(func.params)}
    lifted = relax.Function([*func.params, *params], body, func.ret_ty, func.is_pure, tvm.ir.DictAttrs(attrs))
    return lifted, {f"w{i}": c.value.numpy() for i, c in enumerate(constants)}


def output_error(outputs: list, reference: list) -> float:
    """``sum ||y' - y||^2 / sum ||y||^2`` over every output of every sample."""
    scale = sum(float((np.asarray(r, np.float64) ** 2).sum()) for row in reference for r in row) or 1.0
    return sum(float(((np.asarray(o, np.float64) - np.asarray(r, np.float64)) ** 2).sum())
               for got, want in zip(outputs, reference) for o, r in zip(got, want)) / scale


def measure_cluster_sensitivity(func: relax.Function, constants: list[relax.Constant], candidates: list[int],
                                evaluate: Evaluate, samples: list, seed: int = 0,
                                refit: Callable | None = None,
                                sparsities: list[float] | None = None,
                                axes: list[int] | None = None,
                                scaled: list[bool] | None = None) -> list[dict[int, tuple]]:
    """Per constant, per candidate k: ``(output error, coded bytes, clustered value, per_channel, scales)``,
    plus ``KEEP: (0, bytes, None, False, None)``. With ``refit(i, clustered, per_channel, x, scales) ->
    (value, ...)`` (the centroid refit, refit.py) the error is measured with the refit centroids; the
    value is k-means'. ``sparsities``, ``axes``: per constant, the fraction pruned by magnitude before
    clustering and the output axis its codebooks are sliced along (sharing.py); ``scaled``: per constant,
    whether it becomes a scaled codebook along that axis (then the value is the normalized codes and
    ``scales`` k-means' float16 scales; else ``scales`` is None)."""
    lifted, weights = lift_constants(func, constants)
    reference = evaluate(lifted, weights, samples)
    table = []
    for i, const in enumerate(constants):
        value = weights[f"w{i}"]
        options = {KEEP: (0.0, int(value.nbytes), None, False, None)}
        axis = axes[i] if axes else 0
        sparsity = sparsities[i] if sparsities else 0.0
        for k in candidates:
            if scaled and scaled[i]:
                codes, scales = cluster_scaled(value, k, seed=seed, sparsity=sparsity, axis=axis)
                refit_scales = scales.copy()
                normalized = refit(i, codes, False, None, refit_scales)[0] if refit is not None else codes
                measured = expand_scaled(normalized, refit_scales, axis)
                entry = (scaled_weight_bytes(codes, scales)[1], codes, False, scales)
            else:
                clustered, per_slice = cluster_tensor(value, k, seed=seed, sparsity=sparsity, axis=axis)
                measured = refit(i, clustered, per_slice)[0] if refit is not None else clustered
                entry = (shared_weight_bytes(clustered, per_slice, axis)[1], clustered, per_slice, None)
            error = output_error(evaluate(lifted, {**weights, f"w{i}": measured}, samples), reference)
            options[k] = (error, *entry)
        table.append(options)
    return table


def allocate_clusters(table: list[dict[int, tuple]], max_error: float) -> list[int]:
    """Per layer the option (k, or KEEP) the greedy allocation of the module docstring picks."""
    order = [sorted(options, key=lambda k: (k != KEEP, -k)) for options in table]  # KEEP, 256, ..., smallest
    position = [0] * len(table)
    total = 0.0
    while True:
        best, best_ratio = None, np.inf
        for i, options in enumerate(table):
            here = options[order[i][position[i]]]
            for step in range(position[i] + 1, len(order[i])):
                there = options[order[i][step]]
                saved = here[1] - there[1]
                added = max(there[0] - here[0], 0.0)
                if saved > 0 and total + there[0] - here[0] <= max_error:
                    ratio = added / saved
                    if ratio < best_ratio:
                        best, best_ratio = (i, step), ratio
        if best is None:
            return [order[i][p] for i, p in enumerate(position)]
        i, step = best
        total += table[i][order[i][step]][0] - table[i][order[i][position[i]]][0]
        position[i] = step

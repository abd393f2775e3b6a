"""Structured channel pruning of a Relax function (lossy; the error is measured by the caller):
:func:`prune_function` strings the steps together, :func:`PruneChannels` is the pass.

Steps, each on the compiler's own graph, where every op's channel semantics are known:

1. lift every bound constant to a named weight parameter (:mod:`.weights`);
2. find the channel dependency groups (:mod:`.dependencies`);
3. in each prunable group rank the units by a criterion (``l1``, ``bn_gamma``, ``activation``,
   ``reconstruction``) or user masks and pick the ones to remove (:mod:`.selection`). Channels whose
   value does not depend on the input (a zero filter, a BN with gamma = 0) rank first: removing
   them is lossless once their contribution is folded into the next layer (:mod:`.recovery`).
   The ratio is of each group (``allocation="uniform"``), of all channels ranked together
   (``"global"``, scores divided by their group's mean), or of all prunable channels spread by
   measured cost (``"sensitivity"``, :mod:`.sensitivity`). The kept count is
   ``round(n * (1 - ratio) / 4) * 4`` (whole NEON lanes), never zero;
4. rewrite the graph with the smaller tensors (:mod:`.apply`): every weight is sliced on its
   tracked axes, reshapes/splits/slices get new bounds, depthwise convs new group counts, and each
   layer that lost input channels gets an output offset ``y' = conv(x_kept, W_kept) + offset``;
5. recover (:mod:`.recovery`): the offset holds the removed channels' constant contribution and the
   bias of the least-squares refit of the layer's kept weights on calibration inputs (He et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..transform.base import GraphPass, graph_pass
from .dependencies import analyze_channel_dependencies, unit_is_constant
from .plan import PruningConfig, PruningPlan
from .recovery import RecoveryReport, lossless_units, original_taps, prune_and_recover
from .selection import plan_pruning
from .sensitivity import sensitivity_keep_counts
from .weights import bind_weights, lift_weights


@dataclass
class PruneResult:
    func: relax.Function  # weights as parameters (see ``num_input``)
    weights: dict[str, np.ndarray]
    plan: PruningPlan
    recovery: RecoveryReport

    def report(self) -> dict:
        deps = self.plan.deps
        return {
            "groups": self.plan.report,
            "blocked": [{"group": g.name, "layers": sorted({p.layer for p in g.producers}), "why": g.blocked}
                        for g in deps.blocked_groups() if g.producers],
            "unanalysed": [{"layer": k, "why": why} for k, why in deps.unanalysed],
            "notes": self.plan.notes,
            "recovery": self.recovery.to_json(),
        }

    def bound(self) -> relax.Function:
        return bind_weights(self.func, self.weights)


def prune_function(func: relax.Function, config: PruningConfig, *, weights: dict | None = None, evaluate=None,
                   calibration: list | None = None, recover: bool = True, alpha=None) -> PruneResult:
    """Analyse, select, rewrite and recover ``func`` (bound constants, or weight parameters + ``weights``).

    ``alpha``: the least-squares refit's ridge strength (relative to the Gram matrix's mean eigenvalue),
    or several, chosen per layer by cross-validation over calibration inputs; None: ``CV_ALPHAS``.
    """
    if weights is None:
        func, weights = lift_weights(func)
    deps = analyze_channel_dependencies(func, weights)
    candidates = any(unit_is_constant(deps, u, {c.data for c in deps.consumers})
                     for g in deps.prunable_groups() for u in g.units)
    x_orig = None
    if evaluate is not None and ((config.lossless and candidates) or (recover and calibration)
                                 or (config.criterion == "activation" and calibration)
                                 or (config.allocation == "sensitivity" and calibration)):
        x_orig = original_taps(func, weights, deps, evaluate, calibration)
    lossless = lossless_units(deps, weights, x_orig, config.spatial_folds) if config.lossless else {}
    keep_counts, sensitivity = None, None
    if config.allocation == "sensitivity" and (isinstance(config.ratio, dict) or float(config.ratio) > 0):
        # (ratio 0 removes only the constant channels, as with a uniform allocation)
        keep_counts, sensitivity = sensitivity_keep_counts(func, weights, deps, config, evaluate, calibration, x_orig,
                                                           alpha)
    plan = plan_pruning(deps, weights, config, lossless, x_orig if calibration else None, keep_counts)
    if sensitivity is not None:
        for entry in plan.report:
            if entry["group"] in sensitivity:
                curve = sensitivity[entry["group"]]
                entry["sensitivity"] = float(curve[0])  # the output error at ``sensitivity_probe`` removed
                entry["sensitivity_curve"] = [float(c) for c in curve]
    if candidates and x_orig is None:
        plan.notes.append("constant channels kept: folding them needs an evaluator to run the model")
    new_func, new_weights, recovery = prune_and_recover(func, weights, plan, evaluate, calibration, recover, alpha,
                                                        x_orig=x_orig)
    return PruneResult(new_func, new_weights, plan, recovery)


@graph_pass("PruneChannels")
class PruneChannels(GraphPass):
    """Prune ``main``'s channels (lossy, see the module docstring; the error is the caller's to measure).

    After running, ``findings`` holds :meth:`PruneResult.report` (``groups``, ``blocked``,
    ``unanalysed``, ``notes``, ``recovery``); ``report``, when given, is updated with it too.
    """

    def __init__(self, config: PruningConfig, *, evaluate=None, calibration: list | None = None,
                 recover: bool = True, report: dict | None = None):
        super().__init__()
        self.config, self.evaluate, self.calibration, self.recover = config, evaluate, calibration, recover
        self.report = report

    def visits(self, gvar, func) -> bool:
        return isinstance(func, relax.Function) and gvar.name_hint == "main"

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> tvm.IRModule:
        result = prune_function(func, self.config, evaluate=self.evaluate, calibration=self.calibration,
                                recover=self.recover)
        self.findings = result.report()
        if self.report is not None:
            self.report.update(self.findings)
        out = tvm.IRModule({gv.name_hint: f for gv, f in mod.functions.items() if gv.name_hint != "main"})
        out["main"] = result.bound().with_attr("global_symbol", "main")
        return out

"""Structured channel pruning of a Relax graph (lossy; the error is measured by the caller).

Steps, each on the compiler's own graph, where every op's channel semantics are known:

1. lift every bound constant to a named weight parameter (:func:`lift_weights`);
2. find the channel dependency groups (:mod:`.channel_dependencies`);
3. in each prunable group rank the units by a criterion and pick the ones to remove:
   ``l1``: ``s_c = sum_p ||W_p[c]||_1 / mean_c' ||W_p[c']||_1`` over the group's producers p
   (Li et al. 2017, "Pruning Filters for Efficient ConvNets");
   ``bn_gamma``: ``s_c = sum_bn |gamma_bn[c]|`` (Liu et al. 2017, "Learning Efficient Convolutional
   Networks through Network Slimming"); ``activation``: on calibration inputs, the share of each
   next layer's output energy the channel carries beyond its mean (the mean is refit into the bias),
   ``s_c = sum_layers Var(x_c) ||W[:, c]||^2 / sum_c' Var(x_c') ||W[:, c']||^2`` (a first-order
   estimate of the reconstruction error He et al. 2017 minimise); ``reconstruction``: greedy
   backward elimination on calibration inputs, removing each time the unit whose loss raises the
   least-squares reconstruction error of the next layers least (exact for linear regression:
   ``dRSS_J = tr(B_J^T (G^-1)_JJ^-1 B_J)``; ThiNet, Luo et al. 2017; He et al. 2017; a dense layer after a
   flatten is modelled on whole channels, see :func:`_flattened_regression`); or user masks. Channels whose
   value does not depend on the input (a zero filter, a BN with gamma = 0) rank first: removing
   them is lossless once their contribution is folded into the next layer (:mod:`.prune_recovery`).
   The ratio is of each group (``allocation="uniform"``), of all channels ranked together
   (``"global"``, scores divided by their group's mean), or of all prunable channels spread by
   measured cost (``"sensitivity"``: each group pruned alone by ``sensitivity_probe`` and by
   ``sensitivity_growth_probe`` and recovered, its output error on held-out calibration inputs fit by
   ``a_g r^p_g`` through both; then ``min sum_g a_g r_g^p_g`` subject to the global count, in whole
   lanes, see :func:`sensitivity_allocation`). The kept count is
   ``round(n * (1 - ratio) / 4) * 4`` (whole NEON lanes), never zero;
4. rewrite the graph with the smaller tensors (:func:`apply_pruning`): every weight is sliced on its
   tracked axes, reshapes/splits/slices get new bounds, depthwise convs new group counts, and each
   layer that lost input channels gets an output offset ``y' = conv(x_kept, W_kept) + offset``
   where the offset holds the removed channels' constant contribution and the bias of the
   least-squares refit (He et al. 2017).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..errors import CompileError, InputError
from .dependencies import ChannelDependencies, DependencyGroup, analyze_channel_dependencies

CRITERIA = ("l1", "bn_gamma", "activation", "reconstruction")
ALLOCATIONS = ("uniform", "global", "sensitivity")

_WEIGHT_ROLES = {
    "relax.nn.conv2d": ("conv", {1: "weight"}),
    "relax.matmul": ("dense", {1: "weight"}),
    "relax.nn.batch_norm": ("bn", {1: "gamma", 2: "beta", 3: "mean", 4: "var"}),
    "relax.nn.prelu": ("prelu", {1: "slope"}),
}


def _const_value(const) -> np.ndarray:
    value = const.value
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


# -- 1. weights as named parameters ---------------------------------------------------------------
def lift_weights(func: relax.Function) -> tuple[relax.Function, dict[str, np.ndarray]]:
    """``func`` with every bound constant turned into a weight parameter, and the weights' values.

    The parameters keep the model's inputs first; ``num_input`` says how many there are. A weight
    is named for the op that uses it (``conv3.weight``, ``bn3.gamma``), which is what per-layer
    ratios and masks refer to when the model has no names of its own.
    """
    weights: dict[str, np.ndarray] = {}
    counters: dict[str, int] = {}
    lifted: dict = {}

    def name_for(call: relax.Call | None, index: int) -> str:
        op = call.op.name if call is not None and isinstance(call.op, tvm.ir.Op) else "const"
        short, roles = _WEIGHT_ROLES.get(op, (op.split(".")[-1], {}))
        n = counters.get(short, 0)
        base = f"{short}{n}.{roles.get(index, f'arg{index}')}"
        name, k = base, 1
        while name in weights:
            name, k = f"{base}{k}", k + 1
        return name

    @relax.expr_functor.mutator
    class Lifter(relax.PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            args = []
            for i, arg in enumerate(call.args):
                if isinstance(arg, tvm.ir.expr.Constant) and _const_value(arg).ndim > 0:
                    key = arg
                    if key not in lifted:
                        name = name_for(call, i)
                        value = _const_value(arg)
                        weights[name] = value
                        lifted[key] = relax.Var(name, relax.TensorType(value.shape, str(value.dtype)))
                    args.append(lifted[key])
                else:
                    args.append(self.visit_expr(arg))
            if isinstance(call.op, tvm.ir.Op):
                short = _WEIGHT_ROLES.get(call.op.name, (call.op.name.split(".")[-1],))[0]
                counters[short] = counters.get(short, 0) + 1
            return relax.Call(call.op, args, call.attrs, call.ty_args)

    body = Lifter().visit_expr(func.body)
    num_input = len(func.params)
    if func.attrs is not None and "num_input" in func.attrs:
        num_input = int(func.attrs["num_input"])
    params = list(func.params) + list(lifted.values())
    attrs = {k: v for k, v in (func.attrs or {}).items() if k != "params"}
    attrs["num_input"] = num_input
    new_func = relax.Function(params, body, func.ret_ty, func.is_pure, tvm.ir.DictAttrs(attrs))
    return new_func, weights


def split_params(func: relax.Function) -> tuple[list[relax.Var], list[relax.Var]]:
    num_input = int(func.attrs["num_input"]) if func.attrs is not None and "num_input" in func.attrs \
        else len(func.params)
    return list(func.params[:num_input]), list(func.params[num_input:])


def bind_weights(func: relax.Function, weights: dict[str, np.ndarray]) -> relax.Function:
    """The inverse of :func:`lift_weights`: weights become bound constants again."""
    inputs, weight_params = split_params(func)
    mod = tvm.IRModule({"main": func})
    mod = relax.transform.BindParams("main", {str(p.name): weights[str(p.name)] for p in weight_params})(mod)
    bound = mod["main"]
    attrs = {k: v for k, v in (bound.attrs or {}).items() if k != "params"}
    attrs["num_input"] = len(inputs)
    return relax.Function(list(bound.params), bound.body, bound.ret_ty, bound.is_pure,
                          tvm.ir.DictAttrs(attrs))


# -- 3. selection ---------------------------------------------------------------------------------
@dataclass
class PruningConfig:
    """What to prune. ``ratio`` is a fraction of each group's channels, or ``{pattern: fraction}``
    matched (fnmatch) against the group's layer names, ``"*"`` as default."""

    ratio: float | dict = 0.0
    criterion: str = "l1"
    masks: dict[str, np.ndarray] | None = None  # layer -> keep mask over its output channels
    round_to: int = 4
    lossless: bool = True  # always remove channels whose value does not depend on the input
    spatial_folds: bool = False  # also when folding needs a [C_out, H, W] offset map, not just a bias
    # "uniform": ``ratio`` of every group; "global": of all channels, ranked together; "sensitivity": of
    # all channels, spread over the groups by their measured cost (see ``sensitivity_allocation``).
    allocation: str = "uniform"
    max_group_ratio: float = 0.75  # "global"/"sensitivity": no group loses more than this fraction
    sensitivity_probe: float = 0.25  # "sensitivity": each group's cost is measured at this fraction removed
    # "sensitivity": and again at this fraction, to measure how fast each group's cost grows (None: assume
    # quadratic growth; see ``sensitivity_allocation``)
    sensitivity_growth_probe: float | None = 0.5
    # "sensitivity": per-group costs measured before (a report's "sensitivity" entries, or [at the probe, at
    # the growth probe] from its "sensitivity_curve" entries; same probes and
    # calibration), to spread other ratios without measuring again
    sensitivity: dict[str, float | list[float]] | None = None

    def ratio_for(self, group: DependencyGroup) -> float:
        if not isinstance(self.ratio, dict):
            return float(self.ratio)
        layers = sorted({p.layer for p in group.producers}) or [group.name]
        for pattern, value in self.ratio.items():
            if pattern != "*" and any(fnmatch.fnmatchcase(layer, pattern) for layer in layers):
                return float(value)
        return float(self.ratio.get("*", 0.0))


@dataclass
class PruningPlan:
    deps: ChannelDependencies
    removed: set = field(default_factory=set)  # channel nodes (key, axis, index) to delete
    report: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def kept(self, key: str, axis: int) -> np.ndarray:
        size = self.deps.tensors[key].shape[axis]
        return np.array([i for i in range(size) if (key, axis, i) not in self.removed], dtype=np.int64)

    def new_shape(self, key: str) -> tuple[int, ...]:
        shape = list(self.deps.tensors[key].shape)
        for axis in range(len(shape)):
            if (key, axis) in self.deps.tracked:
                shape[axis] = len(self.kept(key, axis))
        return tuple(shape)

    def changed(self, key: str) -> bool:
        return self.new_shape(key) != tuple(self.deps.tensors[key].shape)

    def consumers_changed(self):
        """Consumers that lose input channels, in binding order."""
        order = {k: i for i, k in enumerate(self.deps.order)}
        found = [c for c in self.deps.consumers if self.changed(c.data)]
        return sorted(found, key=lambda c: order.get(c.out, 0))


def _unit_constant(deps: ChannelDependencies, unit, consumer_inputs: set[str]) -> bool:
    """Removing the unit is lossless when every channel of it that a layer sums over is input-independent:
    what those layers lose is then a fixed tensor, folded into their offsets."""
    read = [(k, i) for k, a, i in unit if a == 1 and k in consumer_inputs]
    return bool(read) and all(k in deps.constant_channels and bool(deps.constant_channels[k][i]) for k, i in read)


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
        w = weights[c.leaf]
        for kind, arg in reversed(c.to_leaf):
            w = np.transpose(w, np.argsort(arg)) if kind == "permute" else w.reshape(deps.tensors[c.weight].shape)
        w = w.reshape(deps.tensors[c.weight].shape)
        in_axis = 1 if c.kind == "conv2d" else 0
        wnorm = (np.moveaxis(w, in_axis, 0).reshape(w.shape[in_axis], -1) ** 2).sum(axis=1)
        e = var * wnorm
        e = e / (e.sum() or 1.0)
        energy[c.data] = energy.get(c.data, 0) + e
    return energy


def _regression(deps: ChannelDependencies, weights: dict, consumer, x: np.ndarray, rows: int = 16384, seed: int = 0):
    """The consumer as a linear regression on calibration inputs: (centred Gram G, coefficients B [d, O])."""
    from .recovery import _view_of, im2col

    w = _view_of(consumer, weights[consumer.leaf], deps.tensors[consumer.weight].shape).astype(np.float64)
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


def _flattened_positions(deps: ChannelDependencies, consumer) -> int:
    """``B`` when the dense layer reads whole channels of a flatten (``feature = channel * B + position``), else 1."""
    from .recovery import _flatten_block

    return _flatten_block(PruningPlan(deps), consumer)


def _flattened_regression(deps: ChannelDependencies, weights: dict, consumer, x: np.ndarray, positions: int):
    """A dense layer after a flatten as a regression on channels: (centred channel Gram G, coefficients).

    Recovery predicts the removed channels from the kept ones with one map shared by all positions
    (``prune_recovery._refit_flattened``), so what a lost channel costs is the part of it the kept
    channels cannot predict, weighted by how much the layer reads it:
    ``G = sum_{n,p} x~[n, :, p]^T x~[n, :, p]`` (``x~`` centred per channel and position) and
    coefficients ``diag(s)``, ``s_c^2 = sum_{p,o} W[(c, p), o]^2``. The greedy elimination then keeps
    the channels that reconstruct the others best (channels of a 7x7 map: 1024 unknowns, not 50176).
    """
    from .recovery import _view_of

    w = _view_of(consumer, weights[consumer.leaf], deps.tensors[consumer.weight].shape).astype(np.float64)
    n, f = x.shape[0], int(np.prod(x.shape[1:]))
    channels = f // positions
    xs = x.reshape(n, channels, positions).astype(np.float64)
    xs = (xs - xs.mean(axis=0)).transpose(0, 2, 1).reshape(-1, channels)
    gram = xs.T @ xs
    gram += (1e-3 * float(np.trace(gram)) / max(channels, 1) + 1e-12) * np.eye(channels)
    scale = np.sqrt((w.reshape(channels, positions, -1) ** 2).sum(axis=(1, 2)))
    return gram, np.diag(scale)


def _greedy_reconstruction(deps, weights, group, activations, n_remove: int, constant, notes, max_inputs: int = 4096):
    """Units to drop by greedy backward elimination; None if a next layer is too wide to model."""
    models = []
    for c in deps.consumers:
        if c.data not in group.tensors or activations is None or c.data not in activations:
            continue
        d = int(np.prod(deps.tensors[c.weight].shape)) // deps.tensors[c.weight].shape[0 if c.kind == "conv2d" else 1]
        positions = _flattened_positions(deps, c) if c.kind == "dense" and d > max_inputs else 1
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


def _keep_count(n: int, ratio: float, n_constant: int, round_to: int, lossless: bool) -> int:
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
    ``prune_recovery.lossless_units``); without it, the analysis alone decides (input-independent
    channels), which is exact only if the caller folds their contributions.
    """
    if config.criterion not in CRITERIA and config.masks is None:
        raise InputError(f"prune criterion {config.criterion!r}: use one of {list(CRITERIA)} or give masks")
    if config.allocation not in ALLOCATIONS:
        raise InputError(f"prune allocation {config.allocation!r}: use one of {list(ALLOCATIONS)}")
    plan = PruningPlan(deps)
    data_driven = config.criterion in ("activation", "reconstruction")
    if data_driven and config.masks is None and not activations:
        raise InputError(f"prune criterion {config.criterion!r} ranks channels on calibration inputs: give calibration "
                         f"data")
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
            constant = np.array([_unit_constant(deps, u, consumer_inputs) for u in group.units], dtype=bool)
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
                raise InputError(f"prune ratio {ratio} for group {group.name}: give a fraction in [0, 1)")
            if n < 2 * config.round_to and not constant.any():
                continue
            keep = _keep_count(n, ratio, int(constant.sum()), config.round_to, config.lossless) \
                if global_keep is None else global_keep.get(group.name, n)
            if keep >= n:
                continue
            drop = None
            if config.criterion == "reconstruction":
                drop = _greedy_reconstruction(deps, weights, group, activations, n - keep,
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
        raise InputError("global allocation takes one ratio, not per-layer ratios")
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
    import heapq

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


# -- 4. rewrite -----------------------------------------------------------------------------------
def offset_name(consumer_out: str) -> str:
    return f"{consumer_out}.prune_offset"


class _Rewriter:
    """Re-emits ``func`` with the plan's smaller tensors; optionally exposes intermediate tensors."""

    def __init__(self, func: relax.Function, plan: PruningPlan, offsets: dict[str, tuple] | None = None,
                 taps: list[str] | None = None):
        self.func = func
        self.plan = plan
        self.deps = plan.deps
        self.offsets = offsets or {}  # consumer out key -> offset shape
        self.taps = list(taps or [])
        self.var_map: dict = {}
        self.tapped: dict[str, relax.Var] = {}
        self.key_of = {v: k for k, v in self.deps.var_of.items()}
        self.offset_params: dict[str, relax.Var] = {}

    def new_params(self) -> list[relax.Var]:
        params = []
        for p in self.func.params:
            key = self.key_of.get(p, str(p.name))
            if key in self.deps.tensors and self.plan.changed(key):
                new = relax.Var(str(p.name), relax.TensorType(self.plan.new_shape(key), p.ty.dtype))
            else:
                new = p
            self.var_map[p] = new
            if key in self.taps:
                self.tapped[key] = new
            params.append(new)
        for key, shape in self.offsets.items():
            dtype = self.deps.var_of[key].ty.dtype
            var = relax.Var(offset_name(key), relax.TensorType(shape, dtype))
            self.offset_params[key] = var
            params.append(var)
        return params

    def expr(self, e):
        if isinstance(e, relax.Var):
            return self.var_map.get(e, e)
        if isinstance(e, relax.Tuple):
            return relax.Tuple([self.expr(f) for f in e.fields])
        return e

    def run(self) -> relax.Function:
        bb = relax.BlockBuilder()
        params = self.new_params()
        num_input = int(self.func.attrs["num_input"]) if "num_input" in (self.func.attrs or {}) else len(params)
        with bb.function("main", params, attrs={"num_input": num_input}, pure=self.func.is_pure):
            body = self.func.body
            for block in body.blocks:
                if isinstance(block, relax.DataflowBlock):
                    with bb.dataflow():
                        for binding in block.bindings:
                            self.emit(bb, binding, dataflow=True)
                else:
                    for binding in block.bindings:
                        self.emit(bb, binding, dataflow=False)
            result = self.expr(body.body)
            if self.taps:
                missing = [t for t in self.taps if t not in self.tapped]
                if missing:
                    raise CompileError(f"pruning: cannot expose tensors {missing} for calibration")
                fields = list(result.fields) if isinstance(result, relax.Tuple) else [result]
                result = relax.Tuple(fields + [self.tapped[t] for t in self.taps])
            bb.emit_func_output(result)
        return bb.get()["main"]

    def emit(self, bb: relax.BlockBuilder, binding, dataflow: bool) -> None:
        var = binding.var
        value = binding.value
        key = self.key_of.get(var)
        is_output = dataflow and not isinstance(var, relax.DataflowVar)
        tap = key is not None and key in self.taps and key not in self.tapped
        new_value = self.rewrite(var, value)
        offset = self.offset_params.get(key) if key is not None else None
        name = str(var.name)
        if offset is not None:
            raw = bb.emit(new_value, name_hint=name + "_pruned")
            new_value = relax.op.add(raw, offset)
        if (is_output or tap) and dataflow:
            new_var = bb.emit_output(new_value, name_hint=name)
        else:
            new_var = bb.emit(new_value, name_hint=name)
        self.var_map[var] = new_var
        if tap:
            self.tapped[key] = new_var

    def rewrite(self, var, value):
        if isinstance(value, relax.Var) or isinstance(value, relax.Tuple):
            return self.expr(value)
        if isinstance(value, relax.TupleGetItem):
            return relax.TupleGetItem(self.expr(value.tuple_value), value.index)
        if not isinstance(value, relax.Call):
            return value
        args = [self.expr(a) for a in value.args]
        op = value.op.name if isinstance(value.op, tvm.ir.Op) else None
        key = self.key_of.get(var)
        if op in ("relax.reshape", "relax.flatten") and key is not None and key in self.deps.tensors:
            return relax.op.reshape(args[0], self.plan.new_shape(key))
        if op in ("relax.expand_dims", "relax.squeeze") and key is not None and self.deps.tensors.get(key) \
                and self.deps.tensors[key].kind == "view":
            return relax.op.reshape(args[0], self.plan.new_shape(key))
        if op == "relax.nn.conv2d" and int(value.attrs.groups) > 1:
            data_key = self.key_of.get(value.args[0])
            if data_key is not None and self.plan.changed(data_key):
                a = value.attrs
                return relax.op.nn.conv2d(args[0], args[1], strides=a.strides, padding=a.padding,
                                          dilation=a.dilation, groups=self.plan.new_shape(data_key)[1],
                                          data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                                          out_layout=a.out_layout, out_dtype=a.out_dtype)
        if op == "relax.split" and int(value.attrs.axis) % len(value.args[0].ty.shape) == 1:
            src = self.key_of.get(value.args[0])
            if src is not None and self.plan.changed(src):
                fields = [f"{key}:{i}" for i in range(len(var.ty.fields))]
                bounds = np.cumsum([self.plan.new_shape(f)[1] for f in fields])[:-1]
                return relax.op.split(args[0], [int(b) for b in bounds], axis=1)
        if op == "relax.strided_slice" and key is not None:
            src = self.key_of.get(value.args[0])
            if src is not None and self.plan.changed(src):
                return self.rewrite_slice(value, args, src, key)
        return relax.Call(value.op, args, value.attrs, value.ty_args)

    def rewrite_slice(self, value, args, src, key):
        from .dependencies import _int_list

        axes = [int(a) % len(self.deps.tensors[src].shape) for a in _int_list(value.args[1])]
        begin = [int(b) for b in _int_list(value.args[2])]
        end = [int(e) for e in _int_list(value.args[3])]
        if 1 in axes:
            i = axes.index(1)
            size = self.deps.tensors[src].shape[1]
            start = begin[i] % size if begin[i] < 0 else min(begin[i], size)
            kept_src = self.plan.kept(src, 1)
            begin[i] = int(np.sum(kept_src < start))
            end[i] = begin[i] + self.plan.new_shape(key)[1]
        return relax.op.strided_slice(args[0], axes, begin, end, assume_inbound=bool(value.attrs.assume_inbound))


def slice_weights(plan: PruningPlan, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every weight parameter with its removed channels cut out on each tracked axis."""
    out = {}
    for name, value in weights.items():
        if name not in plan.deps.tensors:
            out[name] = value
            continue
        for axis in range(value.ndim):
            if (name, axis) in plan.deps.tracked:
                value = np.take(value, plan.kept(name, axis), axis=axis)
        out[name] = np.ascontiguousarray(value)
    return out


def apply_pruning(func: relax.Function, weights: dict, plan: PruningPlan, offsets: dict[str, np.ndarray] | None = None,
                  taps: list[str] | None = None) -> tuple[relax.Function, dict[str, np.ndarray]]:
    """The pruned function (weights as parameters, offsets as extra ``*.prune_offset`` parameters).

    With ``taps``, the function also returns those tensors (by analysis key) after its outputs.
    """
    new_func, new_weights, _ = apply_pruning_tapped(func, weights, plan, offsets, taps)
    return new_func, new_weights


def apply_pruning_tapped(func: relax.Function, weights: dict, plan: PruningPlan, offsets: dict | None = None,
                         taps: list[str] | None = None):
    """:func:`apply_pruning`, plus ``{tap key: the Relax var holding it in the new function}``."""
    offsets = offsets or {}
    shapes = {k: tuple(v.shape) for k, v in offsets.items()}
    try:
        rewriter = _Rewriter(func, plan, shapes, taps)
        new_func = rewriter.run()
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:  # TVM shape inference on the new graph
        from ..errors import first_line

        raise CompileError(f"pruning produced an inconsistent graph: {first_line(exc)}; "
                           f"report this model to edgetvm") from None
    new_weights = slice_weights(plan, weights)
    for key, value in offsets.items():
        new_weights[offset_name(key)] = value
    return new_func, new_weights, dict(rewriter.tapped)


# -- the whole pass -------------------------------------------------------------------------------
@dataclass
class PruneResult:
    func: relax.Function  # weights as parameters (see ``num_input``)
    weights: dict[str, np.ndarray]
    plan: PruningPlan
    recovery: object  # prune_recovery.RecoveryReport

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
    from .recovery import prune_and_recover

    from .recovery import lossless_units, original_taps

    if weights is None:
        func, weights = lift_weights(func)
    deps = analyze_channel_dependencies(func, weights)
    candidates = any(_unit_constant(deps, u, {c.data for c in deps.consumers})
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
        from .recovery import measure_sensitivity

        if isinstance(config.ratio, dict):
            raise InputError("sensitivity allocation takes one ratio, not per-layer ratios")
        sizes = allocation_groups(deps, config)
        probe, growth = config.sensitivity_probe, config.sensitivity_growth_probe
        probes = [probe] if growth is None or growth == probe else [probe, growth]
        sensitivity = {name: list(c) if isinstance(c, (list, tuple)) else [c]
                       for name, c in (config.sensitivity or {}).items()}
        missing = {name: n for name, n in sizes.items() if len(sensitivity.get(name, [])) < len(probes)}
        if missing and (evaluate is None or not calibration or len(calibration) < 2):
            raise InputError("sensitivity allocation measures each group's cost on calibration inputs: give at least "
                             "2 calibration samples")
        for i, r in enumerate(probes):
            need = {name: n for name, n in missing.items() if len(sensitivity.get(name, [])) <= i}
            if need:
                measured = measure_sensitivity(func, weights, deps, config, need, r, evaluate, calibration, x_orig,
                                               alpha)
                for name, cost in measured.items():
                    sensitivity[name] = sensitivity.get(name, [])[:i] + [cost]
        keep_counts = sensitivity_allocation(sizes, sensitivity, probe, float(config.ratio), config.round_to,
                                             config.max_group_ratio, growth)
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


def PruneChannels(config: PruningConfig, *, evaluate=None, calibration: list | None = None,  # noqa: N802
                  recover: bool = True, report: dict | None = None) -> tvm.ir.transform.Pass:
    """Module pass: prune ``main`` (lossy, see the module docstring); findings go to ``report``."""

    @tvm.transform.module_pass(opt_level=0, name="PruneChannels")
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        result = prune_function(mod["main"], config, evaluate=evaluate, calibration=calibration, recover=recover)
        if report is not None:
            report.update(result.report())
        out = tvm.IRModule({gv.name_hint: f for gv, f in mod.functions.items() if gv.name_hint != "main"})
        out["main"] = result.bound().with_attr("global_symbol", "main")
        return out

    return transform

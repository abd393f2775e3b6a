"""What to prune (:class:`PruningConfig`, the user's ratio, criterion and allocation) and what is
removed (:class:`PruningPlan`, the channel nodes of the dependency analysis that go, with the new shapes)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np

from .dependencies import ChannelDependencies, DependencyGroup

CRITERIA = ("l1", "bn_gamma", "activation", "reconstruction")
ALLOCATIONS = ("uniform", "global", "sensitivity")


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

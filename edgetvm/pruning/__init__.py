"""Structured channel pruning (lossy): dependency groups, ranking, allocation, rewrite, recovery."""

from .dependencies import ChannelDependencies, DependencyGroup, analyze_channel_dependencies
from .plan import PruningConfig
from .prune import prune_model
from .rewrite import PruneChannels, prune_function
from .weights import lift_weights

__all__ = ["ChannelDependencies", "DependencyGroup", "PruneChannels", "PruningConfig", "analyze_channel_dependencies",
           "lift_weights", "prune_function", "prune_model"]

"""Structured channel pruning (lossy): dependency groups, ranking, allocation, rewrite, recovery."""

from .dependencies import ChannelDependencies, DependencyGroup, analyze_channel_dependencies
from .prune import prune_model
from .rewrite import PruneChannels, PruningConfig, lift_weights, prune_function

__all__ = ["ChannelDependencies", "DependencyGroup", "PruneChannels", "PruningConfig", "analyze_channel_dependencies",
           "lift_weights", "prune_function", "prune_model"]

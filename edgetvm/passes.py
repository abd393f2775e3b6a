"""The graph passes under their first import path, ``edgetvm.passes``, as users give them to
``compile(..., passes=[...])``. They live in ``edgetvm.transform`` (exact rewrites),
``edgetvm.quantization`` and ``edgetvm.pruning`` (lossy, by name)."""

from .pruning import ChannelDependencies, DependencyGroup, PruneChannels
from .quantization import FoldQuantScales
from .transform import FoldBatchNorm, FoldScaleShift, PReLUToLeakyReLU

__all__ = ["ChannelDependencies", "DependencyGroup", "FoldBatchNorm", "FoldQuantScales", "FoldScaleShift",
           "PReLUToLeakyReLU", "PruneChannels"]

"""Graph passes (IRModule -> IRModule), one per file, each exact within float rounding."""

from .fold_batch_norm import FoldBatchNorm
from .fold_scale_shift import FoldScaleShift
from .prelu_to_leaky_relu import PReLUToLeakyReLU

__all__ = ["FoldBatchNorm", "FoldScaleShift", "PReLUToLeakyReLU"]

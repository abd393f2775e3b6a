"""Graph passes (IRModule -> IRModule), one per file, each exact within float rounding, all on the
one protocol of ``base.py`` (a ``tvm.transform.Pass`` with ``findings``)."""

from .base import GraphPass, collect_findings, graph_pass
from .const_fold import FoldConstantsWithNumpy
from .fold_batch_norm import FoldBatchNorm
from .fold_scale_shift import FoldScaleShift
from .layout import LayoutFriendlyActivations
from .min_max_to_clip import MinMaxToClip
from .pad_conv_output_channels import PadConvOutputChannels
from .pad_stem_channels import PadStemChannels
from .prelu_to_leaky_relu import PReLUToLeakyReLU
from .space_to_depth_conv import SpaceToDepthConv
from .winograd_conv import WinogradConv

__all__ = ["FoldBatchNorm", "FoldConstantsWithNumpy", "FoldScaleShift", "GraphPass", "LayoutFriendlyActivations",
           "MinMaxToClip", "PadConvOutputChannels", "PadStemChannels", "PReLUToLeakyReLU", "SpaceToDepthConv",
           "WinogradConv", "collect_findings", "graph_pass"]

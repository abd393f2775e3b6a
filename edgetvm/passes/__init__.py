"""Graph passes (IRModule -> IRModule), one per file; each is a ``tvm.ir.transform`` pass."""

from .fold_batch_norm import FoldBatchNorm
from .fold_scale_shift import FoldScaleShift
from .prelu_to_leaky_relu import PReLUToLeakyReLU
from .channel_dependencies import ChannelDependencies, DependencyGroup, analyze_channel_dependencies
from .prune_channels import PruneChannels, PruningConfig, lift_weights, prune_function
from .fold_quant_scales import FoldQuantScales
from .quantize_annotate import plan_quantization, quantize_annotate as annotate_qdq
from .quantize import quantize_model
from .cross_layer_equalization import cross_layer_equalization, plan_equalization

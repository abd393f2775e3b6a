"""int8 (lossy): calibrate, equalize, annotate, fold scales into fixed-point requantizes."""

from .annotate import plan_quantization, quantize_annotate
from .cross_layer_equalization import cross_layer_equalization, plan_equalization
from .fold_quant_scales import FoldQuantScales
from .quantize import quantize_model

__all__ = ["FoldQuantScales", "cross_layer_equalization", "plan_equalization", "plan_quantization",
           "quantize_annotate", "quantize_model"]

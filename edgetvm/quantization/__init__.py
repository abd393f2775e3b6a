"""int8 (lossy): calibrate, equalize, annotate, fold scales into fixed-point requantizes."""

from .annotate import QuantizeAnnotate, plan_quantization
from .cross_layer_equalization import CrossLayerEqualization, plan_equalization
from .fold_quant_scales import FoldQuantScales
from .quantize import quantize_model

__all__ = ["CrossLayerEqualization", "FoldQuantScales", "QuantizeAnnotate", "plan_equalization",
           "plan_quantization", "quantize_model"]

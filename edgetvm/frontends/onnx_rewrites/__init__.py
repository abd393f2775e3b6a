"""ONNX-to-ONNX rewrites run before TVM's ONNX converter sees a graph.

Each file holds one rewrite, ``ModelProto -> ModelProto``, that never mutates its argument and
appends a one-line note per change it made to an optional ``notes`` list:

- ``graph_inputs.drop_weight_inputs``: graph inputs that are really weights (have an initializer)
  or are consumed by no node stop being inputs.
- ``dequantize.fold_constant_dequantize``: DequantizeLinear of constant initializers (including
  blocked quantization, ``block_size``) becomes a float initializer.
- ``static_shapes.set_input_shapes`` + ``static_shapes.fold_shape_subgraphs``: with static input
  shapes, Shape/Gather/Concat/... subgraphs evaluate to constants.
- ``inference_dropout.dropout_to_identity``: Dropout (inference mode) becomes Identity.
- ``resize_inputs.normalize_resize_inputs``: Resize's empty ``roi``/``scales`` inputs are dropped.
- ``dead_nodes.remove_dead_nodes``: nodes and initializers no graph output depends on are removed.
"""

from .dead_nodes import remove_dead_nodes
from .dequantize import fold_constant_dequantize
from .graph_inputs import drop_weight_inputs
from .inference_dropout import dropout_to_identity
from .resize_inputs import normalize_resize_inputs
from .static_shapes import fold_shape_subgraphs, set_input_shapes

__all__ = [
    "drop_weight_inputs",
    "dropout_to_identity",
    "fold_constant_dequantize",
    "fold_shape_subgraphs",
    "normalize_resize_inputs",
    "remove_dead_nodes",
    "set_input_shapes",
]

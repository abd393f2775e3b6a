"""The layers that read pruned channels (conv2d, dense: :class:`.dependencies.Consumer`) as linear maps
in numpy, for ranking channels and refitting layers on calibration inputs.

A conv2d is ``y = patches(x) @ W.reshape(O, -1).T`` with :func:`im2col` patches in OIHW weight order;
a dense layer is ``y = x @ W``. The weight the graph passes to the layer may be a reshaped or permuted
view of the weight parameter (:func:`view_of_leaf`, :func:`leaf_of_view`).
"""

from __future__ import annotations

import numpy as np

from ..kernels.im2col import im2col
from .dependencies import ChannelDependencies, Consumer


def layer_forward(consumer: Consumer, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The consumer without bias: conv2d ``[N, O, Ho, Wo]`` or dense ``[N, O]``, in float64."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    if consumer.kind == "dense":
        return x @ w
    a = consumer.attrs
    cols = im2col(x, w.shape[2:], a["strides"], a["padding"], a["dilation"])
    return np.einsum("nhwk,ok->nohw", cols, w.reshape(w.shape[0], -1))


def leaf_of_view(consumer: Consumer, w_view: np.ndarray, leaf_shape) -> np.ndarray:
    """The layer's weight ``w_view`` back in its parameter's layout (the inverse of :func:`view_of_leaf`)."""
    value = w_view
    for kind, arg in consumer.to_leaf:
        value = np.transpose(value, arg) if kind == "permute" else value.reshape(leaf_shape)
    return value.reshape(leaf_shape)


def view_of_leaf(consumer: Consumer, leaf_value: np.ndarray, view_shape) -> np.ndarray:
    """The weight parameter's value ``leaf_value`` as the layer reads it (through the graph's
    reshapes and permutes): ``[O, I, kh, kw]`` for conv2d, ``[F, O]`` for dense."""
    value = leaf_value
    for kind, arg in reversed(consumer.to_leaf):
        value = np.transpose(value, np.argsort(arg)) if kind == "permute" else value.reshape(view_shape)
    return value.reshape(view_shape)


def flatten_block(deps: ChannelDependencies, c: Consumer) -> int:
    """``B`` when the dense layer's features are whole channels of a flatten, ``f = channel * B + p``.

    Read from the dependency groups: every unit touching the layer's input holds ``B`` consecutive
    features starting at a multiple of ``B``. 1 when not (plain features, or no such structure).
    """
    size = deps.tensors[c.data].shape[1]
    blocks = set()
    for group in deps.groups:
        if c.data not in group.tensors:
            continue
        for unit in group.units:
            idx = sorted(i for k, a, i in unit if k == c.data and a == 1)
            if not idx:
                continue
            b = len(idx)
            if idx[0] % b or idx != list(range(idx[0], idx[0] + b)):
                return 1
            blocks.add(b)
    if len(blocks) != 1:
        return 1
    b = blocks.pop()
    return b if b > 1 and size % b == 0 else 1

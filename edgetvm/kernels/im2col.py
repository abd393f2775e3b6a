"""A convolution as a matrix product, in numpy: the reference every conv-as-GEMM computation reads.

``conv2d(x, W)[n, o, h, w] = patches[n, h, w, :] @ W.reshape(O, -1)[o]`` for ``groups == 1``; with groups,
the patches' last axis holds the groups one after another (``C*kh*kw``, channel-major), so group ``g``'s
patches are the slice ``[g * Cg*kh*kw, (g + 1) * Cg*kh*kw)``. Pruning's channel selection and refit
and clustering's centroid refit read layer inputs so.
"""

from __future__ import annotations

import numpy as np


def im2col(x: np.ndarray, kernel: tuple[int, int], strides, padding, dilation) -> np.ndarray:
    """``x[N, C, H, W]`` -> patches ``[N, Ho, Wo, C*kh*kw]`` in OIHW weight order."""
    kh, kw = kernel
    top, left, bottom, right = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, hp, wp = xp.shape
    ho = (hp - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (wp - dilation[1] * (kw - 1) - 1) // strides[1] + 1
    cols = np.empty((n, ho, wo, c, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            cols[..., i, j] = xp[:, :, r0:r0 + strides[0] * (ho - 1) + 1:strides[0],
                                  c0:c0 + strides[1] * (wo - 1) + 1:strides[1]].transpose(0, 2, 3, 1)
    return cols.reshape(n, ho, wo, c * kh * kw)

"""Static replacements for ops whose ONNX export depends on the input size.

Adaptive average pooling followed by a bilinear resize is linear along each axis, so per axis it is a
constant matrix. The matrices are built in numpy for the size seen at run time (cached), which makes the
eager model exact at any size and bakes plain MatMuls with constant weights into an exported graph.
"""

from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=256)
def adaptive_avg_pool_matrix(n: int, s: int) -> np.ndarray:
    """(s, n) matrix of ``AdaptiveAvgPool1d(s)``: row i averages [floor(i·n/s), ceil((i+1)·n/s))."""
    pool = np.zeros((s, n), dtype=np.float64)
    for i in range(s):
        start = (i * n) // s
        end = -((-(i + 1) * n) // s)
        pool[i, start:end] = 1.0 / (end - start)
    return pool.astype(np.float32)


@functools.lru_cache(maxsize=256)
def bilinear_resize_matrix(n_out: int, n_in: int, align_corners: bool) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D linear interpolation with PyTorch's coordinate convention."""
    resize = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        if align_corners:
            src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(np.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        resize[i, lo] += 1.0 - frac
        resize[i, hi] += frac
    return resize.astype(np.float32)


class PoolUpsample:
    """``interpolate(adaptive_avg_pool2d(x, s), size=(H, W), bilinear, align_corners=False)`` as MatMuls.

    The matrices come from numpy on every call (zero-copy, cached per size in numpy), so no tensor made
    while tracing for export is kept in the module.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def _axis(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = torch.from_numpy(adaptive_avg_pool_matrix(n, self.size))
        up = torch.from_numpy(bilinear_resize_matrix(n, self.size, align_corners=False))
        return pool.to(like.dtype), up.to(like.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.size == 1:
            return x.mean(dim=(-2, -1), keepdim=True).expand(x.shape)
        pool_h, up_h = self._axis(h, x)
        pool_w, up_w = self._axis(w, x)
        pooled = pool_h @ x @ pool_w.T
        return up_h @ pooled @ up_w.T

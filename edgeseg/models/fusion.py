"""Exact re-parameterisations used before export: BatchNorm folding, identity and parallel-kernel merging.

Modules that can be simplified implement ``reparameterize()``; :func:`fuse_model` applies it to every
module of a copy, innermost first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def running_stats(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The running mean and variance that eval mode normalises with; a BatchNorm without them cannot fold."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    return bn.running_mean, bn.running_var


@torch.no_grad()
def fold_batchnorm(conv: nn.Module, bn: nn.Module) -> nn.Conv2d:
    """A conv with bias equal to ``bn(conv(x))`` in eval mode (``torch.nn.utils.fusion``'s fold)."""
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(
            f"fold_batchnorm folds a BatchNorm2d into a Conv2d, got {type(conv).__name__} → {type(bn).__name__}"
        )
    mean, var = running_stats(bn)
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(conv.weight, conv.bias, mean, var, bn.eps, bn.weight, bn.bias)
    return fused


def fold_batchnorm_pairs(module: nn.Module, *pairs: tuple[str, str]) -> None:
    """Fold each ``(conv, norm)`` pair of ``module``'s children, named as in its checkpoint keys, in place.

    The conv becomes the folded conv and the BatchNorm an ``nn.Identity``.
    """
    for conv_name, norm_name in pairs:
        setattr(module, conv_name, fold_batchnorm(getattr(module, conv_name), getattr(module, norm_name)))
        setattr(module, norm_name, nn.Identity())


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``bn(x) = scale·x + shift`` in eval mode."""
    mean, var = running_stats(bn)
    weight = bn.weight if bn.weight is not None else torch.ones_like(var)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(mean)
    scale = weight / torch.sqrt(var + bn.eps)
    return scale, bias - mean * scale


@torch.no_grad()
def fold_input_affine(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """A 1×1 conv equal to ``conv(scale·x + shift)`` (per input channel), e.g. a preceding BatchNorm folded."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError("fold_input_affine folds into ungrouped 1×1 convs only")
    fused = copy.deepcopy(conv)
    weight = conv.weight[:, :, 0, 0]
    fused.weight = nn.Parameter((weight * scale)[:, :, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    fused.bias = nn.Parameter(bias + weight @ shift)
    return fused


@torch.no_grad()
def scale_output(conv: nn.Module, scale: torch.Tensor | float, shift: torch.Tensor | None = None) -> nn.Conv2d:
    """A conv equal to ``scale·conv(x) + shift`` (per output channel, or one ``float`` for all): folds a layer
    scale, an attention scale or a following affine."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"scale_output folds into a Conv2d, got {type(conv).__name__}")
    scale = torch.full((conv.out_channels,), scale) if isinstance(scale, float) else scale.reshape(-1)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias * scale if conv.bias is not None else torch.zeros(conv.out_channels)
    fused.bias = nn.Parameter(bias + shift if shift is not None else bias)
    return fused


@torch.no_grad()
def add_identity(conv: nn.Conv2d) -> nn.Conv2d:
    """A depthwise conv equal to ``x + conv(x)``: 1 added to the centre tap of every channel."""
    if conv.groups != conv.in_channels or conv.in_channels != conv.out_channels:
        raise ValueError("add_identity needs a depthwise conv with as many outputs as inputs")
    same = not isinstance(conv.padding, str) and all(2 * p == k - 1 for p, k in zip(conv.padding, conv.kernel_size))
    if conv.stride != (1, 1) or not same:
        raise ValueError("add_identity needs stride 1 and 'same' padding")
    fused = copy.deepcopy(conv)
    kh, kw = conv.kernel_size
    fused.weight[:, 0, kh // 2, kw // 2] += 1.0
    return fused


@torch.no_grad()
def merge_depthwise(modules: Iterable[nn.Module]) -> nn.Conv2d:
    """One depthwise conv equal to ``cat([conv_i(x_i)])`` over channel splits, smaller kernels zero-padded.

    Exact because every conv is stride 1 with 'same' padding, so centring a kernel in a larger zero kernel
    changes nothing.
    """
    convs = [_same_padded_depthwise(m) for m in modules]
    k = max(c.kernel_size[0] for c in convs)
    channels = sum(c.out_channels for c in convs)
    merged = nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, bias=True)
    weight, bias = torch.zeros_like(merged.weight), torch.zeros(channels)
    start = 0
    for conv in convs:
        n, kc = conv.out_channels, conv.kernel_size[0]
        off = (k - kc) // 2
        weight[start : start + n, :, off : off + kc, off : off + kc] = conv.weight
        if conv.bias is not None:
            bias[start : start + n] = conv.bias
        start += n
    merged.weight, merged.bias = nn.Parameter(weight), nn.Parameter(bias)
    return merged


def _same_padded_depthwise(module: nn.Module) -> nn.Conv2d:
    """``module``, checked to be a stride-1 depthwise conv with 'same' padding."""
    if not (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels == module.out_channels
        and module.stride == (1, 1)
        and module.padding[0] == module.kernel_size[0] // 2
    ):
        raise ValueError("merge_depthwise needs stride-1 depthwise convs with 'same' padding")
    return module


def fuse_model(model: nn.Module) -> nn.Module:
    """A deployment copy of ``model`` with every ``reparameterize()`` applied, in eval mode."""
    fused = copy.deepcopy(model).eval()
    for module in reversed(list(fused.modules())):
        reparameterize = getattr(module, "reparameterize", None)
        if callable(reparameterize):
            reparameterize()
    return fused


@torch.no_grad()
def split_pointwise(conv: nn.Conv2d, channels: list[int]) -> list[nn.Conv2d]:
    """1×1 convs, one per input-channel group, whose outputs sum to ``conv(cat(groups))``.

    The bias goes to the first. A 1×1 conv commutes with any per-channel linear resampling (bilinear
    upsampling included), so a head that concatenates upsampled maps and then fuses them with a 1×1 conv
    can instead fuse each map at its own, lower resolution and sum the upsampled results.
    """
    if conv.kernel_size != (1, 1) or conv.groups != 1 or sum(channels) != conv.in_channels:
        raise ValueError("split_pointwise needs an ungrouped 1×1 conv whose inputs are the given groups")
    parts = []
    for index, weight in enumerate(conv.weight.split(channels, dim=1)):
        part = nn.Conv2d(weight.shape[1], conv.out_channels, 1, bias=True)
        part.weight = nn.Parameter(weight.clone())
        bias = conv.bias if index == 0 and conv.bias is not None else torch.zeros(conv.out_channels)
        part.bias = nn.Parameter(bias.clone())
        parts.append(part)
    return parts


@torch.no_grad()
def compose_pointwise(outer: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """One 1×1 conv equal to ``outer`` applied after the per-pixel linear map ``x ↦ weight·x + bias``."""
    outer_weight = outer.weight[:, :, 0, 0]
    composed = nn.Conv2d(weight.shape[1], outer.out_channels, 1, bias=True)
    composed.weight = nn.Parameter((outer_weight @ weight)[:, :, None, None])
    outer_bias = outer.bias if outer.bias is not None else torch.zeros(outer.out_channels)
    composed.bias = nn.Parameter(outer_bias + outer_weight @ bias if bias is not None else outer_bias.clone())
    return composed


def upsample_sum(maps: list[torch.Tensor], size: torch.Size) -> torch.Tensor:
    """Sum of maps bilinearly resized (align_corners=False) to ``size``; maps already that size are not resized."""
    if not maps:
        raise ValueError("upsample_sum needs at least one map")
    total = None
    for x in maps:
        if x.shape[2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        total = x if total is None else total + x
    return cast(torch.Tensor, total)

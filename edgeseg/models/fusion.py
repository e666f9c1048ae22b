"""Exact re-parameterisations used before export: BatchNorm folding, identity and parallel-kernel merging.

Modules that can be simplified implement ``reparameterize()``; :func:`fuse_model` applies it to every
module of a copy, innermost first.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias equal to ``bn(conv(x))`` in eval mode (``torch.nn.utils.fusion``'s fold)."""
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
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
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_input_affine(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """A 1×1 conv equal to ``conv(scale·x + shift)`` (per input channel), e.g. a preceding BatchNorm folded."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError("fold_input_affine folds into ungrouped 1×1 convs only")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=True)
    weight = conv.weight[:, :, 0, 0]
    fused.weight.copy_((weight * scale)[:, :, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    fused.bias.copy_(bias + weight @ shift)
    return fused


@torch.no_grad()
def scale_output(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor | None = None) -> nn.Conv2d:
    """A conv equal to ``scale·conv(x) + shift`` (per output channel): folds a layer scale or a following affine."""
    scale = scale.reshape(-1)
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
    if conv.stride != (1, 1) or any(2 * p != k - 1 for p, k in zip(conv.padding, conv.kernel_size)):
        raise ValueError("add_identity needs stride 1 and 'same' padding")
    fused = copy.deepcopy(conv)
    kh, kw = conv.kernel_size
    fused.weight[:, 0, kh // 2, kw // 2] += 1.0
    return fused


@torch.no_grad()
def merge_depthwise(convs: list[nn.Conv2d]) -> nn.Conv2d:
    """One depthwise conv equal to ``cat([conv_i(x_i)])`` over channel splits, smaller kernels zero-padded.

    Exact because every conv is stride 1 with 'same' padding, so centring a kernel in a larger zero kernel
    changes nothing.
    """
    k = max(c.kernel_size[0] for c in convs)
    channels = sum(c.out_channels for c in convs)
    merged = nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, bias=True)
    merged.weight.zero_()
    merged.bias.zero_()
    start = 0
    for conv in convs:
        n, kc = conv.out_channels, conv.kernel_size[0]
        if conv.groups != n or conv.in_channels != n or conv.stride != (1, 1) or conv.padding[0] != kc // 2:
            raise ValueError("merge_depthwise needs stride-1 depthwise convs with 'same' padding")
        off = (k - kc) // 2
        merged.weight[start : start + n, :, off : off + kc, off : off + kc] = conv.weight
        if conv.bias is not None:
            merged.bias[start : start + n] = conv.bias
        start += n
    return merged


def fuse_model(model: nn.Module) -> nn.Module:
    """A deployment copy of ``model`` with every ``reparameterize()`` applied, in eval mode."""
    fused = copy.deepcopy(model).eval()
    for module in reversed(list(fused.modules())):
        if hasattr(module, "reparameterize"):
            module.reparameterize()
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
        part.weight.copy_(weight)
        part.bias.copy_(conv.bias if index == 0 and conv.bias is not None else torch.zeros(conv.out_channels))
        parts.append(part)
    return parts


@torch.no_grad()
def compose_pointwise(outer: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """One 1×1 conv equal to ``outer`` applied after the per-pixel linear map ``x ↦ weight·x + bias``."""
    outer_weight = outer.weight[:, :, 0, 0]
    composed = nn.Conv2d(weight.shape[1], outer.out_channels, 1, bias=True)
    composed.weight.copy_((outer_weight @ weight)[:, :, None, None])
    composed.bias.copy_(outer.bias + (outer_weight @ bias if bias is not None else 0))
    return composed


def upsample_sum(maps: list[torch.Tensor], size: torch.Size) -> torch.Tensor:
    """Sum of maps bilinearly resized (align_corners=False) to ``size``; maps already that size are not resized."""
    total = None
    for x in maps:
        if x.shape[2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        total = x if total is None else total + x
    return total

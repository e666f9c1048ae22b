"""CGRSeg (Ni et al., ECCV 2024): context-guided spatial feature reconstruction on EfficientFormerV2.

Export-friendly re-implementation of nizhenliang/CGRSeg's T/B/L models (ADE20K configs), loading the official
mmseg checkpoints unchanged. The head: pyramid pooling of the stride-8/16/32 features to stride 64,
rectangular-calibration blocks (RCM), a top-down fusion with sigmoid gating (SIM) and the Dynamic Prototype
Guided head (DPG), giving logits at stride 8. Differences from the official code, none of which change the
output:

- The pyramid pooling's ``adaptive_avg_pool2d`` to the stride-64 grid is written with constant per-axis
  pooling matrices (:func:`~edgeseg.models.static_ops.adaptive_avg_pool_matrix`): exact at every multiple of
  32, where the windows become non-uniform and overlap unless the sides are multiples of 64.
- RCA's strip pools ``AdaptiveAvgPool2d((None, 1))``/``((1, None))`` are means over one axis.
- ``reparameterize()`` folds every BatchNorm (the one after RCA's product into the following 1×1 conv), the
  RCM layer scale ``gamma`` into ``fc2``, plus the backbone's (see :mod:`edgeseg.models.efficientformerv2`).

Model card: no trained CGRSeg weights are released (only ImageNet backbones); the registered models follow
the released configs. CGRSeg-B's released config (``next_repeat=6``) has 19,114,871 parameters, not the
paper's 18.1 M (which matches ``next_repeat=5``: 18,109,975); edgeseg follows the released config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.efficientformerv2 import EfficientFormerV2
from edgeseg.models.fusion import batchnorm_affine, fold_input_affine, scale_output
from edgeseg.models.layers import ConvBNSequential, ConvNormAct
from edgeseg.models.registry import register_variants
from edgeseg.models.static_ops import adaptive_avg_pool_matrix

PPA_STRIDE = 2  # pooling to the stride-32 grid halved, i.e. stride 64
SQUARE_KERNEL = 3
MLP_RATIO = 2
RCM_LS_INIT = 1e-6


@dataclass(frozen=True)
class CGRSegConfig:
    """Backbone variant and head hyper-parameters of one released config."""

    backbone: str
    channels: int
    next_repeat: int
    band_kernel: int  # dw_size (meta RCMs) = neck_size (pyramid RCMs) in every config


VARIANTS = {
    "t": CGRSegConfig(backbone="s1", channels=128, next_repeat=5, band_kernel=11),
    "b": CGRSegConfig(backbone="s2", channels=256, next_repeat=6, band_kernel=11),
    "l": CGRSegConfig(backbone="l", channels=256, next_repeat=5, band_kernel=9),
}


class RCA(nn.Module):
    """Rectangular self-calibration attention: ``sigmoid(band convs(mean_W(x) + mean_H(x))) · dwconv3×3(x)``."""

    def __init__(self, dim: int, band_kernel: int) -> None:
        super().__init__()
        self.dwconv_hw = nn.Conv2d(dim, dim, SQUARE_KERNEL, padding=SQUARE_KERNEL // 2, groups=dim)
        self.excite = ConvBNSequential(
            nn.Conv2d(dim, dim, (1, band_kernel), padding=(0, band_kernel // 2), groups=dim),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, (band_kernel, 1), padding=(band_kernel // 2, 0), groups=dim),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strips = x.mean(dim=3, keepdim=True) + x.mean(dim=2, keepdim=True)
        return self.excite(strips) * self.dwconv_hw(x)


class ConvMlp(nn.Module):
    """1×1 → GELU → 1×1."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class RCM(nn.Module):
    """Rectangular self-calibration module: ``x + gamma · mlp(BN(RCA(x)))``."""

    def __init__(self, dim: int, band_kernel: int) -> None:
        super().__init__()
        self.token_mixer = RCA(dim, band_kernel)
        self.norm: nn.Module = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, MLP_RATIO * dim)
        self.gamma: nn.Parameter | None = nn.Parameter(torch.full((dim,), RCM_LS_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)))
        return x + (y if self.gamma is None else y * self.gamma.reshape(1, -1, 1, 1))

    def reparameterize(self) -> None:
        if isinstance(self.norm, nn.BatchNorm2d):
            self.mlp.fc1 = fold_input_affine(self.mlp.fc1, *batchnorm_affine(self.norm))
            self.norm = nn.Identity()
        if self.gamma is not None:
            self.mlp.fc2 = scale_output(self.mlp.fc2, self.gamma)
            self.gamma = None


class RCMStack(nn.Module):
    """The pyramid-context RCMs (official key ``trans.transformer_blocks``)."""

    def __init__(self, dim: int, depth: int, band_kernel: int) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(RCM(dim, band_kernel) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


def pyramid_pool(features: list[torch.Tensor]) -> torch.Tensor:
    """Official ``PyramidPoolAgg``: every feature adaptive-average-pooled to the stride-64 grid, concatenated.

    The grid is ``((H32 − 1) // 2 + 1, (W32 − 1) // 2 + 1)``; the pooling is a constant matrix per axis.
    """
    h32, w32 = features[-1].shape[2:]
    out_h, out_w = (h32 - 1) // PPA_STRIDE + 1, (w32 - 1) // PPA_STRIDE + 1
    pooled = []
    for x in features:
        pool_h = torch.from_numpy(adaptive_avg_pool_matrix(x.shape[2], out_h)).to(x.dtype)
        pool_w = torch.from_numpy(adaptive_avg_pool_matrix(x.shape[3], out_w)).to(x.dtype)
        pooled.append(pool_h @ x @ pool_w.T)
    return torch.cat(pooled, dim=1)


class SIM(nn.Module):
    """Gated fusion: ``BN(conv(local)) · resize(h_sigmoid(BN(conv(global))))`` to the local size (1×1 convs)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.fuse1 = ConvNormAct(cin, cout)
        self.fuse2 = ConvNormAct(cin, cout)

    def forward(self, local: torch.Tensor, global_context: torch.Tensor) -> torch.Tensor:
        gate = F.relu6(self.fuse2(global_context) + 3) / 6
        gate = F.interpolate(gate, size=local.shape[2:], mode="bilinear", align_corners=False)
        return self.fuse1(local) * gate


def spatial_gather(features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Class prototypes (B×C×K×1): per class, the softmax-over-positions weighted mean of the features."""
    probs = logits.flatten(2).softmax(dim=2)  # B×K×HW
    prototypes = probs @ features.flatten(2).transpose(1, 2)  # B×K×C
    return prototypes.transpose(1, 2).unsqueeze(3)


class DPGHead(nn.Module):
    """Dynamic prototype guidance: attention-pooled prototype context → per-channel sigmoid gate (B×C×1×1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.channel_mul_conv = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.LayerNorm([channels, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, prototypes: torch.Tensor) -> torch.Tensor:
        b, c, k, _ = prototypes.shape
        weights = self.conv_mask(prototypes).reshape(b, k, 1).softmax(dim=1)  # over the K classes
        context = (prototypes.reshape(b, c, k) @ weights).reshape(b, c, 1, 1)
        return torch.sigmoid(self.channel_mul_conv(context))


class CGRSegHead(nn.Module):
    """The official ``CGRSeg`` decode head on backbone outputs 1, 2, 3 (strides 8, 16, 32)."""

    def __init__(self, in_channels: tuple[int, int, int], cfg: CGRSegConfig, num_classes: int) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        channels = cfg.channels
        self.trans = RCMStack(sum(in_channels), cfg.next_repeat, cfg.band_kernel)
        self.meta = nn.ModuleList(RCM(c, cfg.band_kernel) for c in in_channels)
        self.conv = nn.ModuleList(nn.Conv2d(channels, c, 1) for c in in_channels[:-1])
        self.SIM = nn.ModuleList(SIM(c, channels) for c in in_channels)
        self.linear_fuse = ConvNormAct(channels, channels, groups=channels, act=nn.ReLU())
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.lgc = DPGHead(channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        global_context = self.trans(pyramid_pool(features)).split(self.in_channels, dim=1)
        last = len(features) - 1
        fused = self.SIM[last](self.meta[last](features[last]), global_context[last])
        for i in reversed(range(last)):
            local = features[i]
            upsampled = F.interpolate(fused, size=local.shape[2:], mode="bilinear", align_corners=False)
            local = local + self.conv[i](upsampled)
            fused = self.SIM[i](self.meta[i](local), global_context[i])
        coarse = self.conv_seg(self.linear_fuse(fused))
        gate = self.lgc(spatial_gather(fused, coarse))
        return self.conv_seg(fused * gate + fused)


class CGRSeg(nn.Module):
    """CGRSeg segmenter: ``forward(x)`` gives logits at stride 8; input sides must be multiples of 32."""

    checkpoint_ignored = (r"\.attention_biases$", r"\.attention_bias_idxs$")

    def __init__(self, variant: str, num_classes: int) -> None:
        super().__init__()
        cfg = VARIANTS[variant]
        self.backbone = EfficientFormerV2(cfg.backbone)
        self.decode_head = CGRSegHead(self.backbone.out_channels[1:], cfg, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x)[1:])


_DESCRIPTIONS = {
    "t": "CGRSeg-T (EfficientFormerV2-S1, nizhenliang/CGRSeg ADE20K config; 9.36 M params, paper 9.4 M)",
    "b": (
        "CGRSeg-B (EfficientFormerV2-S2, released ADE20K config with next_repeat=6: 19.11 M params; "
        "the paper's 18.1 M corresponds to next_repeat=5)"
    ),
    "l": "CGRSeg-L (EfficientFormerV2-L, nizhenliang/CGRSeg ADE20K config; 35.68 M params, paper 35.7 M)",
}

register_variants("cgrseg", CGRSeg, VARIANTS, _DESCRIPTIONS.__getitem__, output_stride=8)

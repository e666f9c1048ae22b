"""MSCAN (SegNeXt, Guo et al., NeurIPS 2022): the multi-scale convolutional attention encoder.

Used by U-MixFormer's MSCAN-T/S models. Module names follow mmseg-1.x's ``MSCAN`` (``patch_embed{i}``,
``block{i}.{j}.attn.spatial_gating_unit.conv{k}_{1,2}``, ``layer_scale_{1,2}``, ``norm{i}``). A stage is a
strided conv + BatchNorm (stage 1: a two-conv stem), blocks of
x + γ₁·SpatialAttention(BN(x)) and x + γ₂·ConvMlp(BN(x)), then LayerNorm over channels.

Everything is NCHW convolution; ``reparameterize()`` folds every BatchNorm and both layer scales into the
neighbouring 1×1 convs (the attention's shortcut of BN(x) becomes a per-channel scale and shift of x).
U-MixFormer-MSCAN-T's stage outputs and logits equal the official code's golden data to ≤ 1e-5
(``tests/test_umixformer.py``); MSCAN-S/B share its code and are checked by parameter count only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.fusion import batchnorm_affine, fold_input_affine, scale_output
from edgeseg.models.layers import ConvBNSequential, ConvNormAct

LN_EPS = 1e-5
LAYER_SCALE_INIT = 1e-2
STRIP_KERNELS = (7, 11, 21)  # the 1×k then k×1 depthwise branches after the 5×5 depthwise conv


@dataclass(frozen=True)
class MSCANConfig:
    """Hyper-parameters of one MSCAN variant."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    mlp_ratios: tuple[int, int, int, int]


MSCAN_VARIANTS = {
    "t": MSCANConfig((32, 64, 160, 256), (3, 3, 5, 2), (8, 8, 4, 4)),
    "s": MSCANConfig((64, 128, 320, 512), (2, 2, 4, 2), (8, 8, 4, 4)),
    "b": MSCANConfig((64, 128, 320, 512), (3, 3, 12, 3), (8, 8, 4, 4)),
}


class StemConv(nn.Module):
    """conv3×3/2 → BN → GELU → conv3×3/2 → BN (keys ``proj.{0,1,3,4}``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = ConvBNSequential(
            nn.Conv2d(cin, cout // 2, 3, 2, 1),
            nn.BatchNorm2d(cout // 2),
            nn.GELU(),
            nn.Conv2d(cout // 2, cout, 3, 2, 1),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class MultiScaleConvAttention(nn.Module):
    """5×5 depthwise conv, plus three 1×k→k×1 depthwise strips of it, summed → 1×1 conv → gate on x."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        for i, k in enumerate(STRIP_KERNELS):
            self.add_module(f"conv{i}_1", nn.Conv2d(dim, dim, (1, k), padding=(0, k // 2), groups=dim))
            self.add_module(f"conv{i}_2", nn.Conv2d(dim, dim, (k, 1), padding=(k // 2, 0), groups=dim))
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.conv0(x)
        total = attn
        for i in range(len(STRIP_KERNELS)):
            total = total + getattr(self, f"conv{i}_2")(getattr(self, f"conv{i}_1")(attn))
        return self.conv3(total) * x


class SpatialAttention(nn.Module):
    """x + proj_2(MSCA(GELU(proj_1(x)))); after fusion the shortcut is ``shortcut_scale``·x + shortcut_shift."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.spatial_gating_unit = MultiScaleConvAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(F.gelu(self.proj_1(x)))) + x


class ConvMlp(nn.Module):
    """1×1 conv → 3×3 depthwise conv → GELU → 1×1 conv."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x))))


class MSCABlock(nn.Module):
    """x + γ₁·attn(BN₁(x)); x + γ₂·mlp(BN₂(x))."""

    def __init__(self, dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, dim * mlp_ratio)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            # (1 + γ₁·s₁)·x + γ₁·t₁ is held in the depthwise 1×1 ``residual``; γ₁, γ₂ and both BNs are in the convs.
            x = self.residual(x) + self.attn.proj_2(self.attn.spatial_gating_unit(F.gelu(self.attn.proj_1(x))))
            return x + self.mlp(x)
        x = x + self.layer_scale_1[:, None, None] * self.attn(self.norm1(x))
        return x + self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        dim = self.layer_scale_1.shape[0]
        gamma1, gamma2 = self.layer_scale_1.detach(), self.layer_scale_2.detach()
        s1, t1 = batchnorm_affine(self.norm1)
        s2, t2 = batchnorm_affine(self.norm2)
        self.attn.proj_1 = fold_input_affine(self.attn.proj_1, s1, t1)
        self.attn.proj_2 = scale_output(self.attn.proj_2, gamma1, gamma1 * t1)
        self.residual = nn.Conv2d(dim, dim, 1, groups=dim, bias=False)
        self.residual.weight.copy_((1 + gamma1 * s1).reshape(-1, 1, 1, 1))
        self.mlp.fc1 = fold_input_affine(self.mlp.fc1, s2, t2)
        self.mlp.fc2 = scale_output(self.mlp.fc2, gamma2)
        del self.norm1, self.norm2, self.layer_scale_1, self.layer_scale_2
        self.fused = True


class MSCAN(nn.Module):
    """Four stages; outputs (after a channel LayerNorm) at strides 4, 8, 16 and 32."""

    def __init__(self, config: MSCANConfig) -> None:
        super().__init__()
        dims = config.embed_dims
        for i, dim in enumerate(dims):
            embed = (
                StemConv(3, dim) if i == 0 else ConvNormAct(dims[i - 1], dim, 3, 2, bias=True, names=("proj", "norm"))
            )
            self.add_module(f"patch_embed{i + 1}", embed)
            blocks = nn.ModuleList(MSCABlock(dim, config.mlp_ratios[i]) for _ in range(config.depths[i]))
            self.add_module(f"block{i + 1}", blocks)
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dim, eps=LN_EPS))
        self.out_channels = dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            norm = getattr(self, f"norm{i}")
            x = F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            x = x.permute(0, 3, 1, 2)
            features.append(x)
        return features

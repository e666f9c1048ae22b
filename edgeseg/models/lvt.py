"""LVT (Lite Vision Transformer, Yang et al., CVPR 2022) encoder, as used by U-MixFormer-LVT.

Stage 1 mixes tokens with convolutional self-attention (CSA: attention weights over each 3×3 window,
predicted from the 2×2-pooled input, applied to per-position projections of the window and folded back);
stages 2–4 use recursive atrous self-attention (RASA: queries through a shared-weight depthwise 3×3 conv at
dilations 1, 3, 5 with SiLU, summed; K/V spatially reduced; applied twice, the second time to its output
plus the input). Pre-norm blocks; the MLP is Linear–GELU–Linear in stage 1 and has a 3×3 depthwise conv
before the GELU in stages 2–4; no stage-output LayerNorm.

Export notes: the window attention is 4-D throughout (heads folded into the window axis) and the
per-position projection is one batched MatMul instead of a grouped conv on a B·h·w batch. The official
``F.unfold``/``F.fold`` pair is a depthwise conv with one-hot 3×3 kernels and its transpose (cropped to
H×W), which is exact and exports as Conv/ConvTranspose instead of Gather chains on rank-6 tensors and
``Col2Im`` (opset 18, unsupported by TensorRT). There is no golden reference data for this encoder:
numerical parity with the official code is unverified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.layers import to_image, to_tokens
from edgeseg.models.mit import multi_head_attention

LN_EPS = 1e-5
WINDOW = 3  # CSA window size (padding 1, stride 2)
CSA_STRIDE = 2
ATROUS_RATES = (1, 3, 5)
RECURSIONS = 2


@dataclass(frozen=True)
class LVTConfig:
    """Hyper-parameters of the LVT encoder."""

    embed_dims: tuple[int, int, int, int] = (64, 64, 160, 256)
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (2, 2, 5, 8)
    mlp_ratios: tuple[int, int, int, int] = (4, 8, 4, 4)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)


def window_taps(channels: int) -> torch.Tensor:
    """(C·9)×1×3×3 one-hot kernels: the grouped conv with them is ``F.unfold`` (channel-major), its transpose
    is ``F.fold``."""
    taps = WINDOW * WINDOW
    return torch.eye(taps).reshape(taps, 1, WINDOW, WINDOW).repeat(channels, 1, 1, 1)


class ConvSelfAttention(nn.Module):
    """CSA: window attention over 3×3 windows at stride 2, outputs folded back to H×W."""

    taps: torch.Tensor  # a non-persistent buffer

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        taps = WINDOW * WINDOW
        self.attn = nn.Linear(dim, taps * taps * num_heads)
        # One dim×dim projection per window position (a grouped 1×1 conv in the official code).
        self.weight = nn.Conv2d(taps * dim, taps * dim, 1, groups=taps, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("taps", window_taps(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W → B×C×H×W."""
        b, c, height, width = x.shape
        taps, heads = WINDOW * WINDOW, self.num_heads
        pooled = F.avg_pool2d(x, CSA_STRIDE, CSA_STRIDE, ceil_mode=True)  # B×C×h×w
        # Rows ordered (window, head): B × (h·w·heads) × taps_out × taps_in.
        attn = self.attn(to_tokens(pooled)).reshape(b, -1, taps, taps)
        attn = (attn * self.scale).softmax(dim=-1)
        windows = F.conv2d(x, self.taps, stride=CSA_STRIDE, padding=WINDOW // 2, groups=c)  # B×(C·taps)×h×w
        windows = windows.reshape(b, c, taps, -1).permute(0, 2, 3, 1)  # B×taps×(h·w)×C
        per_tap = self.weight.weight.reshape(taps, c, c).transpose(1, 2)  # taps×C_in×C_out
        values = (windows @ per_tap).reshape(b, taps, -1, c // heads)  # B×taps×(h·w·heads)×d
        out = attn @ values.transpose(1, 2)  # B×(h·w·heads)×taps×d
        out = out.transpose(2, 3).reshape(b, -1, c * taps).transpose(1, 2)  # B×(C·taps)×(h·w)
        out = out.reshape(b, c * taps, pooled.shape[2], pooled.shape[3])
        # Overlapping windows summed back: output size 2h×2w, cropped to H×W (as F.fold).
        folded = F.conv_transpose2d(
            out, self.taps, stride=CSA_STRIDE, padding=WINDOW // 2, output_padding=CSA_STRIDE - 1, groups=c
        )[:, :, :height, :width]
        return to_image(self.proj(to_tokens(folded)), (height, width))


class AtrousDepthwiseConv(nn.Module):
    """Σ_d SiLU(depthwise 3×3 conv at dilation d), one kernel shared by all dilations, no bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, 1, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.shape[1]
        out = F.silu(F.conv2d(x, self.weight, padding=ATROUS_RATES[0], dilation=ATROUS_RATES[0], groups=groups))
        for rate in ATROUS_RATES[1:]:
            out = out + F.silu(F.conv2d(x, self.weight, padding=rate, dilation=rate, groups=groups))
        return out


class RecursiveAtrousSelfAttention(nn.Module):
    """RASA: attention with atrous-conv queries and spatially reduced K/V, applied recursively."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.ds = AtrousDepthwiseConv(dim)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W → B×C×H×W."""
        size = (x.shape[2], x.shape[3])
        tokens = to_tokens(x)
        q = to_tokens(self.ds(to_image(self.q(tokens), size)))
        reduced = self.norm(to_tokens(self.sr(x))) if self.sr_ratio > 1 else tokens
        k, v = self.kv(reduced).chunk(2, dim=-1)
        return to_image(self.proj(multi_head_attention(q, k, v, self.num_heads)), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attention(x)
        for _ in range(RECURSIONS - 1):
            out = self.attention(out + x)
        return out


class Mlp(nn.Module):
    """Linear → [3×3 depthwise conv on the image view] → GELU → Linear (stages 2–4 have the depthwise conv)."""

    def __init__(self, dim: int, hidden: int, depthwise: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        if depthwise:
            self.depconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.depthwise = depthwise

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        hidden = self.fc1(x)
        if self.depthwise:
            hidden = to_tokens(self.depconv(to_image(hidden, size)))
        return self.fc2(F.gelu(hidden))


class LVTBlock(nn.Module):
    """Pre-norm block on B×C×H×W maps (LayerNorm over channels): x + attn(LN(x)), x + mlp(LN(x))."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: int, depthwise_mlp: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio, depthwise_mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        x = x + self.attn(to_image(self.norm1(to_tokens(x)), size))
        tokens = to_tokens(x)
        return to_image(tokens + self.mlp(self.norm2(tokens), size), size)


class PatchEmbed(nn.Module):
    """Strided conv → LayerNorm over channels."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(cout, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return to_image(self.norm(to_tokens(x)), (x.shape[2], x.shape[3]))


class LVT(nn.Module):
    """Four stages (CSA, then RASA); outputs at strides 4, 8, 16 and 32."""

    def __init__(self, config: LVTConfig | None = None) -> None:
        super().__init__()
        config = config or LVTConfig()
        dims = config.embed_dims
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(3 if i == 0 else dims[i - 1], dim, 7 if i == 0 else 3, 4 if i == 0 else 2)
            for i, dim in enumerate(dims)
        )
        stages = []
        for i, dim in enumerate(dims):
            heads, sr = config.num_heads[i], config.sr_ratios[i]
            stages.append(
                nn.ModuleList(
                    LVTBlock(
                        dim,
                        ConvSelfAttention(dim, heads) if i == 0 else RecursiveAtrousSelfAttention(dim, heads, sr),
                        config.mlp_ratios[i],
                        depthwise_mlp=i > 0,
                    )
                    for _ in range(config.depths[i])
                )
            )
        self.stages = nn.ModuleList(stages)
        self.out_channels = dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for embed, blocks in zip(self.patch_embeds, self.stages):
            x = embed(x)
            for block in cast(nn.ModuleList, blocks):
                x = block(x)
            features.append(x)
        return features

"""Swin Transformer backbone as MaskFormer's ``D2SwinTransformer`` runs it (detection-style, padded windows).

Keys are the official ones: ``patch_embed.{proj,norm}``, ``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, attn.relative_position_index, norm2, mlp.fc1, mlp.fc2}``,
``layers.{i}.downsample.{norm,reduction}`` and the output norms ``norm{i}``. Semantics of that code:

- 4×4/4 patch embedding + LayerNorm; no absolute position embedding.
- Each block: LayerNorm, then the map is zero-padded at the bottom and right to multiples of the window (7;
  Swin-B/L: 12), so padded tokens take part in the attention as keys, cyclically shifted by half a window in odd
  blocks (the shifted-window mask, −100 between tokens of different regions, is built for the padded size), window
  attention with the relative position bias, shift and padding undone, residual; then LayerNorm → MLP (GELU) →
  residual.
- Patch merging: concat of the (0,0), (1,0), (0,1), (1,1) pixels of each 2×2 cell, LayerNorm, Linear 4C→2C.
- Output i = ``norm{i}`` of stage i's last block (before merging), as a B×C×H×W map.

Export-friendly: windows are cut with reshapes and transposes of ≤ 4-D tensors (the official code uses 6-D
views), the shift mask is computed in numpy for the size seen (a constant in a static export), and the mask is
added to the bias before the scores (the same sum up to float rounding), as one 4-D tensor of the scores' shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.layers import to_tokens

PATCH = 4
MLP_RATIO = 4
MASKED = -100.0


@dataclass(frozen=True)
class SwinConfig:
    """Width of the first stage, blocks and heads per stage, window size."""

    embed_dim: int
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    window: int = 7

    @property
    def channels(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(4)]


SWIN_VARIANTS = {
    "swin-t": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin-s": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    # MaskFormer's ImageNet-22k 384² backbones: window 12
    "swin-b": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), window=12),
    "swin-l": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), window=12),
}


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into the (2·window − 1)² bias table: (dy + w − 1)·(2w − 1) + (dx + w − 1)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    relative = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return torch.from_numpy((relative[0] * (2 * window - 1) + relative[1]).astype(np.int64))


@functools.lru_cache(maxsize=64)
def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """(windows, 1, window², window²) additive mask: 0 within a region of the shifted map, −100 across regions.

    ``height``/``width`` are the padded sizes; the regions per axis are [0, n − window), [n − window, n − shift)
    and [n − shift, n).
    """

    def regions(n: int) -> np.ndarray:
        index = np.arange(n)
        return (index >= n - window).astype(np.int64) + (index >= n - shift)

    labels = regions(height)[:, None] * 3 + regions(width)[None, :]
    windows = labels.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    windows = windows.reshape(-1, window * window)
    differs = windows[:, None, :] != windows[:, :, None]
    return np.where(differs, MASKED, 0.0).astype(np.float32)[:, None]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """B×H×W×C → (B·H/w·W/w)×w²×C, windows in row-major order per image (≤ 4-D intermediates)."""
    b, h, w, c = x.shape
    x = x.reshape(b * h // window, window, w // window, window * c).transpose(1, 2)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, batch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: → B×H×W×C."""
    c = windows.shape[-1]
    x = windows.reshape(batch * height // window, width // window, window, window * c).transpose(1, 2)
    return x.reshape(batch, height, width, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window with the relative position bias (keys ``qkv``, ``proj``,
    ``relative_position_bias_table``, ``relative_position_index``)."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_bias(self) -> torch.Tensor:
        """heads × w² × w²."""
        n = self.window * self.window
        return (
            self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
            .reshape(n, n, -1)
            .permute(2, 0, 1)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` (B·windows)×w²×C; ``mask`` windows×1×w²×w² or None."""
        n, tokens, c = x.shape
        qkv = self.qkv(x)
        q, k, v = (qkv[..., i * c : (i + 1) * c].reshape(n, tokens, self.heads, -1).transpose(1, 2) for i in range(3))
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        bias = self.relative_bias()
        if mask is not None:  # windows × heads × w² × w², repeated for every image of the batch
            bias = (bias + mask).repeat(n // mask.shape[0], 1, 1, 1)
        scores = scores + bias
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2)
        return self.proj(out.reshape(n, tokens, c))


class Mlp(nn.Module):
    """``fc1`` → GELU → ``fc2``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, MLP_RATIO * dim)
        self.fc2 = nn.Linear(MLP_RATIO * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """One (shifted-)window block on B×(H·W)×C tokens."""

    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        (h, w), ws, b, c = size, self.window, x.shape[0], x.shape[2]
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        y = F.pad(self.norm1(x).reshape(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
        mask = None
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = torch.from_numpy(shifted_window_mask(hp, wp, ws, self.shift)).to(x.device, x.dtype)
        y = window_reverse(self.attn(window_partition(y, ws), mask), ws, b, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y[:, :h, :w, :].reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2×2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)), ``norm``, ``reduction`` 4C→2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        (h, w), b, c = size, x.shape[0], x.shape[2]
        y = F.pad(x.reshape(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        y = torch.cat([y[:, 0::2, 0::2], y[:, 1::2, 0::2], y[:, 0::2, 1::2], y[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(y.reshape(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``blocks`` (shift in every second block) and the optional ``downsample``."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(the last block's output, the next stage's input, its size)."""
        for block in self.blocks:
            x = block(x, size)
        if self.downsample is None:
            return x, x, size
        return x, self.downsample(x, size), ((size[0] + 1) // 2, (size[1] + 1) // 2)


class PatchEmbed(nn.Module):
    """4×4/4 conv ``proj`` and LayerNorm ``norm``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, PATCH)
        self.norm = nn.LayerNorm(dim)


class SwinBackbone(nn.Module):
    """``forward(x)`` gives the four normed stage outputs at strides 4, 8, 16, 32 (res2..res5)."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.out_channels = config.channels
        self.patch_embed = PatchEmbed(config.embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(dim, depth, heads, config.window, downsample=i < 3)
            for i, (dim, depth, heads) in enumerate(zip(config.channels, config.depths, config.heads))
        )
        for i, dim in enumerate(config.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[2] % PATCH or x.shape[3] % PATCH:
            raise ValueError(f"Swin needs input sides that are multiples of {PATCH}, got {x.shape[2]}x{x.shape[3]}")
        x = self.patch_embed.proj(x)
        size = (x.shape[2], x.shape[3])
        x = self.patch_embed.norm(to_tokens(x))
        features = []
        for i, stage in enumerate(self.layers):
            out, x, next_size = stage(x, size)
            out = getattr(self, f"norm{i}")(out)
            features.append(out.transpose(1, 2).reshape(out.shape[0], -1, size[0], size[1]))
            size = next_size
        return features

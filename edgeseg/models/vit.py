"""Plain ViT/16 encoder (Dosovitskiy et al.; DeiT dims) as SETR's official ``VisionTransformer`` names it.

Keys: ``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/
mlp.fc2``, as in timm/DeiT ImageNet checkpoints and fudan-zvg/SETR. Pre-norm blocks, LayerNorm eps 1e-6, qkv
bias, MLP 4× with exact (erf) GELU, no final norm (SETR's heads normalise the tokens they use).

Position embedding: the parameter holds the cls row and a square grid of patch rows, whatever grid the
checkpoint was saved at (:meth:`VisionTransformer.adopt_position_grid`). For an input whose patch grid differs,
the grid is resized bilinearly (align_corners False) and the cls row kept, as SETR's load-time
``load_pretrained(pos_embed_interp=True)`` does once; here it happens in the forward, so the eager model runs at
any multiple of 16 (square or not) and a static export folds it into one constant for the bundle's size.

Export notes: the patch grid is passed explicitly (no √N), the cls token is a static slice, attention is
B×heads×N×d MatMul/Softmax (≤ 4-D, no einsum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.checkpoint import CheckpointError
from edgeseg.models.layers import to_image, to_tokens
from edgeseg.models.mit import multi_head_attention

PATCH = 16
LAYERNORM_EPS = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    """Width, depth and heads of one ViT/16 size."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: int = 4


VIT_VARIANTS = {
    "tiny": ViTConfig(192, 12, 3),  # DeiT-Ti
    "small": ViTConfig(384, 12, 6),  # DeiT-S
    "base": ViTConfig(768, 12, 12),  # ViT-B / DeiT-B
    "large": ViTConfig(1024, 24, 16),  # ViT-L
}


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` Linear (rows q, k, v; head-major) and ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(multi_head_attention(q, k, v, self.num_heads))


class Mlp(nn.Module):
    """fc1 → GELU (erf) → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.attn = Attention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.mlp = Mlp(dim, dim * config.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """16×16 stride-16 conv (key ``proj``); returns tokens and the patch grid (rows, cols)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, PATCH)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return to_tokens(x), (x.shape[2], x.shape[3])


def position_grid_side(rows: int) -> int:
    """Side g of the square patch grid in a position table of ``rows`` = 1 + g² (cls) or 2 + g² (DeiT cls + dist)."""
    side = math.isqrt(max(rows - 1, 0))
    if side < 1 or rows - 1 - side * side not in (0, 1):
        raise CheckpointError(
            f"a position embedding of {rows} rows is not a cls row (plus a DeiT distillation row) and a square "
            "grid of patches; this is not a ViT/16 checkpoint SETR can use"
        )
    return side


class VisionTransformer(nn.Module):
    """ViT/16 encoder: patch embed, cls token, position embedding, blocks; no final norm.

    ``grid_side`` is the square patch grid the position table is built for (32 = SETR's 512² configs); a
    checkpoint's table replaces it whatever its size.
    """

    def __init__(self, config: ViTConfig, grid_side: int = 32) -> None:
        super().__init__()
        dim = config.embed_dim
        self.config = config
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid_side * grid_side, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))

    @property
    def position_grid(self) -> tuple[int, int]:
        side = position_grid_side(self.pos_embed.shape[1])
        return side, side

    def adopt_position_grid(self, pos_embed: torch.Tensor) -> torch.Tensor:
        """Resize this model's table to ``pos_embed``'s grid (so a strict load fits); returns the table to load.

        A DeiT-distilled table (cls, dist, grid) keeps the cls row and the grid, as SETR's loader does.
        """
        if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[2] != self.pos_embed.shape[2]:
            raise CheckpointError(
                f"pos_embed of shape {tuple(pos_embed.shape)} does not fit a ViT of width {self.pos_embed.shape[2]}; "
                "check the model size (tiny/small/base/large)"
            )
        side = position_grid_side(pos_embed.shape[1])
        table = torch.cat([pos_embed[:, :1], pos_embed[:, -side * side :]], dim=1)
        if table.shape != self.pos_embed.shape:
            self.pos_embed = nn.Parameter(torch.zeros_like(table))
        return table

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The table for a ``grid`` of patches: stored grid bilinearly resized (align_corners False), cls row kept."""
        stored = self.position_grid
        if tuple(grid) == stored:
            return self.pos_embed
        image = to_image(self.pos_embed[:, 1:], stored)
        resized = F.interpolate(image, size=grid, mode="bilinear", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], to_tokens(resized)], dim=1)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens with the cls token first, position embedding added; and the patch grid."""
        tokens, grid = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.position_embedding(grid), grid

    def run_blocks(self, tokens: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """The outputs of the blocks numbered in ``taps`` (0-based); blocks after the last tap are not run."""
        outputs = []
        for index, block in enumerate(self.blocks[: max(taps) + 1]):
            tokens = block(tokens)
            if index in taps:
                outputs.append(tokens)
        return outputs


def is_imagenet_vit(state: dict[str, torch.Tensor]) -> bool:
    """True for a bare timm/DeiT ImageNet ViT state dict (``blocks.0.attn.qkv.weight`` at the top level)."""
    return "blocks.0.attn.qkv.weight" in state


# The ImageNet classifier of timm/DeiT ViTs (final norm, heads, DeiT's distillation token), once under "backbone.".
IMAGENET_CLASSIFIER_KEYS = (
    r"^backbone\.(norm|fc_norm|head|head_dist|pre_logits)\.",
    r"^backbone\.dist_token$",
)

"""EfficientFormerV2 (Li et al., ICCV 2023) S1/S2/L as a 4-stage dense-prediction backbone (``fork_feat``).

Export-friendly re-implementation of the segmentation backbone used by CGRSeg (``efficientformerv2_*_feat``),
loading its checkpoints unchanged. Differences from the official code, none of which change the output:

- Attention biases: the official model caches the gathered bias table when ``eval()`` is called (stale if
  weights are loaded afterwards) and resizes it with bicubic ``F.interpolate`` on every forward. Here the
  un-fused model gathers it on every forward (never stale) and resizes it the same way when the token grid
  differs from the 16×16 grid of ``resolution=512``. After ``reparameterize()`` the table is frozen and the
  resized bias is computed once per token grid outside any tracing, so an exported graph holds it as a
  constant (no Gather or Resize of the tables).
- ``reparameterize()`` folds every BatchNorm, the layer scales into the preceding 1×1 conv, the attention
  scale into the query conv, and the downsampling query's stride-2 pooling into its depthwise conv.
- DropPath is not built: edgeseg runs these models in eval mode only.

Module attribute names follow the official ones so that checkpoint keys match without a key map. The
official ``attention_biases``/``attention_bias_idxs`` buffers (7×7 ImageNet tables) are never used by the
segmentation forward and are not built; their checkpoint keys are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from edgeseg.models.fusion import fold_batchnorm_pairs, scale_output
from edgeseg.models.layers import ConvBNSequential, ConvNormAct

# The official constructor default (configs never change it): bias tables are sized for 512×512 inputs.
TABLE_RESOLUTION = 512
INPUT_MULTIPLE = 32
NUM_HEADS = 8
ATTN_RATIO = 4
ATTN_KEY_DIM = 32
DOWNSAMPLE_KEY_DIM = 16
LAYER_SCALE_INIT = 1e-5


@dataclass(frozen=True)
class BackboneConfig:
    """Widths, depths, attention blocks per stage and per-block MLP expansion ratios."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    vit_num: int
    expansion_ratios: tuple[tuple[int, ...], ...]


VARIANTS = {
    "s1": BackboneConfig(
        embed_dims=(32, 48, 120, 224),
        depths=(3, 3, 9, 6),
        vit_num=2,
        expansion_ratios=((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)),
    ),
    "s2": BackboneConfig(
        embed_dims=(32, 64, 144, 288),
        depths=(4, 4, 12, 8),
        vit_num=4,
        expansion_ratios=(
            (4, 4, 4, 4),
            (4, 4, 4, 4),
            (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
            (4, 4, 3, 3, 3, 3, 4, 4),
        ),
    ),
    "l": BackboneConfig(
        embed_dims=(40, 80, 192, 384),
        depths=(5, 5, 15, 10),
        vit_num=6,
        expansion_ratios=(
            (4, 4, 4, 4, 4),
            (4, 4, 4, 4, 4),
            (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
            (4, 4, 4, 3, 3, 3, 3, 4, 4, 4),
        ),
    ),
}


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> ConvNormAct:
    """Conv (with bias, 'same'-style padding) → BatchNorm, keys ``0``/``1``."""
    return ConvNormAct(cin, cout, kernel, stride, groups=groups, bias=True, names=("0", "1"))


def attention_bias_index(grid: int) -> torch.Tensor:
    """(N, N) table index of offset (|Δy|, |Δx|) between tokens of a grid×grid map (N = grid²)."""
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None]).abs() * grid + (xs[:, None] - xs[None]).abs()


def downsample_bias_index(query_grid: int) -> torch.Tensor:
    """(Nq, Nk) table index of offset (|2·qy − ky|, |2·qx − kx|): query grid g, key grid 2g."""
    key_grid = 2 * query_grid
    qy, qx = torch.meshgrid(torch.arange(query_grid), torch.arange(query_grid), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(key_grid), torch.arange(key_grid), indexing="ij")
    dy = (2 * qy.flatten()[:, None] - ky.flatten()[None]).abs()
    dx = (2 * qx.flatten()[:, None] - kx.flatten()[None]).abs()
    return dy * key_grid + dx


def resize_bias(table: torch.Tensor, num_queries: int, num_keys: int) -> torch.Tensor:
    """The official resize of a (heads, Nq0, Nk0) bias to (heads, Nq, Nk): bicubic, align_corners=False.

    It resizes in flattened token-index space; at the table's own size it is the identity and is skipped.
    """
    if table.shape[1:] == (num_queries, num_keys):
        return table
    return F.interpolate(table[None], size=(num_queries, num_keys), mode="bicubic", align_corners=False)[0]


class RelativeBiasAttention(nn.Module):
    """Holds an attention-bias table (``attention_biases_seg`` gathered by ``attention_bias_idxs_seg``)."""

    attention_bias_idxs_seg: torch.Tensor  # a buffer

    def __init__(self, num_heads: int, index: torch.Tensor) -> None:
        super().__init__()
        self.attention_biases_seg = nn.Parameter(torch.zeros(num_heads, int(index.max()) + 1))
        self.register_buffer("attention_bias_idxs_seg", index)
        self.frozen_bias: torch.Tensor | None = None
        self.bias_cache: dict[tuple[int, int], torch.Tensor] = {}

    def attention_bias(self, num_queries: int, num_keys: int) -> torch.Tensor:
        """(heads, Nq, Nk) bias for the current token counts (Python ints)."""
        if self.frozen_bias is None:
            table = self.attention_biases_seg[:, self.attention_bias_idxs_seg]
            return resize_bias(table, num_queries, num_keys)
        key = (num_queries, num_keys)
        if key not in self.bias_cache:
            # Eager even while torch.export traces the forward: the result is a constant of the graph.
            with _disable_current_modes(), torch.no_grad():
                self.bias_cache[key] = resize_bias(self.frozen_bias, num_queries, num_keys)
        return self.bias_cache[key]

    def freeze_bias(self) -> None:
        """Replace the trainable table by its gathered constant (deployment copies only)."""
        with torch.no_grad():
            self.frozen_bias = self.attention_biases_seg[:, self.attention_bias_idxs_seg].detach().clone()
        del self.attention_biases_seg
        del self.attention_bias_idxs_seg
        self.bias_cache = {}


class Attention4D(RelativeBiasAttention):
    """Multi-head self-attention with talking heads, a local value branch and relative position biases.

    With ``stride=2`` (stage 3) the tokens first go through a stride-2 depthwise conv and the output is
    upsampled ×2 (bilinear) before the projection.
    """

    def __init__(self, dim: int, resolution: int, stride: int | None) -> None:
        grid = math.ceil(resolution / stride) if stride else resolution
        super().__init__(NUM_HEADS, attention_bias_index(grid))
        self.num_heads = NUM_HEADS
        self.key_dim = ATTN_KEY_DIM
        self.head_dim = ATTN_RATIO * ATTN_KEY_DIM
        self.dh = self.head_dim * NUM_HEADS
        self.scale = ATTN_KEY_DIM**-0.5
        self.stride_conv = conv_bn(dim, dim, 3, stride, groups=dim) if stride else None
        self.upsample_factor = stride
        self.q = conv_bn(dim, ATTN_KEY_DIM * NUM_HEADS)
        self.k = conv_bn(dim, ATTN_KEY_DIM * NUM_HEADS)
        self.v = conv_bn(dim, self.dh)
        self.v_local = conv_bn(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(NUM_HEADS, NUM_HEADS, 1)
        self.talking_head2 = nn.Conv2d(NUM_HEADS, NUM_HEADS, 1)
        self.proj = ConvBNSequential(nn.GELU(), nn.Conv2d(self.dh, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        b, _, h, w = x.shape
        n = h * w
        q = self.q(x).reshape(b, self.num_heads, self.key_dim, n).transpose(2, 3)
        k = self.k(x).reshape(b, self.num_heads, self.key_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, self.num_heads, self.head_dim, n).transpose(2, 3)
        attn = (q @ k) * self.scale + self.attention_bias(n, n)
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        out = (attn @ v).transpose(2, 3).reshape(b, self.dh, h, w) + v_local
        if self.upsample_factor:
            out = F.interpolate(out, scale_factor=self.upsample_factor, mode="bilinear", align_corners=False)
        return self.proj(out)

    def reparameterize(self) -> None:
        self.q[0] = scale_output(self.q[0], self.scale)
        self.scale = 1.0
        self.freeze_bias()


class LGQuery(nn.Module):
    """Downsampling query: depthwise 3×3 stride-2 conv plus the stride-2 subsampled input, then 1×1 + BN."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(dim, dim, 3, 2, 1, groups=dim))
        self.proj = conv_bn(dim, out_dim)
        self.subsample_merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.local(x)
        if not self.subsample_merged:
            q = q + x[:, :, ::2, ::2]  # the official AvgPool2d(kernel 1, stride 2)
        return self.proj(q)

    @torch.no_grad()
    def reparameterize(self) -> None:
        # With padding 1 and stride 2 the centre tap of output (i, j) reads x[2i, 2j]: the subsampling.
        cast(nn.Conv2d, self.local[0]).weight[:, 0, 1, 1] += 1.0
        self.subsample_merged = True


class Attention4DDownsample(RelativeBiasAttention):
    """Stride-2 attention: queries on the half-resolution grid attend to all full-resolution tokens."""

    def __init__(self, dim: int, out_dim: int, resolution: int) -> None:
        super().__init__(NUM_HEADS, downsample_bias_index(math.ceil(resolution / 2)))
        self.num_heads = NUM_HEADS
        self.key_dim = DOWNSAMPLE_KEY_DIM
        self.head_dim = ATTN_RATIO * DOWNSAMPLE_KEY_DIM
        self.dh = self.head_dim * NUM_HEADS
        self.scale = DOWNSAMPLE_KEY_DIM**-0.5
        self.q = LGQuery(dim, DOWNSAMPLE_KEY_DIM * NUM_HEADS)
        self.k = conv_bn(dim, DOWNSAMPLE_KEY_DIM * NUM_HEADS)
        self.v = conv_bn(dim, self.dh)
        self.v_local = conv_bn(self.dh, self.dh, 3, 2, groups=self.dh)
        self.proj = ConvBNSequential(nn.GELU(), nn.Conv2d(self.dh, out_dim, 1), nn.BatchNorm2d(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.q(x)
        hq, wq = q.shape[2:]
        nq, nk = hq * wq, h * w
        q = q.reshape(b, self.num_heads, self.key_dim, nq).transpose(2, 3)
        k = self.k(x).reshape(b, self.num_heads, self.key_dim, nk)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, self.num_heads, self.head_dim, nk).transpose(2, 3)
        attn = ((q @ k) * self.scale + self.attention_bias(nq, nk)).softmax(dim=-1)
        out = (attn @ v).transpose(2, 3).reshape(b, self.dh, hq, wq) + v_local
        return self.proj(out)

    def reparameterize(self) -> None:
        self.q.proj[0] = scale_output(self.q.proj[0], self.scale)
        self.scale = 1.0
        self.freeze_bias()


class Mlp(nn.Module):
    """1×1 → BN → GELU → depthwise 3×3 → BN → GELU → 1×1 → BN."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.mid = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.mid_norm = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.fc1(x)))
        x = F.gelu(self.mid_norm(self.mid(x)))
        return self.norm2(self.fc2(x))

    def reparameterize(self) -> None:
        fold_batchnorm_pairs(self, ("fc1", "norm1"), ("mid", "mid_norm"), ("fc2", "norm2"))


class FFN(nn.Module):
    """``x + layer_scale_2 · mlp(x)``."""

    def __init__(self, dim: int, expansion: int) -> None:
        super().__init__()
        self.mlp = Mlp(dim, dim * expansion)
        self.layer_scale_2: nn.Parameter | None = nn.Parameter(torch.full((dim, 1, 1), LAYER_SCALE_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(x)
        return x + (y if self.layer_scale_2 is None else self.layer_scale_2 * y)

    def reparameterize(self) -> None:
        if self.layer_scale_2 is not None:
            self.mlp.fc2 = scale_output(self.mlp.fc2, self.layer_scale_2)
            self.layer_scale_2 = None


class AttnFFN(FFN):
    """``x + layer_scale_1 · attention(x)`` followed by the FFN."""

    def __init__(self, dim: int, expansion: int, resolution: int, stride: int | None) -> None:
        super().__init__(dim, expansion)
        self.token_mixer = Attention4D(dim, resolution, stride)
        self.layer_scale_1: nn.Parameter | None = nn.Parameter(torch.full((dim, 1, 1), LAYER_SCALE_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.token_mixer(x)
        x = x + (y if self.layer_scale_1 is None else self.layer_scale_1 * y)
        return super().forward(x)

    def reparameterize(self) -> None:
        if self.layer_scale_1 is not None:
            self.token_mixer.proj[1] = scale_output(self.token_mixer.proj[1], self.layer_scale_1)
            self.layer_scale_1 = None
        super().reparameterize()


class AttentionEmbedding(nn.Module):
    """Stride-2 downsampling into the last stage: ``Attention4DDownsample(x) + BN(conv3×3 s2(x))``."""

    def __init__(self, dim: int, out_dim: int, resolution: int) -> None:
        super().__init__()
        self.attn = Attention4DDownsample(dim, out_dim, resolution)
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.bn = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x) + self.bn(self.conv(x))

    def reparameterize(self) -> None:
        fold_batchnorm_pairs(self, ("conv", "bn"))


def embedding(dim: int, out_dim: int) -> ConvNormAct:
    """Stride-2 downsampling between stages: conv 3×3 → BN (keys ``proj``/``norm``)."""
    return ConvNormAct(dim, out_dim, 3, 2, bias=True, names=("proj", "norm"))


def build_stage(cfg: BackboneConfig, index: int) -> nn.Sequential:
    """Blocks of stage ``index``; the last ``vit_num`` blocks of stages 2 and 3 carry attention."""
    dim, depth = cfg.embed_dims[index], cfg.depths[index]
    resolution = math.ceil(TABLE_RESOLUTION / 2 ** (index + 2))
    blocks: list[nn.Module] = []
    for j, expansion in enumerate(cfg.expansion_ratios[index]):
        if index >= 2 and j >= depth - cfg.vit_num:
            blocks.append(AttnFFN(dim, expansion, resolution, stride=2 if index == 2 else None))
        else:
            blocks.append(FFN(dim, expansion))
    return nn.Sequential(*blocks)


class EfficientFormerV2(nn.Module):
    """Stem and four stages; ``forward`` returns the stage outputs at strides 4, 8, 16 and 32.

    Input sides must be multiples of 32 (the official stride-2 attention paths need it).
    """

    def __init__(self, variant: str) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientFormerV2 variant {variant!r}; choose one of {sorted(VARIANTS)}")
        cfg = VARIANTS[variant]
        dims = cfg.embed_dims
        self.patch_embed = ConvBNSequential(
            nn.Conv2d(3, dims[0] // 2, 3, 2, 1),
            nn.BatchNorm2d(dims[0] // 2),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, 2, 1),
            nn.BatchNorm2d(dims[0]),
            nn.GELU(),
        )
        down_resolution = math.ceil(TABLE_RESOLUTION / 16)
        self.network = nn.ModuleList(
            [
                build_stage(cfg, 0),
                embedding(dims[0], dims[1]),
                build_stage(cfg, 1),
                embedding(dims[1], dims[2]),
                build_stage(cfg, 2),
                AttentionEmbedding(dims[2], dims[3], down_resolution),
                build_stage(cfg, 3),
            ]
        )
        self.out_channels = dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[2:]
        if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
            raise ValueError(
                f"EfficientFormerV2 needs input sides that are multiples of {INPUT_MULTIPLE}, got {h}×{w}; "
                f"pad the image (the official test pipeline pads to size_divisor={INPUT_MULTIPLE})"
            )
        x = self.patch_embed(x)
        features = []
        for i, layer in enumerate(self.network):
            x = layer(x)
            if i % 2 == 0:
                features.append(x)
        return features

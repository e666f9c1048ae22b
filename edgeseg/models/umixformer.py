"""U-MixFormer (Yeom & von Klitzing, 2023): a UNet-like mix-attention decoder on a MiT, MSCAN or LVT encoder.

Export-friendly re-implementation of julian-klitzing/u-mixformer's ``APFormerHead2`` (ADE20K configs) on
the mmseg-1.x ``MixVisionTransformer``, loading the official checkpoints unchanged (their mmseg-1.x
backbone keys are mapped onto :mod:`edgeseg.models.mit`'s layout by ``remap_checkpoint``).

The decoder runs top-down (c4 first). Stage i's queries are the encoder tokens c_i; its keys/values are
the ``CatKey`` of the four maps at stride 32 (the decoded outputs so far, then the encoder maps): the
stride-32 map as is, the others ``AvgPool2d(r, r, ceil_mode=True)`` → 1×1 conv, concatenated on channels.
The official quirks are kept because the checkpoints were trained with them:

- the decoder block takes its residuals *after* the norms: x = LN1(x); y = LN2(y); x = x + attn(x, y);
  x = LN3(x); x = x + MixFFN(x) (LayerNorm eps 1e-5);
- the cross-attention's kv Linear reads GELU(y); its own ``norm``/``sr``/``pool`` are never used (the
  norm's result is discarded). They are not built and their checkpoint keys are ignored, with
  ``BaseDecodeHead.conv_seg``;
- q and kv have no bias, proj has one.

``reparameterize()`` folds the ``linear_fuse`` BatchNorm into its conv.

The same decoder also runs on U-MixFormer's other encoders, MSCAN-T/S (:mod:`edgeseg.models.mscan`) and
LVT (:mod:`edgeseg.models.lvt`); there is no golden data for those, so only their parameter counts (equal
to the official ones) and export are checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.fusion import split_pointwise, upsample_sum
from edgeseg.models.layers import ConvNormAct, EncoderDecoder, to_image, to_tokens
from edgeseg.models.lvt import LVT
from edgeseg.models.mit import (
    MIT_VARIANTS,
    MMSEG_EPS,
    MixFFN,
    MixVisionTransformer,
    mmseg_to_nvlabs,
    multi_head_attention,
)
from edgeseg.models.mscan import MSCAN, MSCAN_VARIANTS
from edgeseg.models.registry import register_variants

DECODER_HEADS = (8, 5, 2, 1)  # stages c4, c3, c2, c1
POOL_RATIOS = (1, 2, 4, 8)  # CatKey inputs at strides 32, 16, 8, 4
DECODER_LN_EPS = 1e-5
DECODER_MLP_RATIO = 4


@dataclass(frozen=True)
class UMixFormerConfig:
    """The encoder (built by ``encoder()``), the decoder's fused embedding dim and the encoder's description."""

    encoder: Callable[[], MixVisionTransformer | MSCAN | LVT]
    embed_dim: int
    encoder_name: str


VARIANTS = {
    "b0": UMixFormerConfig(lambda: MixVisionTransformer(MIT_VARIANTS["b0"], eps=MMSEG_EPS), 128, "a MiT-B0 encoder"),
    "b1": UMixFormerConfig(lambda: MixVisionTransformer(MIT_VARIANTS["b1"], eps=MMSEG_EPS), 128, "a MiT-B1 encoder"),
    "b2": UMixFormerConfig(lambda: MixVisionTransformer(MIT_VARIANTS["b2"], eps=MMSEG_EPS), 768, "a MiT-B2 encoder"),
    "mscan-t": UMixFormerConfig(lambda: MSCAN(MSCAN_VARIANTS["t"]), 128, "an MSCAN-T (SegNeXt) encoder"),
    "mscan-s": UMixFormerConfig(lambda: MSCAN(MSCAN_VARIANTS["s"]), 128, "an MSCAN-S (SegNeXt) encoder"),
    "lvt": UMixFormerConfig(LVT, 128, "an LVT encoder"),
}


class CatKey(nn.Module):
    """Four maps (strides 32, 16, 8, 4) → pooled to stride 32, 1×1 conv (all but the first) → concat tokens."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.sr_list = nn.ModuleList(nn.Conv2d(c, c, 1) for c in channels[1:])

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        pooled = [maps[0]]
        for conv, ratio, x in zip(self.sr_list, POOL_RATIOS[1:], maps[1:]):
            pooled.append(conv(F.avg_pool2d(x, ratio, ratio, ceil_mode=True)))
        return to_tokens(torch.cat(pooled, dim=1))


class CrossAttention(nn.Module):
    """Queries from x, keys/values from GELU(y) (bias-free q/kv Linear), output projection with bias."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(kv_dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(F.gelu(y)).chunk(2, dim=-1)  # weight rows [0:C] are K, [C:2C] are V
        return self.proj(multi_head_attention(self.q(x), k, v, self.num_heads))


class MixAttentionBlock(nn.Module):
    """The decoder block with residuals after the norms (official ``Block``)."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=DECODER_LN_EPS)
        self.norm2 = nn.LayerNorm(kv_dim, eps=DECODER_LN_EPS)
        self.attn = CrossAttention(dim, kv_dim, num_heads)
        self.norm3 = nn.LayerNorm(dim, eps=DECODER_LN_EPS)
        self.mlp = MixFFN(dim, dim * DECODER_MLP_RATIO)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W queries, y: B×N×kv_dim keys/values → B×C×H×W."""
        size = (x.shape[2], x.shape[3])
        x = self.norm1(to_tokens(x))
        x = x + self.attn(x, self.norm2(y))
        x = self.norm3(x)
        return to_image(x + self.mlp(x, size), size)


class UMixFormerHead(nn.Module):
    """Top-down mix-attention decoder (official ``APFormerHead2``), logits at stride 4.

    :meth:`reparameterize` splits the fuse conv (BatchNorm folded) per decoded map, so each map is fused at
    its own resolution and the upsampled results are summed: exact, without the kv_dim→E conv at stride 4.
    """

    def __init__(self, in_channels: tuple[int, ...], embed_dim: int, num_classes: int) -> None:
        super().__init__()
        kv_dim = sum(in_channels)
        top_down = tuple(reversed(in_channels))  # c4, c3, c2, c1
        for stage, dim, heads in zip(range(4, 0, -1), top_down, DECODER_HEADS):
            self.add_module(f"attn_c{stage}", MixAttentionBlock(dim, kv_dim, heads))
        for index in range(1, 5):
            self.add_module(f"cat_key{index}", CatKey(top_down))
        self.linear_fuse = ConvNormAct(kv_dim, embed_dim, act=nn.ReLU())
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        self.decoded_channels = list(top_down)
        self.branches: nn.ModuleList | None = None

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        encoded = list(reversed(features))  # c4, c3, c2, c1
        decoded: list[torch.Tensor] = []
        for index in range(4):
            keys = getattr(self, f"cat_key{index + 1}")(decoded + encoded[index:])
            decoded.append(getattr(self, f"attn_c{4 - index}")(encoded[index], keys))
        size = features[0].shape[2:]
        if self.branches is not None:
            fused = upsample_sum([branch(x) for branch, x in zip(self.branches, decoded)], size)
            return self.linear_pred(F.relu(fused))
        resized = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in decoded[:3]]
        return self.linear_pred(self.linear_fuse(torch.cat([*resized, decoded[3]], dim=1)))

    def reparameterize(self) -> None:
        self.branches = nn.ModuleList(split_pointwise(self.linear_fuse.folded_conv(), self.decoded_channels))
        del self.linear_fuse


class UMixFormer(EncoderDecoder):
    """U-MixFormer segmenter (MiT, MSCAN or LVT encoder): ``forward(x)`` gives logits at stride 4."""

    checkpoint_ignored = (r"^decode_head\.conv_seg\.", r"^decode_head\.attn_c\d\.attn\.(sr|norm)\.")

    def __init__(self, variant: str, num_classes: int) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown U-MixFormer variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        cfg = VARIANTS[variant]
        self.backbone = cfg.encoder()
        self.decode_head = UMixFormerHead(self.backbone.out_channels, cfg.embed_dim, num_classes)

    def remap_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official MiT checkpoints hold mmseg-1.x backbone keys; map them onto the NVlabs-named modules."""
        if isinstance(self.backbone, MixVisionTransformer):
            return mmseg_to_nvlabs(state, prefix="backbone.")
        return state


register_variants(
    "umixformer",
    UMixFormer,
    VARIANTS,
    lambda variant: f"U-MixFormer with {VARIANTS[variant].encoder_name} (julian-klitzing/u-mixformer)",
    output_stride=4,
    dynamic_resolution=True,
)

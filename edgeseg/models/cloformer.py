"""CloFormer (Fan et al., 2023): AttnConv local context plus pooled global attention, in Clo blocks.

Export-friendly re-implementation of qhfan/CloFormer's XXS/XS/S ImageNet classifiers, loading the
official checkpoints unchanged (module attribute names follow the official ones). Differences from the
official code, none of which change the output:

- Every tensor is at most 4-D: q/k/v and k/v are channel chunks followed by 4-D reshapes instead of the
  official 5-D reshape/transpose/unpack, and the pooled key/value length comes from the pooled tensor, so
  the global branch runs at any input size (the official code needs multiples of 32).
- ``GroupNorm(1, C)`` (statistics over C, H, W jointly) is written with ReduceMeans (over H, W, then C),
  which ONNX Runtime and OpenVINO run to float32 rounding, instead of the Reshape → InstanceNormalization
  → Reshape export.
- Swish is ``x·sigmoid(x)`` (the official ``MemoryEfficientSwish`` is an autograd.Function); the
  official ``SyncBatchNorm`` is ``BatchNorm2d`` (same keys, same eval behaviour).
- ``reparameterize()`` (see :func:`~edgeseg.models.fusion.fuse_model`) folds every BatchNorm, the AttnConv
  gate scale ``d^-0.5`` and the affine part of every GroupNorm that feeds 1×1 convs only. The XXS/XS/S
  configs have one local kernel size per stage, so there are no parallel depthwise branches to merge.

The official repository has no segmentation model. ``cloformer-{xxs,xs,s}-seg`` are edgeseg's own: the
CloFormer backbone tapped at strides 4 (stem), 8, 16 and 32 (``layers[0]``, ``layers[1]``, ``layers[3]``)
with a SegFormer-style all-MLP head: per-tap 1×1 conv to E channels, bilinear upsampling to stride 4
(``align_corners=False``), concatenation, 1×1 conv + BatchNorm + ReLU, dropout and a 1×1 classifier
(logits at stride 4). E = 128 for XXS/XS and 256 for S keeps the head below half the backbone's cost
(at 512×512, 150 classes: 1.5 GMACs on 3.9 for XXS, 1.6 on 7.0 for XS, 5.4 on 12.1 for S; fused 0.4, 0.5
and 1.1). There are no official weights for the
head; an ImageNet classifier checkpoint loads into the backbone and the head keeps its initialisation
(reported as ``LoadReport.initialised``). Fusion additionally moves the head's fuse conv in front of the
upsampling (it is linear per pixel and bilinear weights sum to one), so the stride-4 concat disappears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from edgeseg.models.fusion import scale_output
from edgeseg.models.heads import AllMLPHead
from edgeseg.models.layers import ConvBNSequential, ConvNormAct
from edgeseg.models.registry import register_variants

NORM_EPS = 1e-5
MLP_RATIO = 4
MLP_KERNEL = 5
WINDOW_SIZES = (8, 4, 2, 1)
LOCAL_KERNELS = (3, 5, 7, 9)
DEPTHS = (2, 2, 6, 2)
HEAD_DROPOUT = 0.1


@dataclass(frozen=True)
class CloFormerConfig:
    """Widths, heads and (local, global) head splits per stage, and the segmentation head's width E."""

    embed_dims: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    group_splits: tuple[tuple[int, int], ...]
    head_embed_dim: int


VARIANTS = {
    "xxs": CloFormerConfig(
        embed_dims=(32, 64, 128, 256),
        num_heads=(4, 4, 8, 16),
        group_splits=((3, 1), (2, 2), (4, 4), (4, 12)),
        head_embed_dim=128,
    ),
    "xs": CloFormerConfig(
        embed_dims=(48, 96, 160, 352),
        num_heads=(3, 6, 10, 22),
        group_splits=((2, 1), (3, 3), (5, 5), (7, 15)),
        head_embed_dim=128,
    ),
    "s": CloFormerConfig(
        embed_dims=(64, 128, 224, 448),
        num_heads=(4, 8, 14, 28),
        group_splits=((3, 1), (4, 4), (7, 7), (7, 21)),
        head_embed_dim=256,
    ),
}


class LayerNormCHW(nn.GroupNorm):
    """``GroupNorm(1, C)``: normalise over (C, H, W) per sample, then an optional per-channel affine.

    Written with ReduceMean so that the export needs no Shape/InstanceNormalization; ``weight`` and
    ``bias`` keep nn.GroupNorm's keys. After :meth:`drop_affine` it only normalises. Means are taken over
    H, W and then over C (equal counts per channel, so the same mean): one float32 ReduceMean over C·H·W
    loses up to 2e-5 in ONNX Runtime at 32×128×128, the two-step one matches float64 to rounding.
    """

    def __init__(self, channels: int, affine: bool = True) -> None:
        super().__init__(1, channels, eps=NORM_EPS, affine=affine)

    @staticmethod
    def _mean(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self._mean(x)
        y = centred * torch.rsqrt(self._mean(centred.square()) + self.eps)
        if self.weight is None:
            return y
        return y * self.weight.reshape(-1, 1, 1) + self.bias.reshape(-1, 1, 1)

    @torch.no_grad()
    def drop_affine(self, *consumers: nn.Conv2d) -> LayerNormCHW:
        """Fold the affine into the 1×1 ``consumers`` of this norm's output; return the affine-free norm.

        Also exact through an ``AvgPool2d`` with kernel = stride and no padding between norm and conv.
        """
        if self.weight is None:
            return self
        for conv in consumers:
            if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.bias is None:
                raise ValueError("drop_affine folds into dense 1×1 convs with bias only")
            weight = conv.weight[:, :, 0, 0]
            conv.bias += weight @ self.bias
            conv.weight *= self.weight.reshape(1, -1, 1, 1)
        return LayerNormCHW(self.num_channels, affine=False)


class StemConv(nn.Module):
    """Conv (with bias) → BatchNorm → ReLU under the official key ``conv.{0,1}`` (``BasicBlock``)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        norm = nn.BatchNorm2d(cout, eps=NORM_EPS)
        self.conv = ConvNormAct(cin, cout, 3, stride, bias=True, norm=norm, act=nn.ReLU(), names=("0", "1"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PatchEmbedding(nn.Module):
    """Stem to stride 4: 3×3 convs with strides 2, 2, 1, 1 (each + BN + ReLU), a 1×1 conv, GroupNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = StemConv(3, dim // 2, 2)
        self.conv2 = StemConv(dim // 2, dim, 2)
        self.conv3 = StemConv(dim, dim, 1)
        self.conv4 = StemConv(dim, dim, 1)
        self.conv5 = nn.Conv2d(dim, dim, 1)
        self.layernorm = LayerNormCHW(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.layernorm(self.conv5(x))


class AttnMap(nn.Module):
    """FC → Swish → FC on the Hadamard product q ⊙ k (official key ``act_block.{0,2}``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.act_block = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.SiLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_block(x)


class EfficientAttention(nn.Module):
    """Clo token mixer: AttnConv on ``local`` channels and pooled global attention on the rest, then a 1×1 proj.

    AttnConv: q, k, v = chunks of DWConv(1×1 conv(x)); out = tanh(AttnMap(q ⊙ k) · d^-0.5) ⊙ v.
    Global: softmax(q kᵀ · d^-0.5) v with k, v projected from ``AvgPool2d(window)(x)``.
    """

    def __init__(self, dim: int, num_heads: int, group_split: tuple[int, int], kernel_size: int, window: int) -> None:
        super().__init__()
        local_heads, self.global_heads = group_split
        if local_heads + self.global_heads != num_heads or dim % num_heads:
            raise ValueError(f"group split {group_split} must divide dim {dim} into its {num_heads} heads")
        self.head_dim = dim // num_heads
        local, global_ = local_heads * self.head_dim, self.global_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.gate_scale = self.scale
        # One local kernel size per stage in every variant; the official keys are list entries ``.0``.
        self.qkvs = nn.ModuleList([nn.Conv2d(dim, 3 * local, 1)])
        self.convs = nn.ModuleList(
            [nn.Conv2d(3 * local, 3 * local, kernel_size, 1, kernel_size // 2, groups=3 * local)]
        )
        self.act_blocks = nn.ModuleList([AttnMap(local)])
        self.global_q = nn.Conv2d(dim, global_, 1)
        self.global_kv = nn.Conv2d(dim, 2 * global_, 1)
        self.pool = nn.AvgPool2d(window, window) if window > 1 else nn.Identity()
        self.proj = nn.Conv2d(dim, dim, 1)

    def local_context(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.convs[0](self.qkvs[0](x)).chunk(3, dim=1)
        gate = self.act_blocks[0](q * k)
        if self.gate_scale != 1.0:
            gate = gate * self.gate_scale
        return torch.tanh(gate) * v

    def global_context(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        heads, d = self.global_heads, self.head_dim
        q = self.global_q(x).reshape(b, heads, d, h * w).transpose(-1, -2)  # B×g×N×d
        k, v = self.global_kv(self.pool(x)).flatten(2).reshape(b, 2 * heads, d, -1).chunk(2, dim=1)  # B×g×d×M
        attn = ((q * self.scale) @ k).softmax(dim=-1)  # B×g×N×M
        return (v @ attn.transpose(-1, -2)).reshape(b, heads * d, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([self.local_context(x), self.global_context(x)], dim=1))

    def reparameterize(self) -> None:
        act_block = cast(AttnMap, self.act_blocks[0]).act_block
        act_block[2] = scale_output(act_block[2], self.gate_scale)
        self.gate_scale = 1.0


class ConvFFN(nn.Module):
    """1×1 conv → GELU → depthwise 5×5 (stride 1 or 2) → 1×1 conv."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        hidden = MLP_RATIO * dim
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(hidden, hidden, MLP_KERNEL, stride, MLP_KERNEL // 2, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dwconv(self.act(self.fc1(x))))


def downsample_shortcut(dim: int, out_dim: int) -> ConvBNSequential:
    """Stride-2 shortcut: dense 5×5 s2 conv → BatchNorm → 1×1 conv to ``out_dim``."""
    return ConvBNSequential(nn.Conv2d(dim, dim, 5, 2, 2), nn.BatchNorm2d(dim, eps=NORM_EPS), nn.Conv2d(dim, out_dim, 1))


class EfficientBlock(nn.Module):
    """Clo block: ``x + attn(GN(x))``, then ``shortcut(x) + ConvFFN(GN(x))``; stride 2 downsamples."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        num_heads: int,
        group_split: tuple[int, int],
        kernel_size: int,
        window: int,
        stride: int,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNormCHW(dim)
        self.attn = EfficientAttention(dim, num_heads, group_split, kernel_size, window)
        self.norm2 = LayerNormCHW(dim)
        self.mlp = ConvFFN(dim, out_dim, stride)
        self.downsample = downsample_shortcut(dim, out_dim) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return self.downsample(x) + self.mlp(self.norm2(x))

    def reparameterize(self) -> None:
        attn = self.attn
        self.norm1 = self.norm1.drop_affine(cast(nn.Conv2d, attn.qkvs[0]), attn.global_q, attn.global_kv)
        self.norm2 = self.norm2.drop_affine(self.mlp.fc1)


class CloLayer(nn.Module):
    """One stage: ``depth`` Clo blocks, the last of which downsamples to ``out_dim`` unless it is the last stage."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        depth: int,
        num_heads: int,
        group_split: tuple[int, int],
        kernel_size: int,
        window: int,
        downsample: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            EfficientBlock(
                dim,
                out_dim if downsample and i == depth - 1 else dim,
                num_heads,
                group_split,
                kernel_size,
                window,
                2 if downsample and i == depth - 1 else 1,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class CloFormerBackbone(nn.Module):
    """Stem (stride 4) and four stages with outputs at strides 8, 16, 32, 32 (official key layout)."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        cfg = VARIANTS[variant]
        dims = cfg.embed_dims
        out_dims = (*dims[1:], dims[-1])
        self.patch_embed = PatchEmbedding(dims[0])
        self.layers = nn.ModuleList(
            CloLayer(
                dims[i],
                out_dims[i],
                DEPTHS[i],
                cfg.num_heads[i],
                cfg.group_splits[i],
                LOCAL_KERNELS[i],
                WINDOW_SIZES[i],
                downsample=i < len(dims) - 1,
            )
            for i in range(len(dims))
        )
        self.stem_channels = dims[0]
        self.out_channels = out_dims

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-4 stem output (after its GroupNorm)."""
        return self.patch_embed(x)

    def forward_pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stem output and the four stage outputs."""
        stem = self.patch_embed(x)
        features, y = [], stem
        for layer in self.layers:
            y = layer(y)
            features.append(y)
        return stem, features

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs (strides 8, 16, 32, 32)."""
        return self.forward_pyramid(x)[1]


class CloFormer(CloFormerBackbone):
    """CloFormer ImageNet classifier: GroupNorm → global average pool → Linear; ``forward(x)`` gives N×classes."""

    def __init__(self, variant: str, num_classes: int) -> None:
        super().__init__(variant)
        self.norm = LayerNormCHW(self.out_channels[-1])
        self.head = nn.Linear(self.out_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.forward_features(x)[-1]).mean(dim=(2, 3)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        # The mean over H, W commutes with the per-channel affine, so it folds into the Linear.
        self.head.bias.add_(self.head.weight @ self.norm.bias)
        self.head.weight *= self.norm.weight
        self.norm = LayerNormCHW(self.norm.num_channels, affine=False)


class CloFormerSeg(CloFormerBackbone):
    """CloFormer backbone + edgeseg's all-MLP head on the stride 4/8/16/32 taps; logits at stride 4.

    Loads an edgeseg segmentation checkpoint, or an ImageNet classifier checkpoint into the backbone: the
    classifier's ``norm``/``head`` keys are ignored and the head keeps its initialisation.
    """

    checkpoint_ignored = (r"^norm\.", r"^head\.")
    checkpoint_optional = (r"^decode_head\.",)
    taps = (0, 1, 3)  # stages after the stem; stage 2 (stride 32) only feeds stage 3

    def __init__(self, variant: str, num_classes: int) -> None:
        super().__init__(variant)
        in_channels = (self.stem_channels, *(self.out_channels[i] for i in self.taps))
        embed_dim = VARIANTS[variant].head_embed_dim
        projections = [nn.Conv2d(c, embed_dim, 1) for c in in_channels]
        self.decode_head = AllMLPHead(projections, embed_dim, num_classes, dropout=HEAD_DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem, features = self.forward_pyramid(x)
        return self.decode_head([stem, *(features[i] for i in self.taps)])


register_variants(
    "cloformer",
    CloFormer,
    VARIANTS,
    lambda variant: (
        f"CloFormer-{variant.upper()} ImageNet classifier (qhfan/CloFormer; N×classes logits after global "
        "pooling of the stride-32 features, not a segmenter; official checkpoints need num_classes=1000)"
    ),
    output_stride=32,
    task="classification",
)
register_variants(
    "cloformer",
    CloFormerSeg,
    VARIANTS,
    lambda variant: (
        f"CloFormer-{variant.upper()} backbone + edgeseg's own SegFormer-style all-MLP head "
        f"(E={VARIANTS[variant].head_embed_dim}, no official weights; loads an ImageNet CloFormer "
        "checkpoint into the backbone)"
    ),
    suffix="-seg",
    output_stride=4,
)

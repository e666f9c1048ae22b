"""AFFormer (Dong et al., AAAI 2023): adaptive frequency filters, prototypes and a pixel descriptor.

Export-friendly re-implementation of dongbo811/AFFormer's tiny/small/base models with the ``CLS`` head,
loading the official mmseg checkpoints unchanged. Differences from the official code, none of which
change the output:

- The low-pass filter's adaptive average pools (sizes 1, 2, 3, 6) and their bilinear upsampling are
  constant per-axis matrices (:class:`~edgeseg.models.static_ops.PoolUpsample`), exact at any size.
- The einsums are MatMuls, there are no 5-D tensors and no einops. The token softmax of the linear
  attention reduces the last axis (k is laid out B×h×Ch×N), not a strided one.
- The encoder has a second, equivalent formulation on B×C×H×W (``set_encoder_layout("channels")``):
  Linear layers as 1×1 convs, LayerNorm between two transposes, no token-major copies; and a third,
  ``channels-reduce``, whose LayerNorm is written with means over the channel axis (no transposes).
  Export picks the fastest one per backend and precision.
- The encoder's shared ``cpe``/``crpe`` modules are registered once; the checkpoint's repeated copies
  are mapped onto them (and must be identical). The head's dead ``align`` block is not built and its
  checkpoint keys are ignored.
- ``reparameterize()`` (see :func:`~edgeseg.models.fusion.fuse_model`) folds every BatchNorm, the
  residual of the positional and MLP depthwise convs, and merges the 3/5/7 high-pass kernels into one
  7×7 depthwise conv.

Module attribute names follow the official ones so that checkpoint keys match without a key map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.fusion import add_identity, fold_batchnorm_pairs, merge_depthwise
from edgeseg.models.layers import ConvBNSequential, ConvNormAct, EncoderDecoder, to_image, to_tokens
from edgeseg.models.registry import register_variants
from edgeseg.models.static_ops import PoolUpsample

LN_EPS = 1e-6
HIGH_PASS_HEADS = {3: 2, 5: 3, 7: 3}  # kernel size -> heads whose channels it filters
LOW_PASS_SIZES = (1, 2, 3, 6)


@dataclass(frozen=True)
class AFFormerConfig:
    """Widths and encoder depths of the four stages of one variant."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]


VARIANTS = {
    "tiny": AFFormerConfig(embed_dims=(32, 64, 160, 216), depths=(0, 2, 4, 2)),
    "small": AFFormerConfig(embed_dims=(32, 64, 176, 216), depths=(0, 2, 4, 2)),
    "base": AFFormerConfig(embed_dims=(32, 96, 176, 216), depths=(0, 2, 6, 2)),
}
# (pixel path, prototype path) strides of each stage's two patch embeddings.
PATCH_STRIDES = ((1, 1), (2, 1), (1, 2), (1, 4))
NUM_HEADS = 8
MLP_RATIO = 2
HEAD_CHANNELS = 256
HEAD_GROUPS = 32


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, act: bool = True) -> ConvNormAct:
    """Conv (no bias) → BatchNorm → optional Hardswish (official ``Conv2d_BN``, keys ``conv``/``bn``)."""
    return ConvNormAct(cin, cout, kernel, stride, act=nn.Hardswish() if act else None)


def dw_conv_bn(dim: int, stride: int) -> ConvBNSequential:
    """Depthwise 3×3 → pointwise 1×1 → BatchNorm → Hardswish (official ``DWConv2d_BN``)."""
    return ConvBNSequential(
        OrderedDict(
            dwconv=nn.Conv2d(dim, dim, 3, stride, 1, groups=dim, bias=False),
            pwconv=nn.Conv2d(dim, dim, 1, bias=False),
            bn=nn.BatchNorm2d(dim),
            act=nn.Hardswish(),
        )
    )


class PatchEmbed(nn.Module):
    """Wrapper giving the official key ``patch_embeds.i.patch_conv``."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.patch_conv = dw_conv_bn(dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_conv(x)


class PatchEmbedStage(nn.Module):
    """Two patch embeddings applied in sequence: the pixel path, then the prototype path from it."""

    def __init__(self, dim: int, strides: tuple[int, int]) -> None:
        super().__init__()
        self.patch_embeds = nn.ModuleList(PatchEmbed(dim, s) for s in strides)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.patch_embeds[0](x)
        return pixels, self.patch_embeds[1](pixels)


class DepthwiseResidual(nn.Module):
    """``x + dwconv3x3(x)``; the residual folds into the kernel's centre tap.

    The conv is registered under ``conv_name`` to match the official keys (``cpe.proj``,
    ``mlp.dwconv.dwconv``).
    """

    def __init__(self, dim: int, conv_name: str) -> None:
        super().__init__()
        self.conv_name = conv_name
        self.residual = True
        self.add_module(conv_name, nn.Conv2d(dim, dim, 3, 1, 1, groups=dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = getattr(self, self.conv_name)(x)
        return x + y if self.residual else y

    def reparameterize(self) -> None:
        setattr(self, self.conv_name, add_identity(getattr(self, self.conv_name)))
        self.residual = False


class FilterModule(nn.Module):
    """The frequency filter shared by an encoder's blocks: ``q * high_pass(v) + low_pass(v)``.

    High pass: depthwise 3/5/7 convs on channel groups of v. Low pass: v's channel quarters
    average-pooled to 1/2/3/6 cells and bilinearly upsampled back, then ReLU.
    """

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.splits = [heads * head_dim for heads in HIGH_PASS_HEADS.values()]
        self.conv_list = nn.ModuleList(
            nn.Conv2d(c, c, k, padding=k // 2, groups=c) for k, c in zip(HIGH_PASS_HEADS, self.splits)
        )
        self.low_pass = [PoolUpsample(s) for s in LOW_PASS_SIZES]

    def high_pass(self, v: torch.Tensor) -> torch.Tensor:
        if len(self.conv_list) == 1:
            return self.conv_list[0](v)
        parts = torch.split(v, self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.conv_list, parts)], dim=1)

    def low_pass_filter(self, v: torch.Tensor) -> torch.Tensor:
        quarters = torch.chunk(v, len(self.low_pass), dim=1)
        return F.relu(torch.cat([f(q) for f, q in zip(self.low_pass, quarters)], dim=1))

    def forward(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, v: B×C×H×W with channels ordered head-major."""
        return q * self.high_pass(v) + self.low_pass_filter(v)

    def reparameterize(self) -> None:
        if len(self.conv_list) > 1:
            self.conv_list = nn.ModuleList([merge_depthwise(self.conv_list)])


def layer_norm_2d(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of B×C×H×W: one LayerNormalization between two transposes."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def reduced_layer_norm_2d(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of B×C×H×W from channel means (ReduceMean over C), with no transposes."""
    centred = x - x.mean(dim=1, keepdim=True)
    variance = (centred * centred).mean(dim=1, keepdim=True)
    return centred / torch.sqrt(variance + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]


ChannelNorm = Callable[[nn.LayerNorm, torch.Tensor], torch.Tensor]


def pointwise(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A token-wise Linear (``weight``: out × in) applied to B×C×H×W as a 1×1 convolution."""
    return F.conv2d(x, weight[:, :, None, None], bias)


class FrequencyAttention(nn.Module):
    """AFF token mixer: linear attention (softmax over tokens on k) plus the shared frequency filter.

    Two exact formulations: on tokens (B×N×C, Linear layers as MatMuls) and on channels (B×C×H×W,
    Linear layers as 1×1 convs; with channels head-major a reshape gives each head's Ch×N matrices, so
    ``context = softmax_N(k) @ vᵀ`` and ``attentionᵀ = contextᵀ @ q`` need no token-major copies).
    In both the softmax reduces the last, contiguous axis.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_heads = NUM_HEADS
        self.head_dim = dim // NUM_HEADS
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int], crpe: FilterModule) -> torch.Tensor:
        """x: B×N×C tokens."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each B×N×C, channels head-major

        def heads(t: torch.Tensor, *order: int) -> torch.Tensor:  # B×N×C → B×h×(N, Ch in ``order``)
            return t.reshape(b, n, self.num_heads, self.head_dim).permute(0, 2, *order)

        context = (heads(k, 3, 1).softmax(dim=-1) @ heads(v, 1, 3)) * self.scale  # B×h×Ch×Ch
        attention = (heads(q, 1, 3) @ context).transpose(1, 2).reshape(b, n, c)
        filtered = to_tokens(crpe(to_image(q, size), to_image(v, size)))
        return self.proj(attention + filtered)

    def forward_channels(self, x: torch.Tensor, crpe: FilterModule) -> torch.Tensor:
        """x: B×C×H×W."""
        b, c, h, w = x.shape
        # three 1×1 convs, not one and a channel split (slow on blocked layouts such as OpenVINO's)
        rows = [slice(i * c, (i + 1) * c) for i in range(3)]
        q, k, v = (pointwise(self.qkv.weight[r], self.qkv.bias[r], x) for r in rows)

        def heads(t: torch.Tensor) -> torch.Tensor:  # B×C×H×W → B×h×Ch×N
            return t.reshape(b, self.num_heads, self.head_dim, h * w)

        context = (heads(k).softmax(dim=-1) @ heads(v).transpose(-2, -1)) * self.scale  # B×h×Ch×Ch
        attention = (context.transpose(-2, -1) @ heads(q)).reshape(b, c, h, w)
        return pointwise(self.proj.weight, self.proj.bias, attention + crpe(q, v))


class Mlp(nn.Module):
    """fc1 → GELU(x + dwconv(x)) → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseResidual(hidden, "dwconv")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x: B×N×C tokens."""
        hidden = to_image(self.fc1(x), size)
        return self.fc2(to_tokens(F.gelu(self.dwconv(hidden))))

    def forward_channels(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W."""
        hidden = F.gelu(self.dwconv(pointwise(self.fc1.weight, self.fc1.bias, x)))
        return pointwise(self.fc2.weight, self.fc2.bias, hidden)


class EncoderLayer(nn.Module):
    """cpe → x + AFF(LN(x)) → x + Mlp(LN(x)); cpe and crpe belong to the encoder."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.factoratt_crpe = FrequencyAttention(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim * MLP_RATIO)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], cpe: DepthwiseResidual, crpe: FilterModule
    ) -> torch.Tensor:
        """x: B×N×C tokens."""
        x = to_tokens(cpe(to_image(x, size)))
        x = x + self.factoratt_crpe(self.norm1(x), size, crpe)
        return x + self.mlp(self.norm2(x), size)

    def forward_channels(
        self, x: torch.Tensor, cpe: DepthwiseResidual, crpe: FilterModule, norm_2d: ChannelNorm
    ) -> torch.Tensor:
        """x: B×C×H×W; ``norm_2d`` applies a LayerNorm over its channels."""
        x = cpe(x)
        x = x + self.factoratt_crpe.forward_channels(norm_2d(self.norm1, x), crpe)
        return x + self.mlp.forward_channels(norm_2d(self.norm2, x))


# layout → how its LayerNorms run on B×C×H×W (the token layout has none)
CHANNEL_NORMS: dict[str, ChannelNorm] = {"channels": layer_norm_2d, "channels-reduce": reduced_layer_norm_2d}
ENCODER_LAYOUTS = ("tokens", *CHANNEL_NORMS)


class Encoder(nn.Module):
    """Transformer blocks on the prototype path, sharing one ``cpe`` and one ``crpe``.

    ``layout`` picks the formulation (same result): ``tokens`` as the official code, or ``channels``
    (LayerNorm between transposes) or ``channels-reduce`` (LayerNorm from channel means) on B×C×H×W.
    """

    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        self.cpe = DepthwiseResidual(dim, "proj")
        self.crpe = FilterModule(dim // NUM_HEADS)
        self.MHCA_layers = nn.ModuleList(EncoderLayer(dim) for _ in range(depth))
        self.layout = "tokens"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout in CHANNEL_NORMS:
            for layer in self.MHCA_layers:
                x = cast(EncoderLayer, layer).forward_channels(x, self.cpe, self.crpe, CHANNEL_NORMS[self.layout])
            return x
        size = (x.shape[2], x.shape[3])
        tokens = to_tokens(x)
        for layer in self.MHCA_layers:
            tokens = layer(tokens, size, self.cpe, self.crpe)
        return to_image(tokens, size)


class PixelDescriptor(nn.Module):
    """Residual inverted bottleneck on the pixel path (official ``Restore``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = dim // 2
        self.conv1 = conv_bn(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False)
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.Hardswish()
        self.conv2 = conv_bn(hidden, dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.norm(self.dwconv(self.conv1(x)))))

    def reparameterize(self) -> None:
        fold_batchnorm_pairs(self, ("dwconv", "norm"))


class Stage(nn.Module):
    """Pixel descriptor on the pixel path plus (from stage 1) the encoder on the prototype path."""

    def __init__(self, dim: int, out_dim: int, depth: int) -> None:
        super().__init__()
        self.Restore = PixelDescriptor(dim)
        self.mhca_blks = nn.ModuleList([Encoder(dim, depth)]) if depth else nn.ModuleList()
        self.aggregate = conv_bn(dim, out_dim)

    def forward(self, pixels: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        if not len(self.mhca_blks):
            return self.aggregate(self.Restore(pixels + prototypes))
        context = self.mhca_blks[0](prototypes)
        if context.shape[2:] != pixels.shape[2:]:
            context = F.interpolate(context, size=pixels.shape[2:], mode="bilinear", align_corners=True)
        return self.aggregate(self.Restore(pixels) + context)


class AFFormerBackbone(nn.Module):
    """Stem (stride 4) and four stages; outputs at strides 4, 8, 8, 8."""

    def __init__(self, embed_dims: tuple[int, ...], depths: tuple[int, ...]) -> None:
        super().__init__()
        half = embed_dims[0] // 2
        self.stem = nn.Sequential(conv_bn(3, half, 3, 2), conv_bn(half, embed_dims[0], 3, 2))
        self.patch_embed_stages = nn.ModuleList(PatchEmbedStage(d, s) for d, s in zip(embed_dims, PATCH_STRIDES))
        out_dims = (*embed_dims[1:], embed_dims[-1])
        self.mhca_stages = nn.ModuleList(Stage(d, o, n) for d, o, n in zip(embed_dims, out_dims, depths))
        self.out_channels = out_dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for embed, stage in zip(self.patch_embed_stages, self.mhca_stages):
            x = stage(*embed(x))
            features.append(x)
        return features


class AFFormerHead(nn.Module):
    """The official ``CLS`` head: last backbone feature → squeeze (1×1 conv, GroupNorm(32), ReLU) → 1×1 classifier."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        norm = nn.GroupNorm(HEAD_GROUPS, HEAD_CHANNELS)
        self.squeeze = ConvNormAct(in_channels, HEAD_CHANNELS, norm=norm, act=nn.ReLU(), names=("conv", "gn"))
        self.conv_seg = nn.Conv2d(HEAD_CHANNELS, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.squeeze(features[-1]))


class AFFormer(EncoderDecoder):
    """AFFormer segmenter: ``forward(x)`` gives logits at stride 8."""

    checkpoint_aliases = ((r"\.MHCA_layers\.\d+\.(?:factoratt_crpe\.)?(crpe|cpe)\.", r".\1."),)
    checkpoint_ignored = (r"^decode_head\.align\.",)

    def __init__(self, variant: str, num_classes: int) -> None:
        super().__init__()
        cfg = VARIANTS[variant]
        self.backbone = AFFormerBackbone(cfg.embed_dims, cfg.depths)
        self.decode_head = AFFormerHead(self.backbone.out_channels[-1], num_classes)

    def set_encoder_layout(self, layout: str) -> None:
        """Run every encoder in one of :data:`ENCODER_LAYOUTS` (``tokens`` is the official one); same outputs."""
        if layout not in ENCODER_LAYOUTS:
            raise ValueError(f"unknown encoder layout {layout!r}; choose one of {', '.join(ENCODER_LAYOUTS)}")
        for module in self.modules():
            if isinstance(module, Encoder):
                module.layout = layout


register_variants(
    "afformer",
    AFFormer,
    VARIANTS,
    lambda variant: f"AFFormer-{variant} with the official CLS head (dongbo811/AFFormer)",
    output_stride=8,
)

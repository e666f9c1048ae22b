"""SETR (Zheng et al., CVPR 2021): a plain ViT/16 encoder with the Naive, PUP or MLA decoder.

Re-implementation of fudan-zvg/SETR's inference path (``VisionTransformer`` / ``VIT_MLA`` backbones,
``VisionTransformerUpHead`` and ``VIT_MLAHead``) on ViT-Ti/S/B/L (:data:`~edgeseg.models.vit.VIT_VARIANTS`),
loading the official checkpoints unchanged (keys ``backbone.*``, ``decode_head.*``). Also loadable:

- timm / DeiT ImageNet ViT checkpoints (bare keys): the backbone loads, the decoder (and MLA's neck) keeps its
  initial values (``report.initialised``) and the ImageNet classifier is ignored;
- the training-only ``auxiliary_head.*`` of the released checkpoints and the never-used ``decode_head.conv_seg``
  are ignored and listed in the load report;
- any square position grid (SETR's 512² and 768² checkpoints, ImageNet's 224²): see :mod:`edgeseg.models.vit`.

Heads (ADE20K settings, BatchNorm for SyncBN; all resizes bilinear):

- **Naive**: drop cls, LayerNorm, 1×1 conv E→256 (3×3 when the checkpoint has one, the
  ``conv3x3_conv1x1`` option) + BN + ReLU, 1×1 conv 256→C: logits at stride 16.
- **PUP**: drop cls, LayerNorm, 4 × [conv3×3 → 256 + BN + ReLU] with a ×2 resize after the first three,
  1×1 conv 256→C: logits at stride 2 (the official fourth ×2 is the full-resolution step).
- **MLA**: the cls token is dropped right after the position embedding (the blocks never see it); blocks 2, 5,
  8, 11 (24-layer: 5, 11, 17, 23) are LayerNorm-ed, 1×1 conv E→256 + BN + ReLU, summed top-down, 3×3 conv +
  BN + ReLU (``backbone.mla``); each level gets 2 × [3×3 conv → 128 + BN + ReLU] and a ×4 resize with
  **align_corners=True**, the concat goes through a 3×3 conv 512→C: logits at stride 4.

**mmsegmentation's SETR** (``layout="mmseg"``, chosen by itself when a checkpoint has mmseg's keys:
``backbone.layers.N.ln1``, ``attn.attn.in_proj_weight``, ``ffn.layers.0.0``, ``decode_head.up_convs``, ``neck.mla``)
has the same ViT but other heads, checked against mmseg's own modules (``tests/reference``):

- **Naive** (``SETRUPHead``, one conv): LayerNorm, 1×1 conv + BN + ReLU, **×4 resize**, 1×1 ``conv_seg``: stride 4;
- **PUP**: 4 × [3×3 conv + BN + ReLU, ×2 resize], then ``conv_seg``: stride 1;
- **MLA**: the ViT's taps LayerNorm-ed in the neck (``neck.norm``), 1×1 projections, sums from the deepest level
  down, 3×3 convs (``neck.mla``); per level 2 × [3×3 conv → 128] and ×4 resize with **align_corners=False**,
  concatenated deepest first, **1×1** ``conv_seg``: stride 4.

``create(..., full_resolution=True)`` (the default, the official output) adds the final bilinear resize
(align_corners False) to the input size. With ``full_resolution=False`` the graph stops at the head's own stride
(16 / 2 / 4, ``model.spec.output_stride``) and the runtime's label path does that same resize.

Differences from the official code that do not change the output: the patch grid comes from the input's shape
(non-square inputs work; the official code asserts a square of the configured size), resizes use the grid
instead of ``size = k × last side``, the cls token is a static slice (not the ``N % 48`` test), the position
embedding is resized in the forward for the input's grid (:mod:`edgeseg.models.vit`), and
``reparameterize()`` folds every BatchNorm into its conv. ``decode_head.conv_seg`` is not built.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections import OrderedDict
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.fusion import fold_batchnorm_pairs
from edgeseg.models.layers import ConvBNSequential, ConvNormAct, EncoderDecoder, to_image
from edgeseg.models.registry import register_variants
from edgeseg.models.vit import (
    IMAGENET_CLASSIFIER_KEYS,
    LAYERNORM_EPS,
    PATCH,
    VIT_VARIANTS,
    VisionTransformer,
    ViTConfig,
    is_imagenet_vit,
)

HEADS = ("naive", "pup", "mla")
HEAD_CHANNELS = 256
MLA_CHANNELS = 256
MLA_HEAD_CHANNELS = 128
# Logits stride of each head before the full-resolution resize.
HEAD_STRIDE = {"naive": 16, "pup": 2, "mla": 4}
LAYOUTS = ("official", "mmseg")
MMSEG_HEAD_STRIDE = {"naive": 4, "pup": 1, "mla": 4}
# mmseg's SETRUPHead settings per head: (num_convs, up_scale, kernel_size).
MMSEG_UP_HEADS = {"naive": (1, 4, 1), "pup": (4, 2, 3)}
# mmseg's ViT key names -> this ViT's (regex, replacement), and mmseg's classifier name.
MMSEG_KEYS = (
    (r"^backbone\.patch_embed\.projection\.", "backbone.patch_embed.proj."),
    (r"^backbone\.layers\.(\d+)\.ln1\.", r"backbone.blocks.\1.norm1."),
    (r"^backbone\.layers\.(\d+)\.ln2\.", r"backbone.blocks.\1.norm2."),
    (r"^backbone\.layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$", r"backbone.blocks.\1.attn.qkv.\2"),
    (r"^backbone\.layers\.(\d+)\.attn\.attn\.out_proj\.", r"backbone.blocks.\1.attn.proj."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.", r"backbone.blocks.\1.mlp.fc1."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.1\.", r"backbone.blocks.\1.mlp.fc2."),
    (r"^decode_head\.conv_seg\.", "decode_head.cls_seg."),
)


def mla_taps(depth: int) -> tuple[int, int, int, int]:
    """The four blocks MLA reads: every quarter of the depth (2, 5, 8, 11 for 12 blocks; 5, 11, 17, 23 for 24)."""
    step = depth // 4
    return (step - 1, 2 * step - 1, 3 * step - 1, 4 * step - 1)


def resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize to ``size``."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def check_input_size(x: torch.Tensor) -> None:
    """SETR cuts the image into 16×16 patches: other sides would silently lose their last rows or columns."""
    h, w = x.shape[-2:]
    if h % PATCH or w % PATCH:
        raise ValueError(f"SETR needs input sides that are multiples of {PATCH}, got {h}x{w}; resize or pad the image")


class SETRBackbone(VisionTransformer):
    """The ViT for the Naive and PUP heads: returns the tokens (cls first) of the last block and the patch grid."""

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        tokens, grid = self.embed(x)
        return self.run_blocks(tokens, (self.config.depth - 1,)), grid


class MLANeck(nn.Module):
    """SETR's ``Conv_MLA`` (key ``mla``): per-level 1×1 projection, top-down sum, 3×3 smoothing."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        for level in (2, 3, 4, 5):
            self.add_module(f"mla_p{level}_1x1", ConvNormAct(dim, MLA_CHANNELS, 1, act=nn.ReLU(), names=("0", "1")))
        for level in (2, 3, 4, 5):
            self.add_module(
                f"mla_p{level}", ConvNormAct(MLA_CHANNELS, MLA_CHANNELS, 3, act=nn.ReLU(), names=("0", "1"))
            )

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """``maps`` from the shallowest tap; returns (p2, p3, p4, p5)."""
        p2, p3, p4, p5 = (getattr(self, f"mla_p{level}_1x1")(m) for level, m in zip((2, 3, 4, 5), maps))
        p4 = p5 + p4
        p3 = p4 + p3
        p2 = p3 + p2
        return [getattr(self, f"mla_p{level}")(p) for level, p in zip((2, 3, 4, 5), (p2, p3, p4, p5))]


class MLABackbone(VisionTransformer):
    """SETR's ``VIT_MLA``: the ViT without the cls token in its blocks, four tapped blocks, norms and the neck."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        self.taps = mla_taps(config.depth)
        for i in range(4):
            self.add_module(f"norm_{i}", nn.LayerNorm(config.embed_dim, eps=LAYERNORM_EPS))
        self.mla = MLANeck(config.embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        tokens, grid = self.patch_embed(x)
        tokens = tokens + self.position_embedding(grid)[:, 1:]  # the cls token would be dropped right here
        outputs = self.run_blocks(tokens, self.taps)
        maps = [to_image(getattr(self, f"norm_{i}")(t), grid) for i, t in enumerate(outputs)]
        return self.mla(maps), grid


class UpHead(nn.Module):
    """SETR's ``VisionTransformerUpHead``: Naive (``num_conv=2``: one conv + BN) or PUP (``num_conv=4``: four).

    Keys ``norm``, ``conv_{i}``, ``syncbn_fc_{i}``; the last conv is the 1×1 classifier.
    """

    def __init__(self, dim: int, num_classes: int, num_convs: int, first_kernel: int) -> None:
        super().__init__()
        self.num_convs = num_convs
        self.norm = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        for i in range(num_convs):
            cin = dim if i == 0 else HEAD_CHANNELS
            kernel = first_kernel if i == 0 else 3
            self.add_module(f"conv_{i}", nn.Conv2d(cin, HEAD_CHANNELS, kernel, padding=kernel // 2))
            self.add_module(f"syncbn_fc_{i}", nn.BatchNorm2d(HEAD_CHANNELS))
        self.add_module(f"conv_{num_convs}", nn.Conv2d(HEAD_CHANNELS, num_classes, 1))

    def forward(self, features: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        x = to_image(self.norm(features[-1][:, 1:]), grid)
        for i in range(self.num_convs):
            x = F.relu(getattr(self, f"syncbn_fc_{i}")(getattr(self, f"conv_{i}")(x)))
            if i < self.num_convs - 1:
                x = resize(x, (2 * x.shape[2], 2 * x.shape[3]))
        return getattr(self, f"conv_{self.num_convs}")(x)

    def reparameterize(self) -> None:
        fold_batchnorm_pairs(self, *((f"conv_{i}", f"syncbn_fc_{i}") for i in range(self.num_convs)))

    def match_first_kernel(self, weight: torch.Tensor) -> None:
        """Rebuild ``conv_0`` with the kernel size of a checkpoint's ``weight`` when it is the other of 1×1 and 3×3
        (the official ``conv3x3_conv1x1`` switch); any other shape is left for the load to report."""
        conv = cast(nn.Conv2d, self.get_submodule("conv_0"))
        kernel = weight.shape[-1] if weight.ndim == 4 else conv.kernel_size[0]
        if kernel in (1, 3) and kernel != conv.kernel_size[0]:
            self.add_module("conv_0", nn.Conv2d(conv.in_channels, conv.out_channels, kernel, padding=kernel // 2))


class MLAHeadLevels(nn.Module):
    """SETR's ``MLAHead`` (key ``mlahead``): ``head{2..5}`` = 2 × [3×3 conv + BN + ReLU], then ×4 (align_corners)."""

    def __init__(self) -> None:
        super().__init__()
        for level in (2, 3, 4, 5):
            layers = []
            for cin in (MLA_CHANNELS, MLA_HEAD_CHANNELS):
                conv = nn.Conv2d(cin, MLA_HEAD_CHANNELS, 3, padding=1, bias=False)
                layers += [conv, nn.BatchNorm2d(MLA_HEAD_CHANNELS), nn.ReLU()]
            self.add_module(f"head{level}", ConvBNSequential(OrderedDict((str(i), m) for i, m in enumerate(layers))))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        outs = []
        for level, x in zip((2, 3, 4, 5), features):
            x = getattr(self, f"head{level}")(x)
            outs.append(resize(x, (4 * x.shape[2], 4 * x.shape[3]), align_corners=True))
        return torch.cat(outs, dim=1)


class MLAHead(nn.Module):
    """SETR's ``VIT_MLAHead``: the four level heads, concat, 3×3 classifier ``cls``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.mlahead = MLAHeadLevels()
        self.cls = nn.Conv2d(4 * MLA_HEAD_CHANNELS, num_classes, 3, padding=1)

    def forward(self, features: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        return self.cls(self.mlahead(features))


class TapsBackbone(VisionTransformer):
    """mmseg's ``VisionTransformer(with_cls_token=False)`` for MLA: the cls token is dropped right after the
    position embedding; returns the tokens of the four tapped blocks and the patch grid."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        self.taps = mla_taps(config.depth)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        tokens, grid = self.patch_embed(x)
        tokens = tokens + self.position_embedding(grid)[:, 1:]
        return self.run_blocks(tokens, self.taps), grid


class MmsegMLAModule(nn.Module):
    """mmseg's ``MLAModule``: 1×1 conv + BN + ReLU per level (``channel_proj``), sums from the deepest level down,
    3×3 conv + BN + ReLU on each sum (``feat_extract``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.channel_proj = nn.ModuleList(ConvNormAct(dim, MLA_CHANNELS, 1, act=nn.ReLU()) for _ in range(4))
        self.feat_extract = nn.ModuleList(ConvNormAct(MLA_CHANNELS, MLA_CHANNELS, 3, act=nn.ReLU()) for _ in range(4))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """``maps`` from the shallowest tap; returns the levels deepest first."""
        projected = [proj(m) for proj, m in zip(self.channel_proj, maps)]
        sums = list(itertools.accumulate(reversed(projected), operator.add))
        return [conv(total) for conv, total in zip(self.feat_extract, sums)]


class MmsegMLANeck(nn.Module):
    """mmseg's ``MLANeck``: a LayerNorm per tapped block (``norm``), then :class:`MmsegMLAModule` (``mla``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.ModuleList(nn.LayerNorm(dim, eps=LAYERNORM_EPS) for _ in range(4))
        self.mla = MmsegMLAModule(dim)

    def forward(self, tokens: list[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        return self.mla([to_image(norm(t), grid) for norm, t in zip(self.norm, tokens)])


class MmsegUpHead(nn.Module):
    """mmseg's ``SETRUPHead``: LayerNorm, ``num_convs`` × [conv + BN + ReLU, ×``up_scale`` resize], 1×1 classifier
    (mmseg's ``conv_seg``, loaded as ``cls_seg``)."""

    def __init__(self, dim: int, num_classes: int, num_convs: int, up_scale: int, kernel: int) -> None:
        super().__init__()
        self.up_scale = up_scale
        self.norm = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.up_convs = nn.ModuleList(
            nn.Sequential(ConvNormAct(dim if i == 0 else HEAD_CHANNELS, HEAD_CHANNELS, kernel, act=nn.ReLU()))
            for i in range(num_convs)
        )
        self.cls_seg = nn.Conv2d(HEAD_CHANNELS, num_classes, 1)

    def forward(self, features: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        x = to_image(self.norm(features[-1][:, 1:]), grid)
        for conv in self.up_convs:
            x = conv(x)
            x = resize(x, (self.up_scale * x.shape[2], self.up_scale * x.shape[3]))
        return self.cls_seg(x)


class MmsegMLAHead(nn.Module):
    """mmseg's ``SETRMLAHead``: per level 2 × [3×3 conv + BN + ReLU] and ×4 resize (align_corners False), concat,
    1×1 classifier (``conv_seg``, loaded as ``cls_seg``)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.up_convs = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(MLA_CHANNELS, MLA_HEAD_CHANNELS, 3, act=nn.ReLU()),
                ConvNormAct(MLA_HEAD_CHANNELS, MLA_HEAD_CHANNELS, 3, act=nn.ReLU()),
            )
            for _ in range(4)
        )
        self.cls_seg = nn.Conv2d(4 * MLA_HEAD_CHANNELS, num_classes, 1)

    def forward(self, features: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        outs = []
        for x, convs in zip(features, self.up_convs):
            x = convs(x)
            outs.append(resize(x, (4 * x.shape[2], 4 * x.shape[3])))
        return self.cls_seg(torch.cat(outs, dim=1))


class SETR(EncoderDecoder):
    """SETR segmenter ``{naive|pup|mla}-{tiny|small|base|large}``.

    ``forward(x)`` gives full-resolution logits (``full_resolution=True``) or the head's stride-16/2/4 logits;
    ``forward_features(x)`` gives the last block's tokens, cls first (Naive, PUP), or the MLA neck's four
    stride-16 maps (MLA).
    """

    checkpoint_ignored = (r"^decode_head\.conv_seg\.", r"^auxiliary_head\.", *IMAGENET_CLASSIFIER_KEYS)
    checkpoint_optional: tuple[str, ...]

    def __init__(
        self, variant: str, num_classes: int, *, full_resolution: bool = True, layout: str = "official"
    ) -> None:
        super().__init__()
        head, _, size = variant.partition("-")
        if head not in HEADS or size not in VIT_VARIANTS:
            raise ValueError(
                f"unknown SETR variant {variant!r}; choose HEAD-SIZE with HEAD in {', '.join(HEADS)} "
                f"and SIZE in {', '.join(VIT_VARIANTS)}"
            )
        self.head_kind, self.config, self.num_classes = head, VIT_VARIANTS[size], num_classes
        self.full_resolution = full_resolution
        self.build(layout)

    def build(self, layout: str) -> None:
        """(Re)build the modules of ``layout``: the official SETR code's or mmsegmentation's (see the module doc)."""
        if layout not in LAYOUTS:
            raise ValueError(f"SETR layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        head, config = self.head_kind, self.config
        self.layout = layout
        stride = (HEAD_STRIDE if layout == "official" else MMSEG_HEAD_STRIDE)[head]
        self.output_stride = 1 if self.full_resolution else stride
        self.neck: nn.Module | None = None
        if layout == "mmseg":
            if head == "mla":
                self.backbone: VisionTransformer = TapsBackbone(config)
                self.neck = MmsegMLANeck(config.embed_dim)
                self.decode_head: nn.Module = MmsegMLAHead(self.num_classes)
            else:
                self.backbone = SETRBackbone(config)
                self.decode_head = MmsegUpHead(config.embed_dim, self.num_classes, *MMSEG_UP_HEADS[head])
            self.checkpoint_optional = (r"^decode_head\.", r"^neck\.")
        elif head == "mla":
            self.backbone = MLABackbone(config)
            self.decode_head = MLAHead(self.num_classes)
            self.checkpoint_optional = (r"^decode_head\.", r"^backbone\.(mla|norm_\d)\.")
        else:
            self.backbone = SETRBackbone(config)
            num_convs, first_kernel = (1, 1) if head == "naive" else (4, 3)
            self.decode_head = UpHead(config.embed_dim, self.num_classes, num_convs, first_kernel)
            self.checkpoint_optional = (r"^decode_head\.",)

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        check_input_size(x)
        features, grid = self.backbone(x)
        return (features if self.neck is None else self.neck(features, grid)), grid

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._encode(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, grid = self._encode(x)
        logits = self.decode_head(features, grid)
        return resize(logits, (x.shape[2], x.shape[3])) if self.full_resolution else logits

    def remap_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """ImageNet ViT keys go under ``backbone.``; mmseg's keys switch the model to the mmseg layout and are
        renamed (its patch embedding has no bias: a zero one is added); the model takes the checkpoint's
        position grid and, for the official Naive head, its ``conv_0`` kernel size (1×1 or 3×3)."""
        if is_imagenet_vit(state):
            state = {f"backbone.{key}": tensor for key, tensor in state.items()}
        if any(key.startswith("backbone.layers.") for key in state):
            if self.layout != "mmseg":
                self.build("mmseg")
            renamed = {}
            for key, tensor in state.items():
                for pattern, replacement in MMSEG_KEYS:
                    key = re.sub(pattern, replacement, key)
                renamed[key] = tensor
            weight = renamed.get("backbone.patch_embed.proj.weight")
            if weight is not None and "backbone.patch_embed.proj.bias" not in renamed:  # mmseg's patch_bias=False
                renamed["backbone.patch_embed.proj.bias"] = weight.new_zeros(weight.shape[0])
            state = renamed
        if "backbone.pos_embed" in state:
            state = {**state, "backbone.pos_embed": self.backbone.adopt_position_grid(state["backbone.pos_embed"])}
        conv_0 = state.get("decode_head.conv_0.weight")
        if self.head_kind == "naive" and isinstance(self.decode_head, UpHead) and conv_0 is not None:
            self.decode_head.match_first_kernel(conv_0)
        return state


def _describe(variant: str) -> str:
    head, _, size = variant.partition("-")
    config = VIT_VARIANTS[size]
    return (
        f"SETR-{head.upper() if head != 'naive' else 'Naive'} on ViT-{size}/16 ({config.embed_dim}-d, {config.depth} "
        f"blocks; fudan-zvg/SETR); full-resolution logits, full_resolution=False (--model-option) stops at stride "
        f"{HEAD_STRIDE[head]}"
    )


register_variants(
    "setr",
    SETR,
    [f"{head}-{size}" for head in HEADS for size in VIT_VARIANTS],
    _describe,
    output_stride=1,
    input_multiple=16,
    options=("full_resolution", "layout"),
)

"""MobileNetV2 with Coordinate Attention (Hou et al., CVPR 2021) and edgeseg's LR-ASPP segmenter on it.

``mbv2-ca`` re-implements the ImageNet classifier ``MBV2_CA`` of houqb/CoordAttention (width 1.0), loading its
checkpoints unchanged (``features.{i}.conv.{j}``, ``conv``, ``classifier.1`` keys): a 3×3 stride-2 stem, 17
inverted residual blocks (expansion t, width c, repeats n, first stride s: 1-16-1-1, 6-24-2-2, 6-32-3-2,
6-64-4-2, 6-96-3-1, 6-160-3-2, 6-320-1-1), each expanding block with Coordinate Attention after its depthwise
conv, a 1×1 conv to 1280, global average pooling, dropout 0.1 and a Linear. Activations are ReLU6. Differences
from the official code, none of which change the output: the pools are reductions (see
:mod:`edgeseg.models.attention`), and ``reparameterize()`` folds every BatchNorm into its conv.

``mbv2-ca-seg`` is edgeseg's own segmenter (no official weights): the MobileNetV2-CA blocks up to the end of the
stride-16 stage (``features.0``–``features.13``) and a Lite R-ASPP head after MobileNetV3's (Howard et al. 2019),
which uses the stride-8 and stride-16 features. Here they are the outputs of the 32-channel stage (``features.6``,
stride 8) and of the 96-channel stage (``features.13``, stride 16); the stride-32 stages, the 1280 conv and the
classifier are not built, so an ImageNet ``mbv2-ca`` checkpoint loads into ``backbone`` with those keys ignored
and the head initialised (both listed in the load report). Head, logits at stride 8::

    high = ReLU(BN(conv1×1(f16 → 128))) · sigmoid(conv1×1(mean_HW(f16) → 128))   # "cbr" · "scale"
    logits = low_classifier(f8) + high_classifier(bilinear(high → size of f8, align_corners=False))

The global mean is a reduction (torchvision's LR-ASPP choice, not the paper's 49×49 pooling window), so one graph
with symbolic height and width is exact at every multiple of 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.attention import CoordinateAttention
from edgeseg.models.layers import ConvBNSequential, ConvNormAct
from edgeseg.models.registry import ModelSpec, register_model

# (expansion t, output channels c, repeats n, stride of the first block s), width multiplier 1.0.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
CLASSIFIER_DROPOUT = 0.1
SEG_LOW_BLOCK = 6  # last block at stride 8 (32 channels)
SEG_HIGH_BLOCK = 13  # last block at stride 16 (96 channels)
LRASPP_CHANNELS = 128


@dataclass(frozen=True)
class BlockConfig:
    """One inverted residual block: input and output channels, stride, expansion."""

    cin: int
    cout: int
    stride: int
    expansion: int


def block_configs() -> list[BlockConfig]:
    """The 17 inverted residual blocks of MobileNetV2 (width 1.0), in order."""
    blocks, cin = [], STEM_CHANNELS
    for expansion, cout, repeats, stride in STAGES:
        for i in range(repeats):
            blocks.append(BlockConfig(cin, cout, stride if i == 0 else 1, expansion))
            cin = cout
    return blocks


def conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Conv (no bias, 'same' padding) → BatchNorm → ReLU6, as three Sequential entries."""
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    ]


class InvertedResidual(nn.Module):
    """[1×1 expand → BN → ReLU6] → 3×3 depthwise → BN → ReLU6 → [Coordinate Attention] → 1×1 project → BN, plus
    the input when the stride is 1 and the widths match. Expansion 1 has neither the expand conv nor attention."""

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        hidden = round(cfg.cin * cfg.expansion)
        self.residual = cfg.stride == 1 and cfg.cin == cfg.cout
        layers = [] if cfg.expansion == 1 else conv_bn_relu6(cfg.cin, hidden, 1)
        layers += conv_bn_relu6(hidden, hidden, 3, cfg.stride, groups=hidden)
        if cfg.expansion != 1:
            layers.append(CoordinateAttention(hidden, hidden, gate_names=("conv2", "conv3")))
        layers += [nn.Conv2d(hidden, cfg.cout, 1, bias=False), nn.BatchNorm2d(cfg.cout)]
        self.conv = ConvBNSequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


def mobilenetv2_features(blocks: int) -> ConvBNSequential:
    """The stem (``features.0``) and the first ``blocks`` inverted residual blocks (``features.1``...)."""
    stem = ConvBNSequential(*conv_bn_relu6(3, STEM_CHANNELS, 3, 2))
    return ConvBNSequential(stem, *(InvertedResidual(cfg) for cfg in block_configs()[:blocks]))


class MobileNetV2CA(nn.Module):
    """The MobileNetV2 + Coordinate Attention ImageNet classifier; ``forward(x)`` gives N×classes."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        configs = block_configs()
        self.features = mobilenetv2_features(len(configs))
        self.conv = ConvBNSequential(*conv_bn_relu6(configs[-1].cout, LAST_CHANNELS, 1))
        self.classifier = nn.Sequential(nn.Dropout(CLASSIFIER_DROPOUT), nn.Linear(LAST_CHANNELS, num_classes))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every ``features.{i}`` (stem and 17 blocks), then of ``conv``."""
        outputs = []
        for block in self.features:
            x = block(x)
            outputs.append(x)
        return [*outputs, self.conv(x)]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of ``conv`` (1280 channels, stride 32), the input of the pooling."""
        return [self.conv(self.features(x))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x)[0].mean(dim=(2, 3)))


class LiteRASPPHead(nn.Module):
    """Lite R-ASPP on a stride-8 and a stride-16 feature map; logits at stride 8 (see the module docs)."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, channels: int = LRASPP_CHANNELS):
        super().__init__()
        self.cbr = ConvNormAct(high_channels, channels, act=nn.ReLU())
        self.scale = nn.Conv2d(high_channels, channels, 1, bias=False)
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low, high = features
        attention = torch.sigmoid(self.scale(high.mean(dim=(2, 3), keepdim=True)))
        high = F.interpolate(self.cbr(high) * attention, size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(high)


class MobileNetV2CABackbone(nn.Module):
    """``features.0``–``features.13`` of MobileNetV2-CA; returns the stride-8 and stride-16 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = mobilenetv2_features(SEG_HIGH_BLOCK)
        self.out_channels = (block_configs()[SEG_LOW_BLOCK - 1].cout, block_configs()[SEG_HIGH_BLOCK - 1].cout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        low = self.features[: SEG_LOW_BLOCK + 1](x)
        return [low, self.features[SEG_LOW_BLOCK + 1 :](low)]


class MobileNetV2CASeg(nn.Module):
    """MobileNetV2-CA backbone + Lite R-ASPP head (edgeseg's own); logits at stride 8.

    Loads an edgeseg segmentation checkpoint, or an ``mbv2-ca`` ImageNet checkpoint into the backbone.
    """

    checkpoint_ignored = (r"^conv\.", r"^classifier\.", r"^backbone\.features\.1[4-7]\.")
    checkpoint_optional = (r"^decode_head\.",)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = MobileNetV2CABackbone()
        self.decode_head = LiteRASPPHead(*self.backbone.out_channels, num_classes)

    @staticmethod
    def remap_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An ImageNet classifier's ``features.*`` keys go under ``backbone.``."""
        return {f"backbone.{k}" if k.startswith("features.") else k: v for k, v in state.items()}

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stride-8 and stride-16 backbone maps."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))


register_model(
    ModelSpec(
        name="mbv2-ca",
        family="mbv2",
        builder=MobileNetV2CA,
        output_stride=32,
        description=(
            "MobileNetV2 + Coordinate Attention ImageNet classifier (houqb/CoordAttention; N×classes logits after "
            "global pooling, not a segmenter; official checkpoints need num_classes=1000)"
        ),
        task="classification",
        dynamic_resolution=True,
    )
)
register_model(
    ModelSpec(
        name="mbv2-ca-seg",
        family="mbv2",
        builder=MobileNetV2CASeg,
        output_stride=8,
        description=(
            "MobileNetV2-CA backbone (to stride 16) + edgeseg's own Lite R-ASPP head on the stride-8 and stride-16 "
            "maps (no official weights; loads an ImageNet mbv2-ca checkpoint into the backbone)"
        ),
        input_multiple=16,
        dynamic_resolution=True,
    )
)

"""Small building blocks shared by several model families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.fusion import fold_batchnorm


class ConvBNReLU(nn.Module):
    """1×1 conv (no bias) → BatchNorm → ReLU (mmcv ``ConvModule`` keys ``conv``/``bn``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))

    def folded_conv(self) -> nn.Conv2d:
        """The conv with the BatchNorm folded in, whether or not :meth:`reparameterize` already ran."""
        return self.conv if isinstance(self.bn, nn.Identity) else fold_batchnorm(self.conv, self.bn)

    def reparameterize(self) -> None:
        self.conv = self.folded_conv()
        self.bn = nn.Identity()


class EncoderDecoder(nn.Module):
    """mmseg's segmenter layout: ``backbone`` (stage features) → ``decode_head`` (logits at its stride).

    Subclasses set both attributes; the names are the official checkpoints' key prefixes.
    """

    backbone: nn.Module
    decode_head: nn.Module

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))

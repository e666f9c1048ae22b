"""Small building blocks shared by several model families."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import cast

import torch
from torch import nn

from edgeseg.models.fusion import fold_batchnorm, fold_batchnorm_pairs


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """B×C×H×W → B×(H·W)×C."""
    return x.flatten(2).transpose(1, 2)


def to_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×(H·W)×C → B×C×H×W; ``size`` comes from a tensor's shape so it stays symbolic when traced."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], size[0], size[1])


class ConvBNSequential(nn.Sequential):
    """``nn.Sequential`` whose ``reparameterize()`` folds every Conv2d → BatchNorm2d pair into the conv.

    Children keep their names (indices or the official keys), so checkpoints load unchanged.
    """

    def reparameterize(self) -> None:
        names = list(self._modules)
        pairs = [
            (conv, norm)
            for conv, norm in itertools.pairwise(names)
            if isinstance(self._modules[conv], nn.Conv2d) and isinstance(self._modules[norm], nn.BatchNorm2d)
        ]
        fold_batchnorm_pairs(self, *pairs)


class ConvNormAct(ConvBNSequential):
    """Conv ('same'-style padding ``kernel // 2``) → norm → optional activation.

    ``names`` are the conv's and the norm's keys in the official checkpoints: mmcv ``ConvModule`` uses
    ``conv``/``bn`` (``gn`` for a GroupNorm), patch embeddings ``proj``/``norm``, plain Sequentials ``0``/``1``.
    The norm defaults to ``BatchNorm2d(cout)``; a BatchNorm folds into the conv on ``reparameterize()``.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        *,
        groups: int = 1,
        bias: bool = False,
        norm: nn.Module | None = None,
        act: nn.Module | None = None,
        names: tuple[str, str] = ("conv", "bn"),
    ) -> None:
        conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        layers = [(names[0], conv), (names[1], norm if norm is not None else nn.BatchNorm2d(cout))]
        super().__init__(OrderedDict(layers + ([("act", act)] if act is not None else [])))

    def folded_conv(self) -> nn.Conv2d:
        """The conv with the BatchNorm folded in, whether or not :meth:`reparameterize` already ran."""
        conv, norm = self[0], self[1]
        return fold_batchnorm(conv, norm) if isinstance(norm, nn.BatchNorm2d) else cast(nn.Conv2d, conv)


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

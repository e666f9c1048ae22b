"""Channel and spatial attention blocks: Squeeze-and-Excitation, CBAM and Coordinate Attention.

Export-friendly re-implementations that load the official checkpoints' keys unchanged:

- :class:`SqueezeExcitation` — Hu et al. 2018, as ``SELayer`` of moskomule/senet.pytorch (keys ``fc.0``, ``fc.2``).
- :class:`CBAM` — Woo et al. 2018, as ``CBAM`` of Jongchan/attention-module (default avg + max channel pools,
  keys ``ChannelGate.mlp.{1,3}`` and ``SpatialGate.spatial.{conv,bn}``).
- :class:`CoordinateAttention` — Hou et al. 2021, as ``CoordAtt`` of houqb/CoordAttention (keys ``conv1``,
  ``bn1``, ``conv_h``, ``conv_w``; the copy inside the official MobileNetV2 names the last two ``conv2``/``conv3``,
  see ``gate_names``).

Differences from the official code, none of which change the eval output:

- Every pool is a plain reduction over the axes it pools (ReduceMean / ReduceMax), never an adaptive or
  window pool whose size is taken from the input: one graph traced with symbolic H and W is exact at every size.
- Coordinate Attention's shared 1×1 conv + BatchNorm + h-swish runs on the H-pooled and the W-pooled maps
  separately instead of on their concatenation split back afterwards; it is per-position in eval mode, so the
  result is identical and the graph has no concat/split at dynamic sizes nor transposes. In training mode the
  official concatenation is kept, so that the BatchNorm's batch statistics cover both maps as in the original.
- ``reparameterize()`` (see :func:`~edgeseg.models.fusion.fuse_model`) folds every BatchNorm into its conv.

:func:`head_attention` builds a block to insert into a decode head, initialised to leave the head's output
unchanged (see there).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from edgeseg.models.fusion import fold_batchnorm_pairs
from edgeseg.models.layers import ConvNormAct

HEAD_ATTENTION_KINDS = ("se", "cbam", "ca")


class SqueezeExcitation(nn.Module):
    """``x · sigmoid(fc(mean_HW(x)))`` with ``fc`` = Linear(C, C/r) → ReLU → Linear(C/r, C), both without bias."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"SE reduction {reduction} leaves no hidden channel for {channels} channels")
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, channels, bias=False), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]

    @torch.no_grad()
    def zero_gate(self) -> float:
        """Make the gate a constant 0.5 (last Linear zeroed); returns that constant."""
        nn.init.zeros_(cast(nn.Linear, self.fc[2]).weight)
        return 0.5


class ChannelGate(nn.Module):
    """CBAM's channel attention: ``x · sigmoid(mlp(mean_HW(x)) + mlp(max_HW(x)))``, one shared MLP with biases."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"CBAM reduction {reduction} leaves no hidden channel for {channels} channels")
        # Index 0 is the official Flatten (no weights); keeping the indices keeps the keys mlp.1 and mlp.3.
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(pooled)[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM's spatial attention: ``x · sigmoid(BN(conv7×7(cat[max_C(x), mean_C(x)])))``."""

    def __init__(self, kernel: int = 7) -> None:
        super().__init__()
        self.spatial = ConvNormAct(2, 1, kernel, norm=nn.BatchNorm2d(1, momentum=0.01))  # official momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: the channel gate, then the spatial gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))

    @torch.no_grad()
    def zero_gate(self) -> float:
        """Make both gates a constant 0.5 (last Linear and the spatial conv zeroed, BatchNorm reset); returns 0.25."""
        last = cast(nn.Linear, self.ChannelGate.mlp[3])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        nn.init.zeros_(cast(nn.Conv2d, self.SpatialGate.spatial[0]).weight)
        cast(nn.BatchNorm2d, self.SpatialGate.spatial[1]).reset_parameters()
        return 0.25


class CoordinateAttention(nn.Module):
    """Coordinate Attention: ``x · a_w · a_h`` with direction-aware gates from the H- and W-pooled maps.

    ``a_h = sigmoid(conv_h(t(mean_W x)))``, ``a_w = sigmoid(conv_w(t(mean_H x)))`` where ``t`` = 1×1 conv to
    ``max(8, C // reduction)`` channels → BatchNorm → h-swish, shared by both directions. ``gate_names`` are the
    keys of the two gate convs (``conv_h``/``conv_w`` in coordatt.py, ``conv2``/``conv3`` in mbv2_ca.py).
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        reduction: int = 32,
        *,
        gate_names: tuple[str, str] = ("conv_h", "conv_w"),
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if out_channels != channels:
            raise ValueError(f"coordinate attention multiplies its input, so out_channels {out_channels} != {channels}")
        mid = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.gate_names = gate_names
        for name in gate_names:
            self.add_module(name, nn.Conv2d(mid, out_channels, 1))

    def gates(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        """The H-gate and W-gate convs."""
        return getattr(self, self.gate_names[0]), getattr(self, self.gate_names[1])

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """The shared transform ``t``: 1×1 conv → BatchNorm → h-swish."""
        return self.act(self.bn1(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled_h = x.mean(dim=3, keepdim=True)  # N×C×H×1
        pooled_w = x.mean(dim=2, keepdim=True)  # N×C×1×W
        if self.training:  # one BatchNorm batch over both directions, as the official concatenation
            height = x.shape[2]
            joint = self.shared(torch.cat([pooled_h, pooled_w.transpose(2, 3)], dim=2))
            mixed_h, mixed_w = joint[:, :, :height], joint[:, :, height:].transpose(2, 3)
        else:
            mixed_h, mixed_w = self.shared(pooled_h), self.shared(pooled_w)
        conv_h, conv_w = self.gates()
        return x * torch.sigmoid(conv_w(mixed_w)) * torch.sigmoid(conv_h(mixed_h))

    def reparameterize(self) -> None:
        fold_batchnorm_pairs(self, ("conv1", "bn1"))

    @torch.no_grad()
    def zero_gate(self) -> float:
        """Make both gates a constant 0.5 (gate convs zeroed); returns 0.25."""
        for conv in self.gates():
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        return 0.25


class HeadAttention(nn.Module):
    """An attention block followed by a constant gain, inserted into a decode head (see :func:`head_attention`)."""

    def __init__(self, block: SqueezeExcitation | CBAM | CoordinateAttention, gain: float) -> None:
        super().__init__()
        self.block = block
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) * self.gain

    def extra_repr(self) -> str:
        return f"gain={self.gain}"


def head_attention(kind: str, channels: int) -> HeadAttention:
    """A ``kind`` block ("se", "cbam" or "ca", official default reductions) for a head with ``channels`` channels.

    "Initialised" means the block starts as the identity, so a head with it computes exactly what the head
    without it computes: the layer that produces each gate's logits is zeroed (SE: ``fc.2``; CBAM: ``mlp.3`` and
    the spatial conv, its BatchNorm reset; CA: ``conv_h``/``conv_w``), every gate is then sigmoid(0) = 0.5, and the
    block's output is multiplied by the fixed gain 1 / (product of its gates at that point): 2 for SE, 4 for CBAM
    and CA. The gates learn from the first step (the zeroed layers get gradients, and sigmoid is steepest at 0);
    the gain is a constant of the architecture, not a weight.
    """
    blocks = {"se": SqueezeExcitation, "cbam": CBAM, "ca": CoordinateAttention}
    if kind not in blocks:
        raise ValueError(f"unknown head attention {kind!r}; choose one of {', '.join(HEAD_ATTENTION_KINDS)}")
    block = blocks[kind](channels)
    return HeadAttention(block, 1.0 / block.zero_gate())

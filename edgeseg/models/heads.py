"""SegFormer's all-MLP decode head, shared by SegFormer and edgeseg's CloFormer segmenter."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.attention import head_attention
from edgeseg.models.fusion import compose_pointwise, split_pointwise, upsample_sum
from edgeseg.models.layers import ConvNormAct, to_image, to_tokens


class LinearProjection(nn.Module):
    """Per-pixel Linear C → E on an image (NVlabs SegFormer's ``MLP``, key ``proj``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_image(self.proj(to_tokens(x)), (x.shape[2], x.shape[3]))


def pointwise_weights(projection: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out × in weight, bias) of a per-pixel linear map: a :class:`LinearProjection`, Linear or dense 1×1 conv."""
    if isinstance(projection, LinearProjection):
        projection = projection.proj
    if isinstance(projection, nn.Linear):
        return projection.weight, projection.bias
    if isinstance(projection, nn.Conv2d) and projection.kernel_size == (1, 1) and projection.groups == 1:
        return projection.weight[:, :, 0, 0], projection.bias
    raise TypeError(f"an all-MLP head projection must be a per-pixel linear map, got {type(projection).__name__}")


class AllMLPHead(nn.Module):
    """Project each input to E, resize to the first input's size (bilinear), concat last input first, then
    1×1 conv + BatchNorm + ReLU (``linear_fuse``), optional dropout and a 1×1 classifier (``linear_pred``).

    The projections are registered as ``linear_c{i}`` from 1 (NVlabs SegFormer keys) when ``numbered_keys``,
    else as the list ``linear_c``. :meth:`reparameterize` composes the fuse conv (BatchNorm folded) into each
    projection, so every input is fused at its own resolution by one 1×1 conv (``branches``) and the upsampled
    results are summed: exact, and the concatenated stride-4 map and its wide 1×1 conv disappear.

    :meth:`add_attention` inserts an SE, CBAM or Coordinate Attention block (key ``attention``) between the fuse
    conv and the classifier, initialised so that the head's output is unchanged (see
    :func:`~edgeseg.models.attention.head_attention`).
    """

    def __init__(
        self,
        projections: Sequence[nn.Module],
        embed_dim: int,
        num_classes: int,
        *,
        numbered_keys: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.projection_names = [f"linear_c{i}" for i in range(1, len(projections) + 1)] if numbered_keys else []
        if numbered_keys:
            for name, projection in zip(self.projection_names, projections):
                self.add_module(name, projection)
        else:
            self.linear_c = nn.ModuleList(projections)
        self.linear_fuse = ConvNormAct(len(projections) * embed_dim, embed_dim, act=nn.ReLU())
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        self.embed_dim = embed_dim
        self.attention: nn.Module = nn.Identity()
        self.branches: nn.ModuleList | None = None

    def projections(self) -> list[nn.Module]:
        """The per-input projections, in input order."""
        if self.projection_names:
            return [getattr(self, name) for name in self.projection_names]
        return list(self.linear_c)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``features`` from the highest resolution down; logits at the first one's size."""
        size = features[0].shape[2:]
        if self.branches is not None:
            fused = F.relu(upsample_sum([branch(f) for branch, f in zip(self.branches, features)], size))
            return self.linear_pred(self.dropout(self.attention(fused)))
        projected = [projection(f) for projection, f in zip(self.projections(), features)]
        resized = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in projected[1:]]
        fused = self.linear_fuse(torch.cat([*resized[::-1], projected[0]], dim=1))
        return self.linear_pred(self.dropout(self.attention(fused)))

    def add_attention(self, kind: str) -> None:
        """Insert a ``kind`` block ("se", "cbam" or "ca") after the fuse conv; the head's output stays the same."""
        self.attention = head_attention(kind, self.embed_dim)

    def reparameterize(self) -> None:
        projections = self.projections()
        parts = split_pointwise(self.linear_fuse.folded_conv(), [self.embed_dim] * len(projections))[::-1]
        # the concat order is last input first, so the parts come reversed
        self.branches = nn.ModuleList(
            compose_pointwise(part, *pointwise_weights(projection)) for part, projection in zip(parts, projections)
        )
        for name in self.projection_names or ["linear_c"]:
            delattr(self, name)
        self.projection_names = []
        del self.linear_fuse

"""SegFormer (Xie et al., NeurIPS 2021): MiT encoder and the all-MLP decoder.

Export-friendly re-implementation of NVlabs/SegFormer's B0–B5 models (``SegFormerHead``), loading the
official mmseg-0.x checkpoints unchanged. Differences from the official code, none of which change the
output:

- The decoder resizes to c1's spatial shape taken from the tensor (the official ``resize`` casts the size
  to Python ints, which bakes it into a traced graph), so exports with dynamic H and W are correct at
  every size.
- K and V come from the one ``kv`` Linear split on channels (no 5-D reshape); see :mod:`edgeseg.models.mit`.
- ``reparameterize()`` folds the ``linear_fuse`` BatchNorm into its conv.
- ``BaseDecodeHead.conv_seg`` is never used by the official forward; it is not built and its checkpoint
  keys are ignored.

Hugging Face ``transformers`` checkpoints (``.safetensors`` or ``.bin``, 4.x or 5.x names) load too, through
the key map in :mod:`edgeseg.models.hf_segformer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.fusion import compose_pointwise, split_pointwise, upsample_sum
from edgeseg.models.hf_segformer import hf_to_nvlabs, is_hf_segformer
from edgeseg.models.layers import ConvBNReLU, EncoderDecoder
from edgeseg.models.mit import MIT_VARIANTS, NVLABS_EPS, MixVisionTransformer, to_image, to_tokens
from edgeseg.models.registry import ModelSpec, register_model

# Decoder embedding dim E of each variant (NVlabs local_configs).
DECODER_DIMS = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}


class LinearProjection(nn.Module):
    """Per-pixel Linear C → E on an image (official ``MLP``, key ``proj``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_image(self.proj(to_tokens(x)), (x.shape[2], x.shape[3]))


class SegFormerHead(nn.Module):
    """Project c1..c4 to E, resize to c1 (bilinear), concat [c4, c3, c2, c1], fuse, classify.

    :meth:`reparameterize` composes the fuse conv (BatchNorm folded) into each projection, so every scale is
    fused at its own resolution as a 1×1 conv on the NCHW map and the upsampled results are summed: exact,
    and the 4E→E conv at stride 4 (half of SegFormer-B0's MACs) disappears.
    """

    def __init__(self, in_channels: tuple[int, ...], embed_dim: int, num_classes: int) -> None:
        super().__init__()
        for i, cin in enumerate(in_channels, start=1):
            self.add_module(f"linear_c{i}", LinearProjection(cin, embed_dim))
        self.linear_fuse = ConvBNReLU(len(in_channels) * embed_dim, embed_dim)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        self.embed_dim = embed_dim
        self.num_inputs = len(in_channels)
        self.branches: nn.ModuleList | None = None

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        if self.branches is not None:
            fused = upsample_sum([branch(f) for branch, f in zip(self.branches, features)], size)
            return self.linear_pred(F.relu(fused))
        projected = []
        for i in range(len(features), 0, -1):
            x = getattr(self, f"linear_c{i}")(features[i - 1])
            if i > 1:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            projected.append(x)
        return self.linear_pred(self.linear_fuse(torch.cat(projected, dim=1)))

    def reparameterize(self) -> None:
        parts = split_pointwise(self.linear_fuse.folded_conv(), [self.embed_dim] * self.num_inputs)[::-1]
        branches = []
        for i, part in enumerate(parts, start=1):  # concat order is c4..c1, so the parts come reversed
            projection = getattr(self, f"linear_c{i}").proj
            branches.append(compose_pointwise(part, projection.weight, projection.bias))
            delattr(self, f"linear_c{i}")
        self.branches = nn.ModuleList(branches)
        del self.linear_fuse


class SegFormer(EncoderDecoder):
    """SegFormer segmenter: ``forward(x)`` gives logits at stride 4."""

    checkpoint_ignored = (r"^decode_head\.conv_seg\.",)

    def __init__(self, variant: str, num_classes: int) -> None:
        super().__init__()
        if variant not in MIT_VARIANTS:
            raise ValueError(f"unknown SegFormer variant {variant!r}; choose one of {', '.join(MIT_VARIANTS)}")
        self.backbone = MixVisionTransformer(MIT_VARIANTS[variant], eps=NVLABS_EPS)
        self.decode_head = SegFormerHead(self.backbone.out_channels, DECODER_DIMS[variant], num_classes)

    @staticmethod
    def remap_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hugging Face transformers checkpoints (4.x or 5.x names) are renamed to the NVlabs keys."""
        return hf_to_nvlabs(state) if is_hf_segformer(state) else state


for _variant in MIT_VARIANTS:
    register_model(
        ModelSpec(
            name=f"segformer-{_variant}",
            family="segformer",
            builder=lambda num_classes, v=_variant: SegFormer(v, num_classes),
            output_stride=4,
            dynamic_resolution=True,
            description=f"SegFormer-{_variant.upper()} (MiT-{_variant.upper()} + all-MLP head, NVlabs/SegFormer)",
        )
    )

"""SegFormer (Xie et al., NeurIPS 2021): MiT encoder and the all-MLP decoder.

Export-friendly re-implementation of NVlabs/SegFormer's B0–B5 models (``SegFormerHead``), loading the
official mmseg-0.x checkpoints unchanged. Differences from the official code, none of which change the
output:

- The decoder resizes to c1's spatial shape taken from the tensor (the official ``resize`` casts the size
  to Python ints, which bakes it into a traced graph), so exports with dynamic H and W are correct at
  every size.
- K and V come from the one ``kv`` Linear split on channels (no 5-D reshape); see :mod:`edgeseg.models.mit`.
- ``reparameterize()`` folds the ``linear_fuse`` BatchNorm into its conv and composes it into the projections,
  so every scale is fused at its own resolution (the 4E→E conv at stride 4, half of B0's MACs, disappears).
- ``BaseDecodeHead.conv_seg`` is never used by the official forward; it is not built and its checkpoint
  keys are ignored.

Hugging Face ``transformers`` checkpoints (``.safetensors`` or ``.bin``, 4.x or 5.x names) load too, through
the key map in :mod:`edgeseg.models.hf_segformer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeseg.models.heads import AllMLPHead, LinearProjection
from edgeseg.models.hf_segformer import hf_to_nvlabs, is_hf_segformer
from edgeseg.models.layers import EncoderDecoder
from edgeseg.models.mit import MIT_VARIANTS, NVLABS_EPS, MiTConfig, MixVisionTransformer
from edgeseg.models.registry import register_variants


@dataclass(frozen=True)
class SegFormerConfig:
    """The MiT encoder and the decoder embedding dim E of one variant (NVlabs local_configs)."""

    encoder: MiTConfig
    decoder_dim: int


VARIANTS = {
    variant: SegFormerConfig(MIT_VARIANTS[variant], decoder_dim)
    for variant, decoder_dim in (("b0", 256), ("b1", 256), ("b2", 768), ("b3", 768), ("b4", 768), ("b5", 768))
}


class SegFormer(EncoderDecoder):
    """SegFormer segmenter: ``forward(x)`` gives logits at stride 4.

    The head is the all-MLP decoder (:class:`~edgeseg.models.heads.AllMLPHead`) with the official keys
    ``linear_c{1..4}.proj``, ``linear_fuse``, ``linear_pred``: project c1..c4 to E, resize to c1 (bilinear),
    concat [c4, c3, c2, c1], fuse, classify.
    """

    checkpoint_ignored = (r"^decode_head\.conv_seg\.",)

    def __init__(self, variant: str, num_classes: int) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown SegFormer variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        cfg = VARIANTS[variant]
        self.backbone = MixVisionTransformer(cfg.encoder, eps=NVLABS_EPS)
        projections = [LinearProjection(c, cfg.decoder_dim) for c in self.backbone.out_channels]
        self.decode_head = AllMLPHead(projections, cfg.decoder_dim, num_classes, numbered_keys=True)

    @staticmethod
    def remap_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hugging Face transformers checkpoints (4.x or 5.x names) are renamed to the NVlabs keys."""
        return hf_to_nvlabs(state) if is_hf_segformer(state) else state


register_variants(
    "segformer",
    SegFormer,
    VARIANTS,
    lambda variant: f"SegFormer-{variant.upper()} (MiT-{variant.upper()} + all-MLP head, NVlabs/SegFormer)",
    output_stride=4,
    dynamic_resolution=True,
)

"""MaskFormer (Cheng et al., NeurIPS 2021): per-pixel decoder + transformer decoder, semantic inference.

Re-implementation of facebookresearch/MaskFormer's inference path (``MaskFormerHead`` with ``BasePixelDecoder``
and ``TransformerPredictor``, ADE20K configs) on detectron2's ResNet-50/101 (:mod:`edgeseg.models.resnet`) or
MaskFormer's Swin-T/S (``D2SwinTransformer``, :mod:`edgeseg.models.swin`). Checkpoints that load:

- the official detectron2 key names, unchanged (``backbone.*``, ``sem_seg_head.pixel_decoder.*``,
  ``sem_seg_head.predictor.*``), and the old-format ``sem_seg_head.<decoder key>`` layout that the official head
  renames when a checkpoint has no version;
- Hugging Face ``MaskFormerForInstanceSegmentation`` (ResNet or Swin backbone), through the key map in
  :mod:`edgeseg.models.hf_maskformer`.

The training-only ``criterion.*`` tensors, ``pixel_mean``/``pixel_std`` where a checkpoint carries them and
BatchNorm counters are ignored and listed in the load report.

- **Pixel decoder** (FPN, 256 channels, GroupNorm(32)): ``layer_4`` = 3×3 conv + GN + ReLU on res5; for res4,
  res3, res2 the lateral ``adapter_k`` (1×1 conv + GN) plus the nearest-upsampled coarser map, then ``layer_k``
  (3×3 conv + GN + ReLU); ``mask_features`` = 3×3 conv (bias) at stride 4.
- **Transformer decoder** (DETR, post-norm, no encoder): res5 → ``input_proj`` (1×1) → memory; sine position
  encoding (128 features per axis, normalised, temperature 10000); 100 learned queries; 6 layers of
  self-attention, cross-attention and a 2048-wide ReLU FFN; the shared final LayerNorm.
- **Outputs**: ``pred_logits = class_embed(h)`` (C + 1, the last = no object), ``pred_masks = mask_embed(h) ·
  mask_features`` (stride 4), and the semantic scores ``softmax(pred_logits)[..., :-1]ᵀ · sigmoid(pred_masks)``.

``model(x)`` returns those per-class scores at stride 4 (the official ``semantic_inference`` on the stride-4
masks), which the runtime's label path resizes like any stride-4 logits. ``create(..., full_resolution=True)``
returns the official full-resolution output instead: the mask **logits** are upsampled (bilinear,
align_corners False) to the input size before the sigmoid, as the official eval branch does — not the same
numbers as resizing the stride-4 scores. The input is the normalised image (ImageNet mean/std in 0..255 units,
sides multiples of 32: the official ``ImageList`` padding is the caller's job).

Differences from the official code that do not change the output: only the last decoder layer goes through
``class_embed``/``mask_embed`` (the official code computes all six for deep supervision, even in eval);
attention is written with reshapes and matmuls on ≤ 4-D tensors, batch first (``nn.MultiheadAttention``'s keys
load); einsums are matmuls; the position encoding is computed in numpy for the input's size (a constant in a
static export); dropout is not built (inference only: training needs MaskFormer's matching criterion);
``reparameterize()`` folds the backbone's frozen BatchNorms.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.hf_maskformer import HF_UNUSED_SWIN_NORM, hf_to_detectron2, is_hf_maskformer
from edgeseg.models.layers import to_tokens
from edgeseg.models.registry import register_variants
from edgeseg.models.resnet import RESNET_DEPTHS, NormConv2d, ResNet
from edgeseg.models.swin import SWIN_VARIANTS, SwinBackbone

# name -> (depth, the DeepLab "c" stem and res5 multi-grid)
RESNETS = {f"r{depth}": (depth, False) for depth in RESNET_DEPTHS} | {"r101c": (101, True)}
VARIANTS = (*RESNETS, *SWIN_VARIANTS)
CONV_DIM = 256
MASK_DIM = 256
GROUPNORM_GROUPS = 32
HIDDEN_DIM = 256
NUM_HEADS = 8
FFN_DIM = 2048
DECODER_LAYERS = 6
NUM_QUERIES = 100
POSITION_TEMPERATURE = 10000.0
POSITION_EPS = 1e-6


@functools.lru_cache(maxsize=64)
def sine_position_encoding(height: int, width: int, channels: int = HIDDEN_DIM) -> np.ndarray:
    """DETR's ``PositionEmbeddingSine(channels / 2, normalize=True)`` for an all-valid H×W map: (1, channels, H, W).

    Per axis the 1-based index is normalised by (last index + 1e-6) and scaled by 2π, divided by
    ``10000 ** (2·(i // 2) / F)`` for feature i, and features alternate sin, cos; y's F features come first.
    Computed in float64, returned as float32 (cached per size, so a static export bakes it as a constant).
    """
    features = channels // 2
    dim_t = POSITION_TEMPERATURE ** (2 * (np.arange(features) // 2) / features)

    def axis(n: int) -> np.ndarray:
        embed = np.arange(1, n + 1, dtype=np.float64) / (n + POSITION_EPS) * (2 * math.pi)
        angles = embed[:, None] / dim_t  # n × F
        return np.stack([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], axis=2).reshape(n, features)

    pos_y = np.broadcast_to(axis(height)[:, None, :], (height, width, features))
    pos_x = np.broadcast_to(axis(width)[None, :, :], (height, width, features))
    pos = np.concatenate([pos_y, pos_x], axis=2).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(pos, dtype=np.float32)


class MultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (keys ``in_proj_weight``, ``in_proj_bias``, ``out_proj``) on batch-first 3-D
    inputs, with per-head reshapes to 4-D and plain matmuls."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """B×L×C → B×heads×L×(C/heads)."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def _project(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The query (0), key (1) or value (2) projection: rows ``index·C … (index+1)·C`` of ``in_proj``."""
        dim = self.out_proj.in_features
        rows = slice(index * dim, (index + 1) * dim)
        return F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._split_heads(self._project(x, i)) for i, x in enumerate((query, key, value)))
        attention = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
        out = (attention @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class DecoderLayer(nn.Module):
    """DETR's post-norm ``TransformerDecoderLayer``: self-attention, cross-attention, FFN, each + residual + norm."""

    def __init__(self, dim: int = HIDDEN_DIM, heads: int = NUM_HEADS, ffn_dim: int = FFN_DIM) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads)
        self.multihead_attn = MultiheadAttention(dim, heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, q, tgt))
        tgt = self.norm2(tgt + self.multihead_attn(tgt + query_pos, memory + pos, memory))
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class TransformerDecoder(nn.Module):
    """The decoder stack (keys ``layers.{i}``) and the final ``norm``; returns the last layer's normed output."""

    def __init__(self, num_layers: int = DECODER_LAYERS) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(num_layers))
        self.norm = nn.LayerNorm(HIDDEN_DIM)

    def forward(self, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """``memory`` B×HW×C, ``pos`` 1×HW×C and ``query_pos`` Q×C broadcast over the batch; returns B×Q×C."""
        tgt = memory.new_zeros((memory.shape[0], *query_pos.shape))
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
        return self.norm(tgt)


class Transformer(nn.Module):
    """Holds the ``decoder`` (key ``transformer.decoder``); MaskFormer's ADE20K configs have no encoder layers."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = TransformerDecoder()


class MaskEmbed(nn.Module):
    """The 3-layer MLP (keys ``layers.{0,1,2}``) with ReLU between layers."""

    def __init__(self, dim: int = HIDDEN_DIM, out_dim: int = MASK_DIM, num_layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim if i < num_layers - 1 else out_dim) for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class TransformerPredictor(nn.Module):
    """MaskFormer's ``TransformerPredictor``: class logits and mask logits of the last decoder layer."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.query_embed = nn.Embedding(NUM_QUERIES, HIDDEN_DIM)
        self.input_proj = nn.Conv2d(in_channels, HIDDEN_DIM, 1)
        self.transformer = Transformer()
        self.class_embed = nn.Linear(HIDDEN_DIM, num_classes + 1)
        self.mask_embed = MaskEmbed()

    def forward(self, res5: torch.Tensor, mask_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pred_logits B×Q×(C+1), pred_masks B×Q×h×w at mask_features' size)."""
        h, w = res5.shape[-2:]
        pos = torch.from_numpy(sine_position_encoding(h, w, HIDDEN_DIM)).to(res5.device, res5.dtype)
        memory = to_tokens(self.input_proj(res5))
        hs = self.transformer.decoder(memory, to_tokens(pos), self.query_embed.weight)
        n, c, mh, mw = mask_features.shape
        masks = self.mask_embed(hs) @ mask_features.reshape(n, c, mh * mw)
        return self.class_embed(hs), masks.reshape(n, -1, mh, mw)


class BasePixelDecoder(nn.Module):
    """MaskFormer's FPN pixel decoder: keys ``adapter_{1,2,3}``, ``layer_{1..4}`` (1 = res2), ``mask_features``."""

    def __init__(self, in_channels: list[int]) -> None:
        super().__init__()
        self.levels = len(in_channels)
        for index, cin in enumerate(in_channels, start=1):
            if index < self.levels:
                self.add_module(f"adapter_{index}", NormConv2d(cin, CONV_DIM, 1, norm=self._norm()))
            layer_in = cin if index == self.levels else CONV_DIM
            self.add_module(f"layer_{index}", NormConv2d(layer_in, CONV_DIM, 3, norm=self._norm()))
        self.mask_features = nn.Conv2d(CONV_DIM, MASK_DIM, 3, padding=1)

    @staticmethod
    def _norm() -> nn.GroupNorm:
        return nn.GroupNorm(GROUPNORM_GROUPS, CONV_DIM)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``features`` = [res2, ..., res5]; returns the stride-4 mask features."""
        y = F.relu(getattr(self, f"layer_{self.levels}")(features[-1]))
        for index in range(self.levels - 1, 0, -1):
            lateral = getattr(self, f"adapter_{index}")(features[index - 1])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = F.relu(getattr(self, f"layer_{index}")(y))
        return self.mask_features(y)


class MaskFormerHead(nn.Module):
    """``sem_seg_head``: the pixel decoder and the transformer predictor."""

    def __init__(self, in_channels: list[int], num_classes: int) -> None:
        super().__init__()
        self.pixel_decoder = BasePixelDecoder(in_channels)
        self.predictor = TransformerPredictor(in_channels[-1], num_classes)


class MaskFormerOutputs(NamedTuple):
    """What the official ``MaskFormer`` computes before inference: per-query outputs and the mask features."""

    pred_logits: torch.Tensor  # B × queries × (classes + 1)
    pred_masks: torch.Tensor  # B × queries × H/4 × W/4 (logits)
    mask_features: torch.Tensor  # B × 256 × H/4 × W/4


def semantic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """Per-class scores B×C×h×w = ``softmax(pred_logits)[..., :-1]ᵀ · sigmoid(pred_masks)`` summed over queries."""
    classes = torch.softmax(pred_logits, dim=-1)[..., :-1]
    n, q, h, w = pred_masks.shape
    scores = classes.transpose(1, 2) @ torch.sigmoid(pred_masks).reshape(n, q, h * w)
    return scores.reshape(n, -1, h, w)


def check_input_size(x: torch.Tensor) -> None:
    """The pixel decoder doubles res5 back to res2: sides must be multiples of 32."""
    h, w = x.shape[-2:]
    if h % 32 or w % 32:
        raise ValueError(f"MaskFormer needs input sides that are multiples of 32, got {h}x{w}; pad the image")


class MaskFormer(nn.Module):
    """MaskFormer semantic segmenter ``r50`` / ``r101`` / ``r101c`` / ``swin-t`` / ``swin-s`` / ``swin-b`` / ``swin-l``.

    ``forward(x)`` gives the per-class scores at stride 4 (or at full resolution with ``full_resolution=True``);
    ``forward_features(x)`` the backbone's [res2, res3, res4, res5]; ``forward_outputs(x)`` the query outputs.
    """

    # Swin's relative position index is a function of the window size; a checkpoint without it keeps the built one.
    checkpoint_optional = (r"\.relative_position_index$",)
    checkpoint_ignored = (r"^criterion\.", r"^pixel_(mean|std)$", r"\.num_batches_tracked$", HF_UNUSED_SWIN_NORM)

    def __init__(self, variant: str, num_classes: int, *, full_resolution: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown MaskFormer variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.full_resolution = full_resolution
        self.output_stride = 1 if full_resolution else 4
        if variant in RESNETS:
            depth, deeplab = RESNETS[variant]
            backbone: ResNet | SwinBackbone = ResNet(depth, deeplab=deeplab)
        else:
            backbone = SwinBackbone(SWIN_VARIANTS[variant])
        self.backbone: nn.Module = backbone
        self.sem_seg_head = MaskFormerHead(backbone.out_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input_size(x)
        return self.backbone(x)

    def forward_outputs(self, x: torch.Tensor) -> MaskFormerOutputs:
        features = self.forward_features(x)
        mask_features = self.sem_seg_head.pixel_decoder(features)
        pred_logits, pred_masks = self.sem_seg_head.predictor(features[-1], mask_features)
        return MaskFormerOutputs(pred_logits, pred_masks, mask_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.forward_outputs(x)
        masks = outputs.pred_masks
        if self.full_resolution:
            masks = F.interpolate(masks, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=False)
        return semantic_inference(outputs.pred_logits, masks)

    @staticmethod
    def remap_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hugging Face checkpoints are renamed to detectron2's keys; old-format keys ``sem_seg_head.<pixel decoder
        key>`` move under ``sem_seg_head.pixel_decoder.``, as the official ``MaskFormerHead`` does for checkpoints
        without a version."""
        if is_hf_maskformer(state):
            return hf_to_detectron2(state)
        renamed = {}
        for key, tensor in state.items():
            head_key = key.startswith("sem_seg_head.") and not key.startswith(
                ("sem_seg_head.predictor.", "sem_seg_head.pixel_decoder.")
            )
            renamed[key.replace("sem_seg_head.", "sem_seg_head.pixel_decoder.", 1) if head_key else key] = tensor
        return renamed


def _describe(variant: str) -> str:
    label = f"R{variant[1:]}" if variant in RESNETS else f"Swin-{variant[-1].upper()}"
    backbone = "D2SwinTransformer"
    if variant in RESNETS:
        depth, deeplab = RESNETS[variant]
        backbone = f"detectron2 ResNet-{depth}" + (
            " with the DeepLab stem and res5 multi-grid 1, 2, 4" if deeplab else ""
        )
    return (
        f"MaskFormer {label} ({backbone}, FPN pixel decoder, 6-layer transformer decoder, 100 queries; "
        "facebookresearch/MaskFormer); per-class scores at stride 4, full_resolution=True (--model-option) gives the "
        "official full-resolution scores"
    )


register_variants(
    "maskformer",
    MaskFormer,
    VARIANTS,
    _describe,
    output_stride=4,
    options=("full_resolution",),
    output_kind="scores",
)

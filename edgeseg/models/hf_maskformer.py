"""Hugging Face ``MaskFormerForInstanceSegmentation`` checkpoints (ResNet or Swin backbone) → official names.

The HF model computes what the official one does (same ResNet with eval BatchNorm or Swin with padded windows, FPN
pixel decoder, DETR decoder, heads); only the names differ, and attention keeps separate query/key/value Linear
layers where ``nn.MultiheadAttention`` has one ``in_proj`` and Swin one ``qkv`` Linear (rows q, k, v). Both the
transformers 4.x decoder names (``fc1``, ``self_attn.out_proj``) and the ≥ 5 ones (``mlp.fc1``,
``self_attn.o_proj``) are accepted. BatchNorm ``num_batches_tracked`` counters, ``criterion.empty_weight`` and the
HF Swin model's final LayerNorm (MaskFormer never uses it) keep a name the model ignores and lists.
"""

from __future__ import annotations

import re

import torch

from edgeseg.models.checkpoint import CheckpointError

HF_PREFIX = "model.pixel_level_module."
_BACKBONE = HF_PREFIX + "encoder."
_DECODER = HF_PREFIX + "decoder."
_TRANSFORMER = "model.transformer_module."
# ResNet: the stem and the bottleneck convs (``layer.{0,1,2}`` = conv1..3, ``shortcut``), each conv + norm.
_RESNET_STEM = re.compile(rf"^{_BACKBONE}embedder\.embedder\.(convolution|normalization)\.(\w+)$")
_RESNET_BLOCK = re.compile(
    rf"^{_BACKBONE}encoder\.stages\.(\d+)\.layers\.(\d+)\.(?:shortcut|layer\.(\d))\.(convolution|normalization)\.(\w+)$"
)
_SWIN = _BACKBONE + "model."
_SWIN_BLOCK = rf"^{_SWIN}encoder\.layers\.(\d+)\.blocks\.(\d+)\."
# The Swin model's final LayerNorm, which MaskFormer's backbone never uses (it has one norm per output).
HF_UNUSED_SWIN_NORM = rf"^{_SWIN}layernorm\."

# (HF regex, official key) for MaskFormer's Swin backbone; query/key/value go to ``{q,k,v}_proj`` for merging.
SWIN_RULES = (
    (rf"^{_SWIN}embeddings\.patch_embeddings\.projection\.", "backbone.patch_embed.proj."),
    (rf"^{_SWIN}embeddings\.norm\.", "backbone.patch_embed.norm."),
    (rf"{_SWIN_BLOCK}layernorm_before\.", r"backbone.layers.\1.blocks.\2.norm1."),
    (rf"{_SWIN_BLOCK}layernorm_after\.", r"backbone.layers.\1.blocks.\2.norm2."),
    (rf"{_SWIN_BLOCK}attention\.self\.relative_position_", r"backbone.layers.\1.blocks.\2.attn.relative_position_"),
    (rf"{_SWIN_BLOCK}attention\.self\.(q)uery\.", r"backbone.layers.\1.blocks.\2.attn.\3_proj."),
    (rf"{_SWIN_BLOCK}attention\.self\.(k)ey\.", r"backbone.layers.\1.blocks.\2.attn.\3_proj."),
    (rf"{_SWIN_BLOCK}attention\.self\.(v)alue\.", r"backbone.layers.\1.blocks.\2.attn.\3_proj."),
    (rf"{_SWIN_BLOCK}attention\.output\.dense\.", r"backbone.layers.\1.blocks.\2.attn.proj."),
    (rf"{_SWIN_BLOCK}intermediate\.dense\.", r"backbone.layers.\1.blocks.\2.mlp.fc1."),
    (rf"{_SWIN_BLOCK}output\.dense\.", r"backbone.layers.\1.blocks.\2.mlp.fc2."),
    (rf"^{_SWIN}encoder\.layers\.(\d+)\.downsample\.", r"backbone.layers.\1.downsample."),
    (rf"^{_BACKBONE}hidden_states_norms\.(\d+)\.", r"backbone.norm\1."),
    (HF_UNUSED_SWIN_NORM, f"{_SWIN}layernorm."),  # kept for the model to ignore and list
)

# Decoder-layer names: transformers ≥ 5 and 4.x → nn.TransformerDecoderLayer's.
LAYER_RENAMES = (
    (".self_attn_layer_norm.", ".norm1."),
    (".encoder_attn_layer_norm.", ".norm2."),
    (".final_layer_norm.", ".norm3."),
    (".encoder_attn.", ".multihead_attn."),
    (".mlp.fc1.", ".linear1."),
    (".mlp.fc2.", ".linear2."),
    (".fc1.", ".linear1."),
    (".fc2.", ".linear2."),
    (".o_proj.", ".out_proj."),
)


def is_hf_maskformer(state: dict[str, torch.Tensor]) -> bool:
    """True for the key layout of a transformers ``MaskFormerForInstanceSegmentation`` state dict."""
    return any(key.startswith(HF_PREFIX) for key in state)


def _resnet_key(key: str) -> str | None:
    """detectron2's name of an HF ResNet key (stage s → ``res{s+2}``), or None."""
    if match := _RESNET_STEM.match(key):
        conv, part, field = "backbone.stem.conv1", match[1], match[2]
    elif match := _RESNET_BLOCK.match(key):
        name = "shortcut" if match[3] is None else f"conv{int(match[3]) + 1}"
        conv, part, field = f"backbone.res{int(match[1]) + 2}.{match[2]}.{name}", match[4], match[5]
    else:
        return None
    return f"{conv}.{field}" if part == "convolution" else f"{conv}.norm.{field}"


def _backbone_key(key: str) -> str:
    for pattern, replacement in SWIN_RULES:
        renamed, found = re.subn(pattern, replacement, key)
        if found:
            return renamed
    resnet = _resnet_key(key)
    if resnet is not None:
        return resnet
    raise CheckpointError(
        f"Hugging Face MaskFormer key {key!r} is neither a ResNet nor a MaskFormer-Swin backbone key; edgeseg "
        "builds those two backbones only (maskformer-r50/r101/swin-t/swin-s/swin-b/swin-l)"
    )


def _pixel_decoder_key(key: str, levels: int) -> str:
    rest = key[len(_DECODER) :]
    prefix = "sem_seg_head.pixel_decoder."
    if rest.startswith("mask_projection."):
        return prefix + "mask_features." + rest[len("mask_projection.") :]
    match = re.match(r"^fpn\.stem\.([01])\.(\w+)$", rest)
    if match:
        return f"{prefix}layer_{levels}.{'norm.' if match[1] == '1' else ''}{match[2]}"
    match = re.match(r"^fpn\.layers\.(\d+)\.(proj|block)\.([01])\.(\w+)$", rest)
    if match:
        name = "adapter" if match[2] == "proj" else "layer"
        return f"{prefix}{name}_{levels - 1 - int(match[1])}.{'norm.' if match[3] == '1' else ''}{match[4]}"
    raise CheckpointError(f"unknown Hugging Face MaskFormer pixel-decoder key {key!r}")


def _transformer_items(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    rest = key[len(_TRANSFORMER) :]
    prefix = "sem_seg_head.predictor."
    simple = {"queries_embedder.": "query_embed.", "input_projection.": "input_proj."}
    for old, new in simple.items():
        if rest.startswith(old):
            return {prefix + new + rest[len(old) :]: tensor}
    if rest.startswith("decoder.layernorm."):
        return {prefix + "transformer.decoder.norm." + rest[len("decoder.layernorm.") :]: tensor}
    if rest.startswith("decoder.layers."):
        name = "." + rest
        for old, new in LAYER_RENAMES:
            name = name.replace(old, new)
        return {prefix + "transformer" + name: tensor}
    raise CheckpointError(f"unknown Hugging Face MaskFormer transformer key {key!r}")


def _merge_in_projections(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``*.{q,k,v}_proj.{weight,bias}`` → ``*.in_proj_{weight,bias}`` (the decoder's ``nn.MultiheadAttention``) or
    ``*.qkv.{weight,bias}`` (Swin's attention): rows q, k, v."""
    merged = {k: v for k, v in state.items() if not re.search(r"\.[qkv]_proj\.", k)}
    stems = sorted({re.sub(r"\.[qkv]_proj\.(weight|bias)$", "", k) for k in state if re.search(r"\.[qkv]_proj\.", k)})
    for stem in stems:
        for field in ("weight", "bias"):
            parts = [state.get(f"{stem}.{p}_proj.{field}") for p in "qkv"]
            if any(p is None for p in parts):
                raise CheckpointError(f"Hugging Face MaskFormer attention {stem} lacks one of q/k/v_proj.{field}")
            name = f"{stem}.qkv.{field}" if stem.startswith("backbone.") else f"{stem}.in_proj_{field}"
            merged[name] = torch.cat([p for p in parts if p is not None])
    return merged


def hf_to_detectron2(state: dict[str, torch.Tensor], levels: int = 4) -> dict[str, torch.Tensor]:
    """A transformers MaskFormer (ResNet) state dict renamed to the official detectron2 keys."""
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(_BACKBONE):
            renamed[_backbone_key(key)] = tensor
        elif key.startswith(_DECODER):
            renamed[_pixel_decoder_key(key, levels)] = tensor
        elif key.startswith(_TRANSFORMER):
            renamed.update(_transformer_items(key, tensor))
        elif key.startswith("class_predictor."):
            renamed["sem_seg_head.predictor.class_embed." + key[len("class_predictor.") :]] = tensor
        elif match := re.match(r"^mask_embedder\.(\d+)\.0\.(\w+)$", key):
            renamed[f"sem_seg_head.predictor.mask_embed.layers.{match[1]}.{match[2]}"] = tensor
        else:
            renamed[key] = tensor  # criterion.* (ignored by the model) or a key the load reports as unexpected
    return _merge_in_projections(renamed)

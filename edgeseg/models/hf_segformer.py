"""Hugging Face ``transformers`` SegFormer checkpoints → NVlabs names used by :mod:`edgeseg.models.segformer`.

Accepts the Hub / transformers 4.x names (``segformer.encoder.block.{i}.{j}.attention.self.key``, separate
key and value Linear layers) and the transformers ≥ 5 module names (``segformer.stages.{i}.blocks.{j}
.attention.k_proj``), which are first renamed to 4.x. Key and value are concatenated into the ``kv``
Linear (K rows first). The HF model has no ``conv_seg``; edgeseg does not build it either.

HF runs every LayerNorm at eps 1e-5; edgeseg keeps the NVlabs eps (1e-6 for block and stage norms) that the
converted weights were trained with, so logits differ from HF's own by up to ~1e-5.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from edgeseg.models.checkpoint import CheckpointError
from edgeseg.models.mit import MIT_VARIANTS

# transformers ≥ 5 module names → 4.x names (applied in order).
V5_TO_V4 = (
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.", r"segformer.encoder.patch_embeddings.\1."),
    (r"^segformer\.stages\.(\d+)\.blocks\.", r"segformer.encoder.block.\1."),
    (r"^segformer\.stages\.(\d+)\.layer_norm\.", r"segformer.encoder.layer_norm.\1."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attention.self.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attention.self.layer_norm."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
    (r"\.layernorm_before\.", ".layer_norm_1."),
    (r"\.layernorm_after\.", ".layer_norm_2."),
    (r"^decode_head\.linear_projections\.", "decode_head.linear_c."),
)

# transformers 4.x names → NVlabs names; ``{n}`` stands for the 0-based stage or head input index + 1.
V4_TO_NVLABS = (
    (r"^segformer\.encoder\.patch_embeddings\.(\d+)\.proj\.", "backbone.patch_embed{n}.proj."),
    (r"^segformer\.encoder\.patch_embeddings\.(\d+)\.layer_norm\.", "backbone.patch_embed{n}.norm."),
    (r"^segformer\.encoder\.layer_norm\.(\d+)\.", "backbone.norm{n}."),
    (r"^segformer\.encoder\.block\.(\d+)\.", "backbone.block{n}."),
    (r"^decode_head\.linear_c\.(\d+)\.", "decode_head.linear_c{n}."),
)
BLOCK_RENAMES = (
    (".layer_norm_1.", ".norm1."),
    (".layer_norm_2.", ".norm2."),
    (".attention.self.query.", ".attn.q."),
    (".attention.self.sr.", ".attn.sr."),
    (".attention.self.layer_norm.", ".attn.norm."),
    (".attention.output.dense.", ".attn.proj."),
    (".mlp.dense1.", ".mlp.fc1."),
    (".mlp.dense2.", ".mlp.fc2."),
)
HEAD_RENAMES = (
    ("decode_head.linear_fuse.weight", "decode_head.linear_fuse.conv.weight"),
    ("decode_head.batch_norm.", "decode_head.linear_fuse.bn."),
    ("decode_head.classifier.", "decode_head.linear_pred."),
)


def is_hf_segformer(state: dict[str, torch.Tensor]) -> bool:
    """True when ``state`` holds transformers SegFormer keys (4.x or 5.x)."""
    return any(key.startswith("segformer.") for key in state)


def _rename(key: str) -> str:
    for pattern, repl in V5_TO_V4:
        key = re.sub(pattern, repl, key)
    for pattern, template in V4_TO_NVLABS:
        match = re.match(pattern, key)
        if match:
            key = template.format(n=int(match.group(1)) + 1) + key[match.end() :]
            break
    for old, new in BLOCK_RENAMES if key.startswith("backbone.block") else ():
        key = key.replace(old, new)
    for old, new in HEAD_RENAMES:
        if key.startswith(old):
            key = new + key[len(old) :]
    return key


def hf_to_nvlabs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename HF SegFormer keys to NVlabs ones and merge each block's key/value Linear into ``attn.kv``.

    A key or value without its partner raises :class:`CheckpointError`, naming it.
    """
    out: dict[str, torch.Tensor] = {}
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name = _rename(key)
        match = re.match(r"^(backbone\.block\d+\.\d+)\.attention\.self\.(key|value)\.(weight|bias)$", name)
        if match:
            halves.setdefault(f"{match.group(1)}.attn.kv.{match.group(3)}", {})[match.group(2)] = tensor
        else:
            out[name] = tensor
    for name, parts in halves.items():
        if set(parts) != {"key", "value"}:
            raise CheckpointError(
                f"{name}: the checkpoint has the attention {next(iter(parts))} but not its partner; it is incomplete"
            )
        out[name] = torch.cat([parts["key"], parts["value"]], dim=0)
    return out


# NVlabs names → transformers 4.x (Hub) names: the inverse of the renames above.
NVLABS_TO_V4 = (
    (r"^backbone\.patch_embed(\d+)\.proj\.", "segformer.encoder.patch_embeddings.{i}.proj."),
    (r"^backbone\.patch_embed(\d+)\.norm\.", "segformer.encoder.patch_embeddings.{i}.layer_norm."),
    (r"^backbone\.norm(\d+)\.", "segformer.encoder.layer_norm.{i}."),
    (r"^backbone\.block(\d+)\.", "segformer.encoder.block.{i}."),
    (r"^decode_head\.linear_c(\d+)\.", "decode_head.linear_c.{i}."),
)
# NVlabs keys the transformers model does not have (the head's never-used conv_seg).
NVLABS_ONLY = (r"^decode_head\.conv_seg\.",)


def nvlabs_to_hf(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """NVlabs SegFormer keys → transformers 4.x (Hub) keys, splitting ``attn.kv`` into key and value.

    Returns the converted state and the dropped NVlabs-only keys (``decode_head.conv_seg.*``).
    """
    out: dict[str, torch.Tensor] = {}
    dropped = []
    for key, tensor in state.items():
        if any(re.match(p, key) for p in NVLABS_ONLY):
            dropped.append(key)
            continue
        name = key
        for pattern, template in NVLABS_TO_V4:
            match = re.match(pattern, name)
            if match:
                name = template.format(i=int(match.group(1)) - 1) + name[match.end() :]
                break
        if name.startswith("segformer.encoder.block."):
            for hf, nv in BLOCK_RENAMES:
                name = name.replace(nv, hf)
        for hf, nv in HEAD_RENAMES:
            if name.startswith(nv):
                name = hf + name[len(nv) :]
        kv = re.match(r"^(segformer\.encoder\.block\.\d+\.\d+)\.attn\.kv\.(weight|bias)$", name)
        if kv:
            key_part, value_part = tensor.chunk(2, dim=0)
            out[f"{kv.group(1)}.attention.self.key.{kv.group(2)}"] = key_part.clone()
            out[f"{kv.group(1)}.attention.self.value.{kv.group(2)}"] = value_part.clone()
        else:
            out[name] = tensor
    return out, dropped


def hf_config(variant: str, num_classes: int, decoder_dim: int) -> dict[str, object]:
    """A transformers ``SegformerConfig`` (as JSON) for an edgeseg SegFormer variant with decoder width E."""
    mit = MIT_VARIANTS[variant]
    return {
        "model_type": "segformer",
        "architectures": ["SegformerForSemanticSegmentation"],
        "num_channels": 3,
        "num_encoder_blocks": 4,
        "depths": list(mit.depths),
        "sr_ratios": [8, 4, 2, 1],
        "hidden_sizes": list(mit.embed_dims),
        "patch_sizes": [7, 3, 3, 3],
        "strides": [4, 2, 2, 2],
        "num_attention_heads": [1, 2, 5, 8],
        "mlp_ratios": [4, 4, 4, 4],
        "hidden_act": "gelu",
        "decoder_hidden_size": decoder_dim,
        "semantic_loss_ignore_index": 255,
        "id2label": {str(i): f"class_{i}" for i in range(num_classes)},
        "label2id": {f"class_{i}": i for i in range(num_classes)},
    }


def convert_checkpoint(model: str, source: str | Path, destination: str | Path, to: str) -> list[str]:
    """Write a SegFormer checkpoint in the other format; returns notes on what changed besides names.

    ``to="hf"``: a transformers folder (``model.safetensors`` with Hub 4.x names + ``config.json``), loadable
    with ``SegformerForSemanticSegmentation.from_pretrained``. ``to="nvlabs"``: an mmseg-0.x ``.pth``
    (``{'state_dict': ...}``) for the NVlabs code, whose never-used ``conv_seg`` is written as zeros.
    """
    from safetensors.torch import save_file

    from edgeseg.models.checkpoint import read_state_dict

    variant = model.removeprefix("segformer-")
    state = read_state_dict(source)
    nvlabs = hf_to_nvlabs(state) if is_hf_segformer(state) else state
    num_classes, decoder_dim = nvlabs["decode_head.linear_pred.weight"].shape[:2]
    destination = Path(destination)
    if to == "hf":
        converted, dropped = nvlabs_to_hf(nvlabs)
        destination.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in converted.items()}, destination / "model.safetensors")
        config = hf_config(variant, num_classes, decoder_dim)
        (destination / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return [f"dropped {key} (never used by the forward)" for key in dropped]
    if to == "nvlabs":
        notes = []
        for suffix, shape in (("weight", (num_classes, 128, 1, 1)), ("bias", (num_classes,))):
            key = f"decode_head.conv_seg.{suffix}"
            if key not in nvlabs:
                nvlabs[key] = torch.zeros(shape)
                notes.append(f"added {key} as zeros (never used, but the NVlabs code loads it strictly)")
        torch.save({"state_dict": nvlabs, "meta": {"converted_by": "edgeseg"}}, destination)
        return notes
    raise ValueError(f"unknown checkpoint format {to!r}; choose hf or nvlabs")

"""Mix Transformer (MiT) encoder, shared by SegFormer and U-MixFormer.

One module layout, named after NVlabs/SegFormer's ``mix_transformer.py`` (``patch_embed{i}``,
``block{i}.{j}.attn.q/kv/sr/norm``, ``mlp.fc1/dwconv.dwconv/fc2``, ``norm{i}``), serves both families.
Checkpoints of OpenMMLab's mmseg-1.x ``MixVisionTransformer`` (``layers.{s}.{0,1,2}``, a
``MultiheadAttention`` with one ``in_proj``, 1×1-conv FFN) are mapped onto it by :func:`mmseg_to_nvlabs`;
the mapping is exact (the q/k/v rows are split, 1×1 conv kernels flattened).

The two official codes differ in LayerNorm eps: NVlabs uses 1e-6 for block and stage norms but 1e-5 for
the patch-embedding and spatial-reduction norms; mmseg-1.x uses 1e-6 everywhere. Both eps are
constructor arguments (:data:`NVLABS_EPS`, :data:`MMSEG_EPS`) and must follow the checkpoint's code.

Export notes: every size comes from a tensor's shape (no Python ``int`` casts), so the module traces with
dynamic H and W; K and V come from one Linear split on the channel dim (no 5-D tensor); attention is
``softmax((q·scale) kᵀ) v`` per head on the spatially reduced K/V.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.layers import to_image, to_tokens

# (block and stage norm eps, patch-embedding and spatial-reduction norm eps) of each official code.
NVLABS_EPS = (1e-6, 1e-5)
MMSEG_EPS = (1e-6, 1e-6)


@dataclass(frozen=True)
class MiTConfig:
    """Hyper-parameters of one MiT variant."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4


MIT_VARIANTS = {
    "b0": MiTConfig((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": MiTConfig((64, 128, 320, 512), (2, 2, 2, 2)),
    "b2": MiTConfig((64, 128, 320, 512), (3, 4, 6, 3)),
    "b3": MiTConfig((64, 128, 320, 512), (3, 4, 18, 3)),
    "b4": MiTConfig((64, 128, 320, 512), (3, 8, 27, 3)),
    "b5": MiTConfig((64, 128, 320, 512), (3, 6, 40, 3)),
}
# (kernel, stride) of each stage's overlapping patch embedding; padding is kernel // 2.
PATCH_EMBED = ((7, 4), (3, 2), (3, 2), (3, 2))


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``softmax(q kᵀ / √d) v`` per head on B×N×C tokens (channels head-major); returns B×Nq×C.

    q is scaled before the product, so the score matrix is made once and softmax-ed once.
    """
    b, _, c = q.shape
    head_dim = c // num_heads

    def heads(t: torch.Tensor) -> torch.Tensor:  # B×N×C → B×h×N×d
        return t.reshape(b, -1, num_heads, head_dim).transpose(1, 2)

    scores = (heads(q) * head_dim**-0.5) @ heads(k).transpose(-2, -1)
    out = scores.softmax(dim=-1) @ heads(v)
    return out.transpose(1, 2).reshape(b, -1, c)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with 'same'-style padding, then LayerNorm on the tokens."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return self.norm(to_tokens(x)), (x.shape[2], x.shape[3])


class EfficientSelfAttention(nn.Module):
    """Self-attention with K/V from a ``sr``×``sr`` strided conv + LayerNorm (none when ``sr`` = 1)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, sr_eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=sr_eps)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        reduced = self.norm(to_tokens(self.sr(to_image(x, size)))) if self.sr_ratio > 1 else x
        k, v = self.kv(reduced).chunk(2, dim=-1)  # weight rows [0:C] are K, [C:2C] are V
        return self.proj(multi_head_attention(self.q(x), k, v, self.num_heads))


class DepthwiseConv(nn.Module):
    """3×3 depthwise conv with bias (wrapper giving the official key ``dwconv.dwconv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class MixFFN(nn.Module):
    """fc1 → 3×3 depthwise conv on the image view → GELU (erf) → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        hidden = self.dwconv(to_image(self.fc1(x), size))
        return self.fc2(to_tokens(F.gelu(hidden)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MixFFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int, eps: float, sr_eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, sr_eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), size)
        return x + self.mlp(self.norm2(x), size)


class MixVisionTransformer(nn.Module):
    """Four stages of patch embedding, blocks and LayerNorm; outputs at strides 4, 8, 16 and 32.

    ``eps`` = (block and stage norm eps, patch-embedding and spatial-reduction norm eps): use
    :data:`NVLABS_EPS` for NVlabs/SegFormer checkpoints and :data:`MMSEG_EPS` for mmseg-1.x ones.
    """

    def __init__(self, config: MiTConfig, eps: tuple[float, float] = NVLABS_EPS) -> None:
        super().__init__()
        norm_eps, embed_eps = eps
        dims = config.embed_dims
        for i, ((kernel, stride), dim) in enumerate(zip(PATCH_EMBED, dims)):
            cin = 3 if i == 0 else dims[i - 1]
            self.add_module(f"patch_embed{i + 1}", OverlapPatchEmbed(cin, dim, kernel, stride, embed_eps))
            blocks = nn.ModuleList(
                Block(dim, config.num_heads[i], config.sr_ratios[i], config.mlp_ratio, norm_eps, embed_eps)
                for _ in range(config.depths[i])
            )
            self.add_module(f"block{i + 1}", blocks)
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dim, eps=norm_eps))
        self.out_channels = dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i in range(1, 5):
            tokens, size = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                tokens = block(tokens, size)
            x = to_image(getattr(self, f"norm{i}")(tokens), size)
            features.append(x)
        return features


def _mmseg_block_key(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """NVlabs name(s) and tensor(s) for one mmseg-1.x ``TransformerEncoderLayer`` entry."""
    if name.startswith("attn.attn.in_proj_"):
        kind = name.rsplit("_", 1)[1]  # weight or bias; rows are [q; k; v]
        dim = tensor.shape[0] // 3
        return [(f"attn.q.{kind}", tensor[:dim]), (f"attn.kv.{kind}", tensor[dim:])]
    renames = {
        "attn.attn.out_proj.": "attn.proj.",
        "ffn.layers.0.": "mlp.fc1.",
        "ffn.layers.1.": "mlp.dwconv.dwconv.",
        "ffn.layers.4.": "mlp.fc2.",
    }
    for old, new in renames.items():
        if name.startswith(old):
            if new in ("mlp.fc1.", "mlp.fc2.") and tensor.ndim == 4:
                tensor = tensor.flatten(1)  # 1×1 conv kernel → Linear weight
            return [(new + name[len(old) :], tensor)]
    return [(name, tensor)]  # norm1, norm2, attn.sr, attn.norm keep their names


def mmseg_to_nvlabs(state: dict[str, torch.Tensor], prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """Map mmseg-1.x MiT keys under ``prefix`` (``layers.{s}.{0,1,2}``) to this module's NVlabs names.

    Keys outside ``prefix + 'layers.'`` and unrecognised keys pass through unchanged, so a strict load
    still names them.
    """
    head = prefix + "layers."
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key[len(head) :].split(".", 2) if key.startswith(head) else []
        if len(parts) != 3 or not parts[0].isdigit():
            out[key] = tensor
            continue
        stage, part, rest = int(parts[0]) + 1, parts[1], parts[2]
        if part == "0":
            rest = rest.replace("projection.", "proj.", 1)
            out[f"{prefix}patch_embed{stage}.{rest}"] = tensor
        elif part == "1" and "." in rest:
            index, name = rest.split(".", 1)
            for new, value in _mmseg_block_key(name, tensor):
                out[f"{prefix}block{stage}.{index}.{new}"] = value
        elif part == "2":
            out[f"{prefix}norm{stage}.{rest}"] = tensor
        else:
            out[key] = tensor
    return out

"""Write ``mmseg_setr_<head>_tiny.json``: mmsegmentation's SETR modules on :func:`random_weights` (see mmseg_setr.py).

Run in an environment with torch, mmsegmentation 1.2.2, mmengine 0.10.7 and mmcv-lite 2.1.0 (pure Python; the
compiled ``mmcv.ops`` that some mmseg modules import at import time are replaced by placeholders, none is used)::

    python tests/reference/make_mmseg_setr.py

The configurations are mmseg's ``configs/_base_/models/setr_{naive,pup,mla}.py`` with ViT-Ti dimensions (192-d, 12
blocks, 3 heads), img_size 256, 150 classes and BatchNorm for SyncBN; inference = backbone (+ neck) + decode head,
then mmseg's resize of the logits to the input size (bilinear, align_corners False).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from tests.reference.mmseg_setr import HEADS, SIZES, input_image, random_weights
from tests.reference.sampling import sampled


def _stub_mmcv_ops() -> None:
    class Missing:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("mmcv ops are not available in mmcv-lite")

    def lookup(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return Missing

    ops = types.ModuleType("mmcv.ops")
    ops.__getattr__ = lookup  # type: ignore[method-assign]
    ops.__path__ = []  # type: ignore[attr-defined]
    sys.modules["mmcv.ops"] = ops


def build(head: str) -> tuple[torch.nn.Module, torch.nn.Module | None, torch.nn.Module]:
    from mmseg.models.backbones.vit import VisionTransformer
    from mmseg.models.decode_heads.setr_mla_head import SETRMLAHead
    from mmseg.models.decode_heads.setr_up_head import SETRUPHead
    from mmseg.models.necks.mla_neck import MLANeck

    bn = dict(type="BN", requires_grad=True)
    backbone = VisionTransformer(
        img_size=(256, 256),
        patch_size=16,
        embed_dims=192,
        num_layers=12,
        num_heads=3,
        out_indices=(2, 5, 8, 11),
        drop_rate=0.0,
        norm_cfg=dict(type="LN", eps=1e-6, requires_grad=True),
        with_cls_token=head != "mla",
        interpolate_mode="bilinear",
    )
    common = dict(num_classes=150, dropout_ratio=0, norm_cfg=bn, align_corners=False)
    neck = None
    if head == "mla":
        neck = MLANeck(in_channels=[192] * 4, out_channels=256, norm_cfg=bn, act_cfg=dict(type="ReLU"))
        decode = SETRMLAHead(in_channels=(256,) * 4, channels=512, in_index=(0, 1, 2, 3), mla_channels=128, **common)
    else:
        naive = head == "naive"
        decode = SETRUPHead(
            in_channels=192,
            channels=256,
            in_index=3,
            num_convs=1 if naive else 4,
            up_scale=4 if naive else 2,
            kernel_size=1 if naive else 3,
            **common,
        )
    return backbone, neck, decode


def main() -> None:
    _stub_mmcv_ops()
    for head in HEADS:
        backbone, neck, decode = build(head)
        modules = {"backbone": backbone, "decode_head": decode} | ({"neck": neck} if neck is not None else {})
        state = {f"{prefix}.{k}": v for prefix, m in modules.items() for k, v in m.state_dict().items()}
        keys = [(name, list(tensor.shape)) for name, tensor in state.items()]
        weights = random_weights(keys)
        for prefix, module in modules.items():
            module.load_state_dict(
                {k[len(prefix) + 1 :]: torch.from_numpy(v) for k, v in weights.items() if k.startswith(prefix + ".")}
            )
            module.eval()
        outputs = {}
        with torch.no_grad():
            for size in SIZES:
                x = torch.from_numpy(input_image(size))
                features = backbone(x)
                if neck is not None:
                    features = neck(features)
                head_logits = decode(features)
                logits = F.interpolate(head_logits, size=size, mode="bilinear", align_corners=False)
                outputs["x".join(map(str, size))] = {
                    name: sampled(t.numpy()) for name, t in (("head_logits", head_logits), ("logits", logits))
                }
        record = {
            "made_with": "mmsegmentation 1.2.2, mmengine 0.10.7, mmcv-lite 2.1.0, torch " + torch.__version__,
            "config": f"configs/_base_/models/setr_{head}.py with ViT-Ti dims (192-d, 12 blocks, 3 heads), img_size "
            "256, out_indices (2, 5, 8, 11), 150 classes, BN",
            "keys": keys,
            "outputs": outputs,
        }
        path = Path(__file__).resolve().parent / f"mmseg_setr_{head}_tiny.json"
        path.write_text(json.dumps(record) + "\n")
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB, {len(keys)} tensors)")


if __name__ == "__main__":
    main()

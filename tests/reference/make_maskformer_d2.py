"""Write ``maskformer_<variant>.json``: the official MaskFormer on :func:`random_weights` (see maskformer_d2.py).

Run with torch, fvcore, iopath, omegaconf, cloudpickle, pillow and timm installed, and facebookresearch/MaskFormer
(da3e60d) and detectron2 v0.6 (with its projects/DeepLab) as source trees, nothing compiled::

    python tests/reference/make_maskformer_d2.py MASKFORMER_DIR DETECTRON2_DIR [GOLDEN_DIR]

detectron2's compiled ops, torchvision and pycocotools are imported by detectron2's packages but not called by
MaskFormer's inference: they are replaced by placeholder modules that raise when used. timm is imported without its
package ``__init__`` (which pulls in torchvision); Swin uses only ``timm.layers``. The model is built as the golden
data's notes say (``get_cfg``, ``add_deeplab_config``, ``add_mask_former_config``, ``merge_from_file``, the
``MaskFormer`` meta-architecture) and run as they do: the normalised input straight into the backbone and the head,
then ``semantic_inference`` on the stride-4 masks and on the masks upsampled to the input size. With GOLDEN_DIR the
same code first reproduces the golden R50 outputs, as a check of this environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from tests.reference.maskformer_d2 import COMPUTED, CONFIGS, input_image, random_weights
from tests.reference.sampling import sampled

STUBBED = ("torchvision", "pycocotools", "detectron2._C")


class _Placeholder(type):
    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return cls


class _Missing(metaclass=_Placeholder):
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("a stubbed compiled op was called")


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if any(name == s or name.startswith(s + ".") for s in STUBBED):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0"
        return module

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        pass


def _prepare_imports(maskformer: Path, detectron2: Path) -> None:
    sys.meta_path.insert(0, _StubFinder())
    from PIL import Image

    Image.LINEAR = Image.BILINEAR  # detectron2 v0.6's data transforms name Pillow < 10's alias at import time
    root = importlib.util.find_spec("timm").submodule_search_locations[0]
    for name, sub in (("timm", ""), ("timm.models", "/models")):
        package = types.ModuleType(name)
        package.__path__ = [root + sub]
        sys.modules[name] = package
    sys.path[:0] = [str(maskformer), str(detectron2), str(detectron2 / "projects" / "DeepLab")]


def build(maskformer: Path, config: str) -> torch.nn.Module:
    from deeplab import add_deeplab_config
    from detectron2.config import get_cfg
    from detectron2.modeling import META_ARCH_REGISTRY
    from mask_former import add_mask_former_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_mask_former_config(cfg)
    cfg.merge_from_file(str(maskformer / "configs" / "ade20k-150" / config))
    cfg.MODEL.DEVICE = "cpu"
    return META_ARCH_REGISTRY.get("MaskFormer")(cfg).eval()


def run(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        outputs = model.sem_seg_head(model.backbone(x))
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        full = F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {
            "pred_logits": logits,
            "pred_masks": masks,
            "semseg": model.semantic_inference(logits[0], masks[0])[None],
            "semseg_full": model.semantic_inference(logits[0], full[0])[None],
        }


def check_golden(maskformer: Path, golden: Path) -> None:
    """The environment reproduces the golden R50 outputs from the golden checkpoint."""
    model = build(maskformer, "maskformer_R50_bs16_160k.yaml")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r50.pth"
        subprocess.run(
            [sys.executable, str(golden / "make_checkpoint.py"), str(golden / "maskformer_r50" / "keys.json"), path],
            check=True,
            capture_output=True,
        )
        model.load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=True)
    outputs = run(model, torch.from_numpy(np.load(golden / "maskformer_r50" / "input.npy")))
    for name in ("pred_logits", "pred_masks", "semseg"):
        diff = np.abs(outputs[name].numpy() - np.load(golden / "maskformer_r50" / f"{name}.npy")).max()
        print(f"golden R50 {name}: max abs diff {diff:.2e}")
        assert diff <= 1e-4, name


def main() -> None:
    maskformer, detectron2 = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    _prepare_imports(maskformer, detectron2)
    torch.set_num_threads(2)
    if len(sys.argv) > 3:
        check_golden(maskformer, Path(sys.argv[3]).resolve())
    for variant, config in CONFIGS.items():
        model = build(maskformer, config)
        state = model.state_dict()
        keys = [(name, list(t.shape)) for name, t in state.items() if not name.endswith(COMPUTED)]
        weights = type(state)((k, torch.from_numpy(v)) for k, v in random_weights(keys).items())
        weights._metadata = state._metadata  # the module versions: without them the head renames its keys
        missing = model.load_state_dict(weights, strict=False).missing_keys
        assert all(name.endswith(COMPUTED) for name in missing), missing
        outputs = run(model, torch.from_numpy(input_image()))
        params = sum(p.numel() for p in model.parameters())
        record = {
            "made_with": "facebookresearch/MaskFormer da3e60d, detectron2 v0.6 (d1e0456) from source, torch "
            + torch.__version__,
            "config": f"configs/ade20k-150/{config}; MaskFormer.backbone + sem_seg_head on the normalised input, "
            "semantic_inference on the stride-4 masks (semseg) and on the masks upsampled to the input (semseg_full)",
            "params": params,
            "keys": keys,
            "outputs": {name: sampled(t.numpy()) for name, t in outputs.items()},
        }
        path = Path(__file__).resolve().parent / f"maskformer_{variant}.json"
        path.write_text(json.dumps(record) + "\n")
        print(f"wrote {path.name} ({path.stat().st_size // 1024} KiB, {len(keys)} tensors, {params:,} parameters)")


if __name__ == "__main__":
    main()

"""The official released checkpoints edgeseg knows by name (torch-free data).

Every entry names its source. ``sha256`` is set only where the publisher states one; a file name with a
torch.hub-style hash suffix (``name-<hex>.pth``) gives ``sha256_prefix``. Entries without a ``url`` cannot be
fetched automatically (Google Drive folders, no release): their ``page`` says where to get the file by hand,
then ``--weights PATH`` loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HF_ENDPOINT = "https://huggingface.co"
SEGFORMER_PAPER = "SegFormer (arXiv 2105.15203)"
NO_HASH = "unverified: publisher gives no hash"


@dataclass(frozen=True)
class WeightsEntry:
    """One released checkpoint of one registered model."""

    model: str  # registry name
    name: str  # what --weights takes: ade20k, cityscapes, imagenet
    kind: Literal["segmentation", "backbone"]  # backbone: ImageNet classifier weights, no segmentation head
    num_classes: int
    file: str  # the publisher's file name
    source: str  # where the facts below come from
    url: str | None = None  # direct download; None: get it by hand from ``page``
    page: str | None = None
    classes: str | None = None  # class preset (edgeseg.classes) of the dataset it was trained on
    sha256: str | None = None
    sha256_prefix: str | None = None
    training_size: tuple[int, int] | None = None  # crop (height, width) it was trained at
    miou: float | None = None  # published single-scale mIoU (%)
    hf_repo: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.name}"

    @property
    def verification(self) -> str:
        """How a downloaded file is checked."""
        if self.sha256:
            return "sha256"
        if self.sha256_prefix:
            return f"sha256 prefix {self.sha256_prefix}"
        return NO_HASH


def _hf(model: str, name: str, repo: str, **fields: object) -> WeightsEntry:
    """A checkpoint on the Hugging Face Hub (transformers SegFormer keys, ``pytorch_model.bin`` on main)."""
    return WeightsEntry(
        model=model,
        name=name,
        file="pytorch_model.bin",
        url=f"{HF_ENDPOINT}/{repo}/resolve/main/pytorch_model.bin",
        page=f"{HF_ENDPOINT}/{repo}",
        hf_repo=repo,
        **fields,  # type: ignore[arg-type]
    )


# Published single-scale mIoU: B0-B2 from the U-MixFormer paper's Table 1 (shared/notes/segformer.md section 4);
# B5 ADE20K 51.0 from the SegFormer paper's Figure 1 caption. Other variants: no published number was sourced.
_ADE_MIOU = {"b0": 37.4, "b1": 42.2, "b2": 46.5, "b5": 51.0}
_CITYSCAPES_MIOU = {"b0": 76.2, "b1": 78.5, "b2": 81.0}
_HUB_LISTING = "Hugging Face Hub listing of the repository (nvidia, 2021), seen through the docs search"

_SEGFORMER = [
    *(
        _hf(
            f"segformer-{b}",
            "ade20k",
            f"nvidia/segformer-{b}-finetuned-ade-{size}-{size}",
            kind="segmentation",
            num_classes=150,
            classes="ade20k",
            training_size=(size, size),
            miou=_ADE_MIOU.get(b),
            source=f"{_HUB_LISTING}; mIoU: {SEGFORMER_PAPER} via shared/notes/segformer.md",
        )
        for b, size in (("b0", 512), ("b1", 512), ("b2", 512), ("b3", 512), ("b5", 640))
    ),
    *(
        _hf(
            f"segformer-{b}",
            "cityscapes",
            f"nvidia/segformer-{b}-finetuned-cityscapes-1024-1024",
            kind="segmentation",
            num_classes=19,
            classes="cityscapes",
            training_size=(1024, 1024),
            miou=_CITYSCAPES_MIOU.get(b),
            source=f"{_HUB_LISTING}; mIoU: {SEGFORMER_PAPER} via shared/notes/segformer.md",
        )
        for b in ("b0", "b1", "b2", "b3", "b4", "b5")
    ),
    *(
        _hf(
            f"segformer-{b}",
            "imagenet",
            f"nvidia/mit-{b}",
            kind="backbone",
            num_classes=1000,
            training_size=(224, 224),
            source=f"{_HUB_LISTING} (MiT-{b.upper()} ImageNet-1k encoder)",
        )
        for b in ("b0", "b1", "b2", "b3", "b4", "b5")
    ),
]

_SETR_README = "fudan-zvg/SETR README ('Pre-trained model'); its trained-model links are empty"
_SETR = [
    WeightsEntry(
        model=f"setr-{head}-large",
        name="imagenet",
        kind="backbone",
        num_classes=1000,
        file="jx_vit_large_p16_384-b3be5167.pth",
        url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
        "jx_vit_large_p16_384-b3be5167.pth",
        sha256_prefix="b3be5167",
        training_size=(384, 384),
        source=_SETR_README,
    )
    for head in ("naive", "pup", "mla")
] + [
    WeightsEntry(
        model=f"setr-{head}-base",
        name="imagenet",
        kind="backbone",
        num_classes=1000,
        file="deit_base_distilled_patch16_384-d0272ac0.pth",
        url="https://dl.fbaipublicfiles.com/deit/deit_base_distilled_patch16_384-d0272ac0.pth",
        sha256_prefix="d0272ac0",
        training_size=(384, 384),
        source=_SETR_README,
    )
    for head in ("naive", "pup", "mla")
]

CATALOG: tuple[WeightsEntry, ...] = (*_SEGFORMER, *_SETR)

# What is known about families without an entry (or with backbones only).
FAMILY_NOTES = {
    "afformer": "trained weights are on Google Drive / AliDrive (dongbo811/AFFormer; shared/notes/afformer.md), "
    "not at a direct URL: download by hand and pass --weights PATH",
    "cgrseg": "no trained CGRSeg weights are released (nizhenliang/CGRSeg issue #2; shared/notes/cgrseg.md)",
    "cloformer": "no weights are released (qhfan/CloFormer README; shared/notes/cloformer.md)",
    "umixformer": "the README links no checkpoints (julian-klitzing/u-mixformer)",
    "setr": "the README's trained-model links are empty (fudan-zvg/SETR); only the ImageNet backbones are listed",
    "segformer": "NVlabs' own .pth files are in Google Drive / OneDrive folders (NVlabs/SegFormer README); the "
    "entries use the same weights converted to the Hugging Face Hub by NVIDIA",
}


def entries_for(model: str | None = None, catalog: tuple[WeightsEntry, ...] = CATALOG) -> list[WeightsEntry]:
    """The entries of ``model`` (all entries when None), in catalog order."""
    return [e for e in catalog if model is None or e.model == model]


def find_entry(model: str, name: str, catalog: tuple[WeightsEntry, ...] = CATALOG) -> WeightsEntry:
    """The entry ``name`` of ``model``; raises ValueError listing what there is, or why there is nothing."""
    known = entries_for(model, catalog)
    for entry in known:
        if entry.name == name:
            return entry
    family = model.split("-", 1)[0]
    if known:
        listed = ", ".join(e.name for e in known)
        raise ValueError(
            f"{model} has no released weights called {name!r}; choose one of {listed} (edgeseg weights list)"
        )
    why = FAMILY_NOTES.get(family, "edgeseg knows no released checkpoint for it")
    raise ValueError(f"{model} has no released weights by name: {why}")

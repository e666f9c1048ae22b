"""``--weights``: a catalog name, a local file or ``hf:REPO``, resolved to a local checkpoint and its classes.

Torch-free except :func:`infer_num_classes`, which builds the model to read a local checkpoint's class count.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.classes import get_preset
from edgeseg.weights.catalog import CATALOG, WeightsEntry, find_entry
from edgeseg.weights.download import Progress, download

HF_PREFIX = "hf:"
HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
# Weight files looked for in a Hugging Face snapshot, safest first.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def edgeseg_home() -> Path:
    """``$EDGESEG_HOME``, else ``~/.cache/edgeseg``."""
    return Path(os.environ.get("EDGESEG_HOME") or Path.home() / ".cache" / "edgeseg")


def weights_cache() -> Path:
    """Where downloaded checkpoints are kept."""
    return edgeseg_home() / "weights"


def cached_path(entry: WeightsEntry, cache: Path) -> Path:
    """Where ``entry``'s file is kept: one folder per URL (entries sharing a file share it), the publisher's name."""
    if entry.url is None:
        raise ValueError(f"{entry.key} has no download URL")
    folder = hashlib.sha256(entry.url.encode()).hexdigest()[:16]
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", entry.file):
        raise ValueError(f"{entry.key}: file name {entry.file!r} is not a plain file name")
    return cache / folder / entry.file


@dataclass(frozen=True)
class ResolvedWeights:
    """A local checkpoint file and what is known about its classes."""

    path: Path
    source: str  # what the manifest records: "model/name <url>", "hf:REPO" or the file given
    num_classes: int | None = None
    classes: str | None = None  # class preset name
    class_names: tuple[str, ...] | None = None  # from a Hugging Face config's id2label


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.lower().endswith(CHECKPOINT_SUFFIXES) or Path(spec).exists()


def _local(spec: str) -> ResolvedWeights:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"--weights {spec}: no such file; give a checkpoint file, hf:REPO or a name from `edgeseg weights list`"
        )
    return ResolvedWeights(path=path, source=path.name)


def _hf_labels(config: Path) -> tuple[str, ...] | None:
    """Class names from a cached ``config.json``'s ``id2label`` (indices 0..n-1), else None."""
    try:
        data: Any = json.loads(config.read_text(encoding="utf-8"))
        labels = data["id2label"]
        names = tuple(str(labels[str(i)]) for i in range(len(labels)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return names if names and all(0 < len(n) <= 256 for n in names) else None


def _from_hf_cache(repo: str, hf_cache: Path | None, catalog: tuple[WeightsEntry, ...]) -> ResolvedWeights:
    """``hf:REPO`` from the local Hugging Face cache only (offline); a repository in the catalog gets its preset."""
    if not HF_REPO.match(repo):
        raise ValueError(
            f"--weights hf:{repo}: expected hf:OWNER/NAME, e.g. hf:nvidia/segformer-b0-finetuned-ade-512-512"
        )
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise ImportError("--weights hf:REPO reads the Hugging Face cache: pip install huggingface_hub") from None
    for name in HF_WEIGHT_FILES:
        found = try_to_load_from_cache(repo, name, cache_dir=hf_cache)
        if isinstance(found, str):
            listed = next((e for e in catalog if e.hf_repo == repo and e.kind == "segmentation"), None)
            if listed is not None and listed.classes:
                preset = get_preset(listed.classes)
                return ResolvedWeights(
                    Path(found), f"{HF_PREFIX}{repo}", preset.num_classes, preset.name, preset.classes
                )
            config = try_to_load_from_cache(repo, "config.json", cache_dir=hf_cache)
            names = _hf_labels(Path(config)) if isinstance(config, str) else None
            return ResolvedWeights(
                path=Path(found),
                source=f"{HF_PREFIX}{repo}",
                num_classes=len(names) if names else None,
                class_names=names,
            )
    raise FileNotFoundError(
        f"--weights hf:{repo}: none of {', '.join(HF_WEIGHT_FILES)} is in the local Hugging Face cache "
        f"({hf_cache or 'HF_HUB_CACHE'}); edgeseg never downloads from the Hub for hf:. Fetch it first, e.g. "
        f"`huggingface-cli download {repo}`, or use a catalog name (edgeseg weights list)"
    )


def _from_catalog(
    model: str,
    name: str,
    catalog: tuple[WeightsEntry, ...],
    cache: Path | None,
    progress: Progress | None,
) -> ResolvedWeights:
    entry = find_entry(model, name, catalog)
    if entry.kind != "segmentation":
        raise ValueError(
            f"{entry.key} is an ImageNet {entry.kind} checkpoint without a segmentation head; it is listed for "
            "reference only. Export a segmentation checkpoint (edgeseg weights list --model " + model + ")"
        )
    if entry.url is None:
        raise ValueError(
            f"{entry.key} cannot be downloaded automatically; get {entry.file} from {entry.page} "
            "and pass --weights PATH"
        )
    path = download(
        entry.url,
        cached_path(entry, cache or weights_cache()),
        sha256=entry.sha256,
        sha256_prefix=entry.sha256_prefix,
        progress=progress,
    )
    names = get_preset(entry.classes).classes if entry.classes else None
    return ResolvedWeights(
        path=path,
        source=f"{entry.key} {entry.url}",
        num_classes=entry.num_classes,
        classes=entry.classes,
        class_names=names,
    )


def catalog_entry(spec: str, model: str, catalog: tuple[WeightsEntry, ...] = CATALOG) -> WeightsEntry | None:
    """The catalog entry ``spec`` names for ``model``, or None when ``spec`` is a file or ``hf:REPO``."""
    if spec.startswith(HF_PREFIX) or _looks_like_path(spec):
        return None
    return find_entry(model, spec, catalog)


def resolve_weights(
    spec: str,
    model: str,
    *,
    catalog: tuple[WeightsEntry, ...] = CATALOG,
    cache: Path | None = None,
    hf_cache: Path | None = None,
    progress: Progress | None = None,
) -> ResolvedWeights:
    """Resolve ``--weights spec`` for ``model``: ``hf:REPO``, a local file, or a catalog name (downloaded once)."""
    if spec.startswith(HF_PREFIX):
        return _from_hf_cache(spec[len(HF_PREFIX) :], hf_cache, catalog)
    if _looks_like_path(spec):
        return _local(spec)
    return _from_catalog(model, spec, catalog, cache, progress)


def infer_num_classes(model: str, checkpoint: Path) -> int | None:
    """The class count a checkpoint of ``model`` was trained with, read from its head's shapes (None if unknown).

    Builds the model at two class counts to find the tensors whose shape follows the class count, and by how
    much (MaskFormer's class embedding has a row more: "no object").
    """
    from edgeseg.models import create
    from edgeseg.models.checkpoint import read_state_dict

    two, three = create(model, num_classes=2), create(model, num_classes=3)
    shapes3 = {k: tuple(v.shape) for k, v in three.state_dict().items()}
    varying = {}  # key -> (dimension, extra rows beyond the class count)
    for key, tensor in two.state_dict().items():
        if tuple(tensor.shape) != shapes3[key]:
            dim = next(i for i, (a, b) in enumerate(zip(tensor.shape, shapes3[key])) if a != b)
            if shapes3[key][dim] - tensor.shape[dim] == 1:  # one row (channel) per class
                varying[key] = (dim, tensor.shape[dim] - 2)
    state = read_state_dict(checkpoint)
    remap = getattr(two, "remap_checkpoint", None)
    if remap is not None:
        state = remap(state)
    counts = {
        int(state[key].shape[dim]) - extra
        for key, (dim, extra) in varying.items()
        if key in state and state[key].dim() > dim
    }
    return counts.pop() if len(counts) == 1 else None

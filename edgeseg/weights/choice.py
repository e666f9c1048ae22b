"""What ``edgeseg export`` loads: the checkpoint, the class count and the classes block of the manifest.

``--weights``/``--checkpoint``, ``--classes`` and ``--num-classes`` must agree; the class count follows from
the first of them that knows it (``--num-classes``, the catalog entry or Hugging Face config, the preset, the
checkpoint's head), else the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.classes import ClassPreset, get_preset
from edgeseg.weights.catalog import CATALOG, WeightsEntry
from edgeseg.weights.download import Progress
from edgeseg.weights.resolve import ResolvedWeights, catalog_entry, infer_num_classes, resolve_weights

DEFAULT_NUM_CLASSES = 150


@dataclass(frozen=True)
class ExportWeights:
    """The resolved weights of an export."""

    checkpoint: Path | None
    source: str | None  # for the manifest's checkpoint.source
    num_classes: int
    classes: dict[str, Any] | None  # the manifest's ``classes`` block


def _classes_block(preset: ClassPreset | None, resolved: ResolvedWeights | None, num_classes: int) -> dict | None:
    if preset is not None:
        if preset.num_classes != num_classes:
            raise ValueError(
                f"--classes {preset.name} has {preset.num_classes} classes but the model has {num_classes}; "
                "drop --classes or --num-classes, or use weights trained on that dataset"
            )
        return {
            "preset": preset.name,
            "names": list(preset.classes),
            "palette": [list(c) for c in preset.palette],
            "source": preset.source,
        }
    if resolved is not None and resolved.class_names and len(resolved.class_names) == num_classes:
        return {"names": list(resolved.class_names), "source": f"id2label of {resolved.source}'s config.json"}
    return None


def _check_agreement(stated: dict[str, int | None]) -> None:
    known = {where: n for where, n in stated.items() if n is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{where} gives {n}" for where, n in known.items())
        raise ValueError(f"the class counts disagree: {listed}; drop the option that is wrong")


def choose_export_weights(
    model: str,
    *,
    weights: str | None = None,
    checkpoint: str | None = None,
    classes: str | None = None,
    num_classes: int | None = None,
    catalog: tuple[WeightsEntry, ...] = CATALOG,
    cache: Path | None = None,
    hf_cache: Path | None = None,
    progress: Progress | None = None,
) -> ExportWeights:
    """Resolve the export's weights and classes; contradictions raise ValueError naming both sides."""
    if weights is not None and checkpoint is not None:
        raise ValueError("--weights and --checkpoint are the same option (a file path works for both); give one")
    spec = weights if weights is not None else checkpoint
    preset = get_preset(classes) if classes else None
    listed = catalog_entry(spec, model, catalog) if spec is not None else None
    stated = {
        "--num-classes": num_classes,
        f"--weights {spec}": listed.num_classes if listed else None,
        f"--classes {classes}": preset.num_classes if preset else None,
    }
    _check_agreement(stated)  # before any download
    resolved = None
    if spec is not None:
        resolved = resolve_weights(spec, model, catalog=catalog, cache=cache, hf_cache=hf_cache, progress=progress)
        if resolved.num_classes is None:
            stated[f"the head of {resolved.path.name}"] = infer_num_classes(model, resolved.path)
        else:
            stated[f"--weights {spec}"] = resolved.num_classes
        _check_agreement(stated)
    if preset is None and resolved is not None and resolved.classes:
        preset = get_preset(resolved.classes)
    count = next((n for n in stated.values() if n is not None), None) or DEFAULT_NUM_CLASSES
    return ExportWeights(
        checkpoint=resolved.path if resolved else None,
        source=resolved.source if resolved else None,
        num_classes=count,
        classes=_classes_block(preset, resolved, count),
    )

"""The model catalog: every registered model's family, task, parameters and GMACs, read without torch.

``edgeseg models`` prints it in well under a second, also in a runtime-only install. The registry
(``edgeseg.models``) is the source of truth: ``catalog.json`` beside this file is generated from it
(``python -m edgeseg.catalog``) and a test keeps the two identical.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CATALOG_FILE = Path(__file__).with_name("catalog.json")
CATALOG_CLASSES = 150  # ADE20K's classes: the head size the parameter counts are for
CATALOG_SIZE = (512, 512)  # the input size the GMACs are for


def read_catalog() -> list[dict[str, Any]]:
    """The shipped catalog: one entry per model (name, family, task, params, gmacs, description), sorted by name."""
    data = json.loads(CATALOG_FILE.read_text())
    return list(data["models"])


def build_catalog(num_classes: int = CATALOG_CLASSES, names: list[str] | None = None) -> dict[str, Any]:
    """The catalog computed from the registry, of every model or of ``names`` (needs torch; builds each model on
    the meta device where it can)."""
    import torch

    from edgeseg.models import count_macs, count_params, create, get_spec, list_models

    entries = []
    for name in list_models() if names is None else names:
        spec = get_spec(name)
        try:
            with torch.device("meta"):  # shapes only: no memory and no random init for the 300 M-parameter models
                model = create(name, num_classes=num_classes)
        except RuntimeError:  # a builder that reads tensor values at construction (e.g. CGRSeg's fixed kernels)
            model = create(name, num_classes=num_classes)
        entries.append(
            {
                "name": name,
                "family": spec.family,
                "task": spec.task,
                "params": count_params(model),
                "gmacs": round(count_macs(model, CATALOG_SIZE) / 1e9, 2),
                "description": spec.description,
            }
        )
    return {"num_classes": num_classes, "input_size": list(CATALOG_SIZE), "models": entries}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(build_catalog(), indent=1) + "\n")

"""Where the reference data of the official implementations lives (``../shared/golden`` beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN_ROOT = Path(os.environ.get("EDGESEG_GOLDEN", Path(__file__).resolve().parents[2] / "shared" / "golden"))


def golden_dir(name: str) -> Path:
    """The golden folder of ``name``, or skip the test saying what is missing."""
    folder = GOLDEN_ROOT / name
    if not (folder / "checkpoint.pth").is_file():
        pytest.skip(f"golden reference data {folder} is absent (set EDGESEG_GOLDEN to the shared/golden folder)")
    return folder

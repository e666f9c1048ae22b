"""Folder writes that never leave a half-written result behind."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def replace_folder(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` folder to ``out`` (same parent), replacing what was there."""
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(retired / out.name)
        staging.rename(out)
        shutil.rmtree(retired)
    else:
        staging.rename(out)

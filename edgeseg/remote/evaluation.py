"""``edgeseg eval --device``: score a bundle on a labelled set with the device's own backend build.

The bundle and the evaluated part of the dataset (``dataset.json`` and the split's first images and labels) are
copied once, content-addressed; the device runs the same :func:`edgeseg.evaluate.evaluate` as a local ``eval``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

from edgeseg.bundle import Bundle, sha256_of
from edgeseg.data.dataset import IMAGE_DIR, INDEX_FILE, LABEL_DIR, DatasetError, open_dataset
from edgeseg.remote.connection import home_path
from edgeseg.remote.device import Device
from edgeseg.remote.session import Reach, device_session
from edgeseg.remote.upload import DATASET_CACHE, put_folder

EVAL_SCRIPT = """\
import json, sys
from edgeseg.evaluate import evaluate
print(json.dumps(evaluate(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3]))))
"""
# Stems become file names on the device: plain names only.
_STEM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$")


def dataset_files(data: Path, split: str, limit: int | None) -> dict[str, Path]:
    """``dataset.json`` and the images and labels of the first ``limit`` samples of ``split`` (name → local path)."""
    dataset = open_dataset(data)
    files = {INDEX_FILE: dataset.root / INDEX_FILE}
    for sample in dataset.samples(split)[:limit]:
        if not _STEM.match(sample.image.stem):
            raise DatasetError(f"{dataset.root}: image stem {sample.image.stem!r} is not a plain file name")
        files[f"{IMAGE_DIR}/{sample.image.name}"] = sample.image
        if sample.label is not None:  # else the device's eval reports the missing label, as a local eval does
            files[f"{LABEL_DIR}/{sample.label.name}"] = sample.label
    for path in files.values():
        if path.is_symlink() or not path.is_file():
            raise DatasetError(f"{path} is missing or not a regular file; fix the dataset {dataset.root}")
    return files


def content_digest(files: dict[str, Path]) -> str:
    """sha256 over the names and sha256s of ``files``: equal for equal content."""
    listing = json.dumps(sorted((name, sha256_of(path)) for name, path in files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


async def evaluate_on_device(
    device: Device,
    reach: Reach,
    bundle: Bundle,
    data: Path,
    *,
    split: str = "val",
    backend: str | None = None,
    threads: int | None = None,
    limit: int | None = None,
    any_precision: bool = False,
) -> dict[str, Any]:
    """The local ``eval`` report, computed on ``device``, plus ``device`` (its description)."""
    files = dataset_files(data, split, limit)
    digest = content_digest(files)
    options = {"split": split, "backend": backend, "threads": threads, "limit": limit, "any_precision": any_precision}
    async with device_session(device, reach) as session:
        environment = await session.environment(backend or bundle.default_backend, ("image",))
        folder, copied = await session.copy_bundle(bundle)
        data_folder, _ = await put_folder(session.connection, device, DATASET_CACHE, digest, files)
        words = [home_path(f"~/{folder}"), home_path(f"~/{data_folder}"), shlex.quote(json.dumps(options))]
        report = await session.run_script(environment.python, EVAL_SCRIPT, words, f"evaluating {bundle.path}")
        report["device"] = session.describe(environment, folder, copied) | {"dataset_cache": f"~/{data_folder}"}
    report.update(bundle=str(bundle.path), dataset=str(data))
    return report

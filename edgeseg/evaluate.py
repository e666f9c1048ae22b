"""``edgeseg eval``: score a bundle (any backend, any precision) on a labelled segmentation set, torch-free.

Each image is predicted at its own size by :meth:`~edgeseg.runtime.Segmenter.predict`; one confusion matrix
over all images gives mIoU (over the classes present in labels or predictions), pixel accuracy and per-class
IoU. Pixels labelled with the dataset's ``ignore_index`` are not scored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeseg.data.dataset import DatasetError, Sample, SegmentationSet, open_dataset, read_sample
from edgeseg.metrics import ConfusionMatrix, json_float
from edgeseg.runtime import Segmenter, load

__all__ = ["evaluate", "format_report"]


def _check_compatible(segmenter: Segmenter, dataset: SegmentationSet) -> None:
    """The bundle must predict exactly the dataset's classes."""
    if segmenter.num_classes != len(dataset.classes):
        raise ValueError(
            f"the bundle predicts {segmenter.num_classes} classes but {dataset.root} has {len(dataset.classes)}; "
            "evaluate a model trained on this dataset's classes"
        )


def _labelled_samples(dataset: SegmentationSet, split: str, limit: int | None) -> list[Sample]:
    """The first ``limit`` samples of ``split``; every one must have a label file."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    samples = dataset.samples(split)[:limit]
    if not samples:
        raise DatasetError(f"split {split!r} of {dataset.root} has no images; choose another split")
    unlabelled = [s.image.stem for s in samples if s.label is None]
    if unlabelled:
        raise DatasetError(
            f"{len(unlabelled)} image(s) of split {split!r} have no label file (e.g. {unlabelled[0]}); "
            "eval needs labels/<stem>.png for every image"
        )
    return samples


def evaluate(
    bundle: str | Path,
    data: str | Path,
    split: str = "val",
    backend: str | None = None,
    threads: int | None = None,
    limit: int | None = None,
    any_precision: bool = False,
) -> dict[str, Any]:
    """Score ``bundle`` on the dataset folder ``data``; returns a JSON-safe report (IoUs as fractions 0..1).

    ``seconds`` is the wall time of reading and predicting every image (loading the model excluded).
    Per-class IoU is None for a class absent from both the labels and the predictions.
    """
    with load(bundle, backend, threads, any_precision=any_precision) as segmenter:
        dataset = open_dataset(data)
        _check_compatible(segmenter, dataset)
        samples = _labelled_samples(dataset, split, limit)
        matrix = ConfusionMatrix(len(dataset.classes), dataset.ignore_index)
        start = time.perf_counter()
        for sample in samples:
            image, labels = read_sample(sample)
            matrix.update(segmenter.predict(image), labels)
        seconds = time.perf_counter() - start
        named = segmenter.bundle.manifest.classes
    report: dict[str, Any] = {
        "bundle": str(segmenter.bundle.path),
        "model": segmenter.bundle.model_name,
        "backend": segmenter.backend,
        "precision": segmenter.precision,
        "artifact": segmenter.artifact,
        "threads": segmenter.runner.threads,
        "dataset": str(dataset.root),
        "split": split,
        "images": len(samples),
        "miou": json_float(matrix.miou()),
        "pixel_accuracy": json_float(matrix.pixel_accuracy()),
        "per_class_iou": {name: json_float(iou) for name, iou in zip(dataset.classes, matrix.iou())},
        "seconds": seconds,
    }
    if named is not None and tuple(named.names) != tuple(dataset.classes):
        differing = next(i for i, (a, b) in enumerate(zip(named.names, dataset.classes)) if a != b)
        report["note"] = (
            f"the bundle and the dataset name the classes differently (class {differing}: bundle "
            f"{named.names[differing]!r}, dataset {dataset.classes[differing]!r}); the table uses the dataset's names"
        )
    return report


def _percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals, or a dash when there is none."""
    return "—" if value is None else f"{100 * value:.2f}"


def format_report(report: dict[str, Any]) -> str:
    """A readable table of an :func:`evaluate` report: per-class IoU, then mIoU and pixel accuracy (in %)."""
    width = max(len("pixel accuracy"), *(len(name) for name in report["per_class_iou"]))
    lines = [
        f"{report['model']} ({report['precision']}, {report['backend']}) on {report['dataset']} "
        f"[{report['split']}]: {report['images']} images in {report['seconds']:.2f} s",
        f"  {'class':<{width}}  {'IoU %':>7}",
    ]
    lines += [f"  {name:<{width}}  {_percent(iou):>7}" for name, iou in report["per_class_iou"].items()]
    lines.append(f"  {'mIoU':<{width}}  {_percent(report['miou']):>7}")
    lines.append(f"  {'pixel accuracy':<{width}}  {_percent(report['pixel_accuracy']):>7}")
    if report.get("note"):
        lines.append(f"  note: {report['note']}")
    return "\n".join(lines)

"""Segmentation sets on disk and a procedural one to train and check models with (numpy + Pillow, no torch)."""

from edgeseg.data.dataset import (
    DatasetError,
    Sample,
    SegmentationSet,
    list_images,
    open_dataset,
    read_label,
    read_sample,
)
from edgeseg.data.synthetic import CLASSES, generate_synthetic, render

__all__ = [
    "CLASSES",
    "DatasetError",
    "Sample",
    "SegmentationSet",
    "generate_synthetic",
    "list_images",
    "open_dataset",
    "read_label",
    "read_sample",
    "render",
]

"""Pretrained weights by name: the catalog of official checkpoints, a resumable verified download, ``--weights``."""

from edgeseg.weights.catalog import CATALOG, FAMILY_NOTES, WeightsEntry, entries_for, find_entry
from edgeseg.weights.download import DownloadError, download
from edgeseg.weights.resolve import ResolvedWeights, edgeseg_home, resolve_weights, weights_cache

__all__ = [
    "CATALOG",
    "FAMILY_NOTES",
    "DownloadError",
    "ResolvedWeights",
    "WeightsEntry",
    "download",
    "edgeseg_home",
    "entries_for",
    "find_entry",
    "resolve_weights",
    "weights_cache",
]

"""Segmentation metrics, numpy only: confusion matrix / IoU, boundary F-score, logit difference statistics.

Every value these functions return is a plain float that :func:`json.dumps` writes as valid JSON:
``sqnr_db`` is clipped to ±:data:`SQNR_CAP_DB` (identical logits report +300 dB rather than infinity) and
statistics of logits holding NaN or inf are ``None``.

:func:`sqnr_db` and :class:`LogitAccumulator` are edgeseg's only SQNR and logit-difference code: the parity
ladder, the parity check on random inputs and the per-node sensitivity ranking of ``--auto-exclude`` use them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# |sqnr_db| never exceeds this, wherever edgeseg reports an SQNR: float('inf') is not valid JSON, and 300 dB is far
# past float32 rounding noise (about 140 dB), so values near the cap still tell an fp32 artifact's rounding apart.
SQNR_CAP_DB = 300.0


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """10·log10(Σref² / Σ(ref − cand)²) in dB from the two sums, clipped to ±:data:`SQNR_CAP_DB`.

    No noise at all gives +cap (an exact match has infinite SQNR), a silent reference with noise −cap; NaN
    sums give NaN.
    """
    if noise_energy == 0:
        return SQNR_CAP_DB
    with np.errstate(divide="ignore"):
        sqnr = 10.0 * np.log10(np.float64(signal_energy) / noise_energy)
    return float(np.clip(sqnr, -SQNR_CAP_DB, SQNR_CAP_DB))


def _check_label_map(array: Any, what: str) -> np.ndarray:
    """``array`` as an integer numpy array, or a ValueError saying how to make one."""
    arr = np.asarray(array)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer label map, got dtype {arr.dtype}; cast it, e.g. .astype(np.int64)")
    return arr


class ConfusionMatrix:
    """Pixel counts ``matrix[target, pred]`` over any number of label-map pairs.

    Pixels whose target is ``ignore_index`` are skipped. IoU of class c = TP / (TP + FP + FN).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} is a class index (num_classes={num_classes}); "
                f"pass one outside 0..{num_classes - 1}, e.g. -1"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """C×C int64 counts, rows = target class, columns = predicted class (a copy)."""
        return self._matrix.copy()

    def update(self, pred: Any, target: Any) -> None:
        """Add one prediction / target pair of integer label maps of equal shape."""
        p, t = _check_label_map(pred, "pred"), _check_label_map(target, "target")
        if p.shape != t.shape:
            raise ValueError(f"pred shape {p.shape} and target shape {t.shape} differ; pass maps of the same image")
        keep = t != self.ignore_index
        if not keep.all():
            p, t = p[keep], t[keep]
        p, t = p.ravel(), t.ravel()
        if t.size == 0:
            return
        self._check_range(p, "pred")
        self._check_range(t, "target")
        pairs = t.astype(np.int64) * self.num_classes + p.astype(np.int64)
        counts = np.bincount(pairs, minlength=self.num_classes**2)
        self._matrix += counts.reshape(self.num_classes, self.num_classes)

    def _check_range(self, values: np.ndarray, what: str) -> None:
        """Raise unless every value is a class index."""
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"{what} holds label {bad}, outside 0..{self.num_classes - 1} (num_classes={self.num_classes}); "
                f"pixels to skip must be ignore_index={self.ignore_index} in the target"
            )

    def iou(self) -> np.ndarray:
        """Per-class IoU (float64); NaN for a class absent from both predictions and targets."""
        tp = np.diag(self._matrix).astype(np.float64)
        union = self._matrix.sum(axis=0) + self._matrix.sum(axis=1) - tp
        out = np.full(self.num_classes, np.nan)
        np.divide(tp, union, out=out, where=union > 0)
        return out

    def miou(self) -> float:
        """Mean IoU over the classes present in predictions or targets (NaN before any pixel was counted)."""
        iou = self.iou()
        present = iou[~np.isnan(iou)]
        return float(present.mean()) if present.size else math.nan

    def pixel_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly (NaN before any pixel was counted)."""
        total = int(self._matrix.sum())
        return float(np.trace(self._matrix) / total) if total else math.nan


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Boolean map of boundary pixels: those whose right or lower neighbour has a different label."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``radius`` of a True pixel (a (2r+1)×(2r+1) square), separably."""
    radius = min(radius, max(mask.shape))
    rows = mask.copy()
    for d in range(1, radius + 1):
        rows[:, d:] |= mask[:, :-d]
        rows[:, :-d] |= mask[:, d:]
    out = rows.copy()
    for d in range(1, radius + 1):
        out[d:] |= rows[:-d]
        out[:-d] |= rows[d:]
    return out


def boundary_f_score(pred: np.ndarray, reference: np.ndarray, tolerance: int = 2) -> float:
    """Boundary F-score of two H×W label maps (see :func:`boundaries`).

    Precision: fraction of ``pred`` boundary pixels within Chebyshev distance ``tolerance`` (a square
    window) of a ``reference`` boundary pixel; recall: the same the other way round; F = 2PR / (P + R).
    Both maps without boundaries score 1.0, exactly one without scores 0.0.
    """
    if pred.ndim != 2 or pred.shape != reference.shape:
        raise ValueError(f"expected two H×W label maps of one shape, got {pred.shape} and {reference.shape}")
    if int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative int (pixels), got {tolerance!r}")
    pred_edge, ref_edge = boundaries(pred), boundaries(reference)
    pred_count, ref_count = int(pred_edge.sum()), int(ref_edge.sum())
    if pred_count == 0 or ref_count == 0:
        return 1.0 if pred_count == ref_count else 0.0
    precision = int((pred_edge & dilate(ref_edge, int(tolerance))).sum()) / pred_count
    recall = int((ref_edge & dilate(pred_edge, int(tolerance))).sum()) / ref_count
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def json_float(value: float) -> float | None:
    """``value`` as a plain float, or None when it is NaN or infinite (not representable in JSON)."""
    value = float(value)
    return value if math.isfinite(value) else None


class LogitAccumulator:
    """Running float64 sums over reference / candidate logit pairs, pooled over every element."""

    def __init__(self) -> None:
        self.count = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.sum_ref_sq = 0.0
        self.sum_cand_sq = 0.0
        self.sum_product = 0.0
        self.sum_diff_sq = 0.0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Accumulate one pair of equally shaped logit arrays."""
        if reference.shape != candidate.shape:
            raise ValueError(f"reference logits {reference.shape} and candidate logits {candidate.shape} differ")
        ref = np.asarray(reference, dtype=np.float64).ravel()
        cand = np.asarray(candidate, dtype=np.float64).ravel()
        diff = cand - ref
        self.count += ref.size
        self.max_abs = float(np.maximum(self.max_abs, np.abs(diff).max(initial=0.0)))  # NaN propagates
        self.sum_abs += float(np.abs(diff).sum())
        self.sum_ref_sq += float(ref @ ref)
        self.sum_cand_sq += float(cand @ cand)
        self.sum_product += float(ref @ cand)
        self.sum_diff_sq += float(diff @ diff)

    def stats(self) -> dict[str, float | None]:
        """``max_abs``, ``mean_abs``, ``cosine`` and ``sqnr_db`` of everything added (see :func:`logit_stats`)."""
        if self.count == 0:
            raise ValueError("no logits were added; call add(reference, candidate) first")
        return {
            "max_abs": json_float(self.max_abs),
            "mean_abs": json_float(self.sum_abs / self.count),
            "cosine": json_float(self._cosine()),
            "sqnr_db": json_float(self.sqnr_db()),
        }

    def sqnr_db(self) -> float:
        """SQNR of everything added (:func:`sqnr_db`); +cap before anything was added."""
        return sqnr_db(self.sum_ref_sq, self.sum_diff_sq)

    def _cosine(self) -> float:
        """Cosine similarity; 1.0 when both are all zeros, 0.0 when only one is."""
        norms = self.sum_ref_sq * self.sum_cand_sq
        if norms == 0:
            return 1.0 if self.sum_ref_sq == self.sum_cand_sq else 0.0
        return float(np.clip(self.sum_product / math.sqrt(norms), -1.0, 1.0))


def logit_stats(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float | None]:
    """How far ``candidate`` logits are from ``reference`` logits of the same shape, in float64.

    ``max_abs`` / ``mean_abs``: largest / mean absolute difference; ``cosine``: cosine similarity of the
    flattened arrays; ``sqnr_db``: 10·log10(Σref² / Σ(ref − cand)²), clipped to ±:data:`SQNR_CAP_DB` (so
    identical logits give 300.0). A statistic that is NaN or inf (logits holding NaN or inf) is None.
    """
    accumulator = LogitAccumulator()
    accumulator.add(reference, candidate)
    return accumulator.stats()

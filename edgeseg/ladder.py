"""The parity ladder: how closely a candidate model (an exported artifact at some precision) follows a reference.

Each image contributes the reference's and the candidate's logits at the model's native stride, and the label
maps :func:`~edgeseg.imaging.labels_from_logits` makes of them at the image's size. The rungs, from the
strictest (raw numbers) to the most forgiving (what a user of the segmentation sees):

* ``max_abs`` (≤): largest absolute logit difference, over every element of every image.
* ``mean_abs`` (≤): mean absolute logit difference, over every logit element of every image.
* ``cosine`` (≥): cosine similarity of all candidate logits with all reference logits (1 = same direction).
* ``sqnr_db`` (≥): signal-to-quantisation-noise ratio 10·log10(Σref² / Σ(ref − cand)²) in dB over all logits;
  clipped to ±300 dB, so identical logits report 300 (:func:`edgeseg.metrics.sqnr_db`, the one SQNR of edgeseg).
* ``agreement`` (≥): fraction of pixels whose candidate label equals the reference label (argmax agreement).
* ``miou_vs_reference`` (≥): mIoU of the candidate's label maps scored against the reference's as ground truth.
* ``boundary_f`` (≥): per-image boundary F-score of candidate vs reference label maps (boundaries within
  ``boundary_tolerance`` pixels, Chebyshev distance, count as matched), averaged over images.
* ``miou_drop`` (≤): reference mIoU minus candidate mIoU on ground-truth labels, in mIoU points (×100);
  measured only when every image came with a label map.

A statistic that is not finite (NaN or inf logits) is reported as None and fails any gate on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.imaging import labels_from_logits
from edgeseg.metrics import ConfusionMatrix, LogitAccumulator, boundary_f_score, json_float

__all__ = ["GATES", "RUNGS", "Ladder", "Rung", "check_gates", "gates_for", "parse_gates"]


@dataclass(frozen=True)
class Rung:
    """One parity statistic and the direction a gate on it bounds."""

    name: str
    comparison: str  # "<=": the value must not exceed the gate; ">=": it must reach it
    meaning: str
    needs_labels: bool = False

    @property
    def symbol(self) -> str:
        """The comparison as printed: ≤ or ≥."""
        return "≤" if self.comparison == "<=" else "≥"

    def passes(self, value: float, threshold: float) -> bool:
        """Whether ``value`` satisfies a gate of ``threshold`` on this rung."""
        return value <= threshold if self.comparison == "<=" else value >= threshold


RUNGS: tuple[Rung, ...] = (
    Rung("max_abs", "<=", "largest absolute logit difference"),
    Rung("mean_abs", "<=", "mean absolute logit difference"),
    Rung("cosine", ">=", "cosine similarity of the logits"),
    Rung("sqnr_db", ">=", "signal-to-quantisation-noise ratio of the logits, dB"),
    Rung("agreement", ">=", "argmax pixel agreement"),
    Rung("miou_vs_reference", ">=", "mIoU of the candidate's labels against the reference's"),
    Rung("boundary_f", ">=", "boundary F-score against the reference's labels"),
    Rung("miou_drop", "<=", "mIoU points lost on labelled images", needs_labels=True),
)
_RUNG = {rung.name: rung for rung in RUNGS}

GATES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs": 1e-4},
    "fp16": {"agreement": 0.995},
    "bf16": {"agreement": 0.995},
    "int8": {"agreement": 0.99, "miou_drop": 1.0},
}


def _rung(name: str) -> Rung:
    """The rung called ``name``, or a ValueError listing the rungs."""
    if name not in _RUNG:
        raise ValueError(f"unknown parity rung {name!r}; rungs: {', '.join(_RUNG)}")
    return _RUNG[name]


def _as_chw(logits: np.ndarray, what: str) -> np.ndarray:
    """(1, C, h, w) or (C, h, w) logits as C×h×w."""
    arr = np.asarray(logits)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.dtype.kind != "f":
        raise ValueError(f"{what} logits must be a float (1, C, h, w) or (C, h, w) array, got {arr.dtype} {arr.shape}")
    return arr


class Ladder:
    """Accumulates the parity rungs of a candidate against a reference over a set of images."""

    def __init__(self, num_classes: int, ignore_index: int = 255, boundary_tolerance: int = 2) -> None:
        if int(boundary_tolerance) != boundary_tolerance or boundary_tolerance < 0:
            raise ValueError(f"boundary_tolerance must be a non-negative int (pixels), got {boundary_tolerance!r}")
        self.num_classes = num_classes
        self.boundary_tolerance = boundary_tolerance
        self._logits = LogitAccumulator()
        self._vs_reference = ConfusionMatrix(num_classes, ignore_index=-1)
        self._reference_vs_labels = ConfusionMatrix(num_classes, ignore_index)
        self._candidate_vs_labels = ConfusionMatrix(num_classes, ignore_index)
        self._images = 0
        self._labelled = 0
        self._pixels = 0
        self._agreeing = 0
        self._boundary_f_sum = 0.0

    def add(
        self,
        reference_logits: np.ndarray,
        candidate_logits: np.ndarray,
        image_size: tuple[int, int],
        labels: np.ndarray | None = None,
    ) -> None:
        """Add one image: both models' logits at native stride, the image's (H, W) and optionally its labels."""
        reference = _as_chw(reference_logits, "reference")
        candidate = _as_chw(candidate_logits, "candidate")
        if reference.shape != candidate.shape or reference.shape[0] != self.num_classes:
            raise ValueError(
                f"reference logits {reference.shape} and candidate logits {candidate.shape} must share one "
                f"C×h×w shape with C = num_classes = {self.num_classes}"
            )
        ref_map = labels_from_logits(reference, image_size)
        cand_map = labels_from_logits(candidate, image_size)
        if labels is not None and np.shape(labels) != ref_map.shape:
            raise ValueError(f"labels of shape {np.shape(labels)} do not match image_size {tuple(ref_map.shape)}")
        if labels is not None:  # first: bad labels raise before anything of this image is counted
            self._reference_vs_labels.update(ref_map, labels)
            self._candidate_vs_labels.update(cand_map, labels)
            self._labelled += 1
        self._logits.add(reference, candidate)
        self._pixels += ref_map.size
        self._agreeing += int(np.count_nonzero(ref_map == cand_map))
        self._vs_reference.update(cand_map, ref_map)
        self._boundary_f_sum += boundary_f_score(cand_map, ref_map, self.boundary_tolerance)
        self._images += 1

    def result(self) -> dict[str, Any]:
        """The rungs so far as a JSON-safe dict (floats, None where not finite); label rungs need every image labelled.

        Label rungs: ``miou_reference`` / ``miou_candidate`` (fractions), ``miou_drop`` (points) and
        ``per_class_iou_delta``: {str(class index): candidate − reference IoU in points} for the classes with
        an IoU under both (negative: the candidate lost IoU on that class).
        """
        if self._images == 0:
            raise ValueError("the ladder has no images; call add() first")
        result: dict[str, Any] = {"images": self._images, **self._logits.stats()}
        result["agreement"] = self._agreeing / self._pixels
        result["miou_vs_reference"] = json_float(self._vs_reference.miou())
        result["boundary_f"] = self._boundary_f_sum / self._images
        if self._labelled == self._images:
            result.update(self._label_rungs())
        return result

    def _label_rungs(self) -> dict[str, Any]:
        """mIoU of both models on the labels, the drop in points and the per-class IoU change."""
        reference, candidate = self._reference_vs_labels.miou(), self._candidate_vs_labels.miou()
        ref_iou, cand_iou = self._reference_vs_labels.iou(), self._candidate_vs_labels.iou()
        both = np.flatnonzero(~np.isnan(ref_iou) & ~np.isnan(cand_iou))
        return {
            "miou_reference": json_float(reference),
            "miou_candidate": json_float(candidate),
            "miou_drop": json_float(100.0 * (reference - candidate)),
            "per_class_iou_delta": {str(c): 100.0 * float(cand_iou[c] - ref_iou[c]) for c in both},
        }


def _failure(rung: Rung, value: Any, threshold: float) -> str | None:
    """Why ``value`` fails a gate of ``threshold`` on ``rung``, or None when it passes."""
    gate = f"{rung.symbol} {threshold:g} ({rung.meaning})"
    if value is None:
        return f"{rung.name} is not finite (the logits hold NaN or inf); needs {gate}"
    if rung.passes(float(value), threshold):
        return None
    sign = ">" if rung.comparison == "<=" else "<"
    return f"{rung.name} {float(value):.6g} {sign} {threshold:g} ({rung.meaning})"


def check_gates(result: Mapping[str, Any], gates: Mapping[str, float]) -> list[str]:
    """The gates ``result`` fails, in ladder order, as readable strings; empty when every gate passes."""
    for name in gates:
        _rung(name)
    failures = []
    for rung in RUNGS:
        if rung.name not in gates:
            continue
        if rung.name not in result:
            why = "every image needs a label map" if rung.needs_labels else "the result lacks it"
            failures.append(f"{rung.name} was not measured ({why}); gate {rung.symbol} {gates[rung.name]:g}")
            continue
        failure = _failure(rung, result[rung.name], gates[rung.name])
        if failure:
            failures.append(failure)
    return failures


def parse_gates(texts: Sequence[str]) -> dict[str, float]:
    """``["agreement=0.98", "miou_drop=2"]`` → ``{"agreement": 0.98, "miou_drop": 2.0}``."""
    gates: dict[str, float] = {}
    for text in texts:
        name, sep, number = (part.strip() for part in text.partition("="))
        if not sep or not name or not number:
            raise ValueError(f"gate {text!r} is not RUNG=VALUE, e.g. agreement=0.99")
        _rung(name)
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"gate {text!r}: {number!r} is not a number") from None
        if not np.isfinite(value):
            raise ValueError(f"gate {text!r}: the value must be a finite number")
        if name in gates:
            raise ValueError(f"gate {name} is given twice ({text!r}); give each rung once")
        gates[name] = value
    return gates


def gates_for(precision: str, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The default gates of ``precision`` (see :data:`GATES`), with ``overrides`` replacing or adding rungs."""
    if precision not in GATES:
        raise ValueError(f"no parity gates for precision {precision!r}; precisions: {', '.join(GATES)}")
    gates = dict(GATES[precision])
    for name, value in (overrides or {}).items():
        _rung(name)
        gates[name] = float(value)
    return gates

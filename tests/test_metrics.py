"""Segmentation metrics against hand computations and brute-force Python loops on small arrays."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter

import numpy as np
import pytest

from edgeseg.metrics import SQNR_CAP_DB, ConfusionMatrix, LogitAccumulator, boundary_f_score, logit_stats, sqnr_db

# ---- brute-force references ------------------------------------------------------------------------


def brute_iou_and_accuracy(pairs, num_classes: int, ignore: int) -> tuple[list[float], float]:
    """Per-class IoU (NaN when absent) and pixel accuracy, pixel by pixel."""
    counted: Counter = Counter()
    for pred, target in pairs:
        for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
            if t != ignore:
                counted[t, p] += 1
    ious = []
    for c in range(num_classes):
        tp = counted[c, c]
        fp = sum(n for (t, p), n in counted.items() if p == c and t != c)
        fn = sum(n for (t, p), n in counted.items() if t == c and p != c)
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    total = sum(counted.values())
    correct = sum(n for (t, p), n in counted.items() if t == p)
    return ious, correct / total


def brute_boundary(labels: np.ndarray) -> list[tuple[int, int]]:
    """Pixels whose right or lower neighbour has another label."""
    h, w = labels.shape
    return [
        (y, x)
        for y in range(h)
        for x in range(w)
        if (x + 1 < w and labels[y, x] != labels[y, x + 1]) or (y + 1 < h and labels[y, x] != labels[y + 1, x])
    ]


def brute_matched(points: list, others: list, tolerance: int) -> float:
    """Fraction of ``points`` within Chebyshev distance ``tolerance`` of one of ``others``."""
    near = [any(max(abs(y - v), abs(x - u)) <= tolerance for v, u in others) for y, x in points]
    return sum(near) / len(near)


def brute_boundary_f(pred: np.ndarray, reference: np.ndarray, tolerance: int) -> float:
    pred_edge, ref_edge = brute_boundary(pred), brute_boundary(reference)
    if not pred_edge or not ref_edge:
        return 1.0 if not pred_edge and not ref_edge else 0.0
    precision = brute_matched(pred_edge, ref_edge, tolerance)
    recall = brute_matched(ref_edge, pred_edge, tolerance)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def blocky_labels(rng: np.random.Generator, shape: tuple[int, int], classes: int, block: int) -> np.ndarray:
    """A random label map of ``block``-sized squares, cropped to ``shape`` (regions, not salt-and-pepper)."""
    coarse = rng.integers(0, classes, (shape[0] // block + 1, shape[1] // block + 1))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[: shape[0], : shape[1]]


# ---- ConfusionMatrix -------------------------------------------------------------------------------


def test_hand_computed_example() -> None:
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(np.array([[0, 0, 1], [1, 2, 2]]), np.array([[0, 1, 1], [1, 2, 255]]))
    # Counted (target, pred): (0,0) (1,0) (1,1) (1,1) (2,2); the last pixel is ignored.
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0], expected[1, 0], expected[1, 1], expected[2, 2] = 1, 1, 2, 1
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.matrix.dtype == np.int64
    iou = cm.iou()
    assert iou.dtype == np.float64
    np.testing.assert_allclose(iou[:3], [1 / 2, 2 / 3, 1.0])
    assert np.isnan(iou[3])
    assert cm.miou() == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 5)


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes, ignore = 6, 255
    pairs = []
    for shape in [(7, 9), (5, 4), (12, 3)]:
        target = rng.integers(0, classes, shape).astype(np.uint8)
        target[rng.random(shape) < 0.2] = ignore
        pred = rng.integers(0, classes - 1, shape).astype(np.int32)  # class 5 never predicted
        pred[target == ignore] = rng.integers(0, 256, int((target == ignore).sum()))  # anything there
        pairs.append((pred, target))
    cm = ConfusionMatrix(classes, ignore)
    for pred, target in pairs:
        cm.update(pred, target)
    ious, accuracy = brute_iou_and_accuracy(pairs, classes, ignore)
    np.testing.assert_allclose(cm.iou(), ious, rtol=1e-12)
    assert cm.miou() == pytest.approx(np.nanmean(ious), rel=1e-12)
    assert cm.pixel_accuracy() == pytest.approx(accuracy, rel=1e-12)
    assert cm.matrix.sum() == sum(int((t != ignore).sum()) for _, t in pairs)


def test_large_maps_use_bincount_counts() -> None:
    rng = np.random.default_rng(7)
    pred, target = rng.integers(0, 150, (2, 512, 512)).astype(np.uint8)
    cm = ConfusionMatrix(150)
    cm.update(pred, target)
    assert cm.matrix[3, 7] == int(((target == 3) & (pred == 7)).sum())
    assert cm.matrix.sum() == 512 * 512


def test_empty_matrix_is_nan_without_warnings() -> None:
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 9, np.uint8))  # every pixel ignored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(cm.iou()).all()
        assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64), r"pred shape \(2, 3\) and target shape \(3, 2\)"),
        (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64), "pred must be an integer label map"),
        (np.array([[0, 4]]), np.array([[0, 1]]), r"pred holds label 4, outside 0\.\.3 \(num_classes=4\)"),
        (np.array([[0, 1]]), np.array([[-1, 1]]), r"target holds label -1, outside 0\.\.3"),
        (np.array([[0, 1]]), np.array([[0, 7]]), "target holds label 7.*ignore_index=255"),
    ],
)
def test_update_rejects_bad_maps(pred: np.ndarray, target: np.ndarray, message: str) -> None:
    cm = ConfusionMatrix(4)
    with pytest.raises(ValueError, match=message):
        cm.update(pred, target)
    assert cm.matrix.sum() == 0  # nothing half-counted


def test_ignore_index_must_not_be_a_class() -> None:
    with pytest.raises(ValueError, match=r"ignore_index 255 is a class index \(num_classes=300\)"):
        ConfusionMatrix(300)
    assert ConfusionMatrix(300, ignore_index=-1).num_classes == 300


# ---- boundary F-score ------------------------------------------------------------------------------


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_boundary_f_matches_brute_force(seed: int, tolerance: int) -> None:
    rng = np.random.default_rng(seed)
    reference = blocky_labels(rng, (13, 17), classes=3, block=4)
    pred = reference.copy()
    pred[rng.random(pred.shape) < 0.08] = 2  # speckles and shifted edges
    pred = np.roll(pred, 1, axis=seed % 2)
    assert boundary_f_score(pred, reference, tolerance) == pytest.approx(
        brute_boundary_f(pred, reference, tolerance), rel=1e-12
    )


def test_boundary_f_of_a_shifted_edge() -> None:
    reference = np.zeros((6, 10), np.uint8)
    reference[:, 4:] = 1  # boundary pixels: column 3
    pred = np.zeros((6, 10), np.uint8)
    pred[:, 6:] = 1  # boundary pixels: column 5, two columns away
    assert boundary_f_score(pred, reference, 0) == 0.0
    assert boundary_f_score(pred, reference, 1) == 0.0
    assert boundary_f_score(pred, reference, 2) == 1.0
    assert boundary_f_score(reference, reference, 0) == 1.0


def test_boundary_f_without_boundaries() -> None:
    flat, other_flat = np.zeros((4, 5), np.uint8), np.full((4, 5), 3, np.uint8)
    edged = flat.copy()
    edged[2:] = 1
    assert boundary_f_score(flat, other_flat) == 1.0
    assert boundary_f_score(flat, edged) == 0.0
    assert boundary_f_score(edged, flat) == 0.0


def test_boundary_f_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"two H×W label maps of one shape, got \(4, 5\) and \(5, 4\)"):
        boundary_f_score(np.zeros((4, 5)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="tolerance must be a non-negative int"):
        boundary_f_score(np.zeros((4, 5)), np.zeros((4, 5)), tolerance=-1)


# ---- logit statistics ------------------------------------------------------------------------------


def test_logit_stats_match_direct_formulas() -> None:
    rng = np.random.default_rng(3)
    reference = rng.standard_normal((5, 6, 7)).astype(np.float32)
    candidate = (reference + rng.standard_normal(reference.shape) * 0.01).astype(np.float32)
    r, c = reference.astype(np.float64).ravel().tolist(), candidate.astype(np.float64).ravel().tolist()
    diffs = [b - a for a, b in zip(r, c)]
    stats = logit_stats(reference, candidate)
    assert stats["max_abs"] == pytest.approx(max(abs(d) for d in diffs), rel=1e-12)
    assert stats["mean_abs"] == pytest.approx(math.fsum(abs(d) for d in diffs) / len(diffs), rel=1e-12)
    dot, rr, cc = (math.fsum(x * y for x, y in zip(u, v)) for u, v in ((r, c), (r, r), (c, c)))
    assert stats["cosine"] == pytest.approx(dot / math.sqrt(rr * cc), rel=1e-12)
    sqnr = 10 * math.log10(rr / math.fsum(d * d for d in diffs))
    assert stats["sqnr_db"] == pytest.approx(sqnr, rel=1e-9)
    assert 30 < stats["sqnr_db"] < 50


def test_known_sqnr_and_cosine() -> None:
    reference = np.ones((2, 3, 4), np.float32)
    stats = logit_stats(reference, reference + np.float32(0.5))  # noise power is a quarter of the signal's
    assert stats["sqnr_db"] == pytest.approx(10 * math.log10(4))
    assert stats["cosine"] == pytest.approx(1.0)  # same direction
    assert logit_stats(reference, -reference)["cosine"] == pytest.approx(-1.0)
    assert stats["max_abs"] == stats["mean_abs"] == 0.5


def test_identical_logits_are_json_safe() -> None:
    logits = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    stats = logit_stats(logits, logits.copy())
    assert stats == {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "sqnr_db": SQNR_CAP_DB}
    assert json.loads(json.dumps(stats, allow_nan=False)) == stats


def test_zero_logits() -> None:
    zeros = np.zeros((2, 2, 2), np.float32)
    assert logit_stats(zeros, zeros)["cosine"] == 1.0
    stats = logit_stats(zeros, np.ones_like(zeros))
    assert stats["cosine"] == 0.0 and stats["sqnr_db"] == -SQNR_CAP_DB


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_candidate_reports_none(bad: float) -> None:
    reference = np.ones((2, 3, 3), np.float32)
    candidate = reference.copy()
    candidate[0, 1, 1] = bad
    stats = logit_stats(reference, candidate)
    assert stats["max_abs"] is None and stats["mean_abs"] is None and stats["cosine"] is None
    json.dumps(stats, allow_nan=False)  # stays valid JSON


def test_accumulator_pools_every_element() -> None:
    rng = np.random.default_rng(5)
    pairs = [(rng.standard_normal(s), rng.standard_normal(s)) for s in [(3, 4, 5), (3, 2, 2)]]
    accumulator = LogitAccumulator()
    for reference, candidate in pairs:
        accumulator.add(reference, candidate)
    pooled = logit_stats(np.concatenate([r.ravel() for r, _ in pairs]), np.concatenate([c.ravel() for _, c in pairs]))
    assert accumulator.stats() == pytest.approx(pooled, rel=1e-12)


def test_logit_stats_errors() -> None:
    with pytest.raises(ValueError, match=r"reference logits \(2, 3\) and candidate logits \(3, 2\) differ"):
        logit_stats(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="no logits were added"):
        LogitAccumulator().stats()


def test_one_sqnr_definition_and_cap() -> None:
    assert sqnr_db(4.0, 1.0) == pytest.approx(10 * math.log10(4))
    assert sqnr_db(1.0, 0.0) == SQNR_CAP_DB == 300.0  # exact: the cap, not infinity
    assert sqnr_db(0.0, 1.0) == -SQNR_CAP_DB and sqnr_db(1.0, 1e-40) == SQNR_CAP_DB  # clipped both ways
    assert math.isnan(sqnr_db(math.nan, 1.0))
    accumulator = LogitAccumulator()
    accumulator.add(np.full(3, 2.0), np.full(3, 1.0))
    assert accumulator.sqnr_db() == accumulator.stats()["sqnr_db"] == pytest.approx(10 * math.log10(4))

"""The parity ladder: exact rungs for constructed logits, gates, gate parsing and JSON safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.imaging import labels_from_logits
from edgeseg.ladder import GATES, RUNGS, Ladder, check_gates, gates_for, parse_gates

CLASSES, H, W = 4, 12, 16


def one_hot_logits(labels: np.ndarray, num_classes: int = CLASSES) -> np.ndarray:
    """C×h×w float32 logits whose argmax is ``labels`` with a margin of 5."""
    logits = np.zeros((num_classes, *labels.shape), np.float32)
    np.put_along_axis(logits, labels[None].astype(np.intp), 5.0, axis=0)
    return logits


def quadrants() -> np.ndarray:
    """H×W labels: class 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right (48 pixels each)."""
    labels = np.zeros((H, W), np.uint8)
    labels[:6, 8:], labels[6:, :8], labels[6:, 8:] = 1, 2, 3
    return labels


def swapped(logits: np.ndarray, a: int, b: int, rows: slice, cols: slice) -> np.ndarray:
    """``logits`` with channels ``a`` and ``b`` exchanged inside one rectangle."""
    out = logits.copy()
    out[a, rows, cols], out[b, rows, cols] = logits[b, rows, cols], logits[a, rows, cols]
    return out


def test_rung_order_and_default_gates() -> None:
    names = [rung.name for rung in RUNGS]
    assert names == [
        "max_abs",
        "mean_abs",
        "cosine",
        "sqnr_db",
        "agreement",
        "miou_vs_reference",
        "boundary_f",
        "miou_drop",
    ]
    assert [rung.comparison for rung in RUNGS] == ["<=", "<=", ">=", ">=", ">=", ">=", ">=", "<="]
    assert GATES == {
        "fp32": {"max_abs": 1e-4},
        "fp16": {"agreement": 0.995},
        "bf16": {"agreement": 0.995},
        "int8": {"agreement": 0.99, "miou_drop": 1.0},
    }


def test_identical_logits_give_perfect_rungs() -> None:
    ladder = Ladder(CLASSES)
    rng = np.random.default_rng(0)
    for size in [(40, 50), (H, W)]:
        logits = rng.standard_normal((1, CLASSES, H, W)).astype(np.float32)
        ladder.add(logits, logits.copy(), size, labels=labels_from_logits(logits[0], size))
    result = ladder.result()
    assert result == {
        "images": 2,
        "max_abs": 0.0,
        "mean_abs": 0.0,
        "cosine": 1.0,
        "sqnr_db": 300.0,
        "agreement": 1.0,
        "miou_vs_reference": 1.0,
        "boundary_f": 1.0,
        "miou_reference": 1.0,
        "miou_candidate": 1.0,
        "miou_drop": 0.0,
        "per_class_iou_delta": {"0": 0.0, "1": 0.0, "2": 0.0, "3": 0.0},
    }
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    for precision in GATES:
        assert check_gates(result, gates_for(precision)) == []


def test_swapped_region_gives_exact_rungs() -> None:
    reference = one_hot_logits(quadrants())
    # 3×4 = 12 pixels of class 1 (of 48) become class 3 in the candidate.
    candidate = swapped(reference, 1, 3, slice(0, 3), slice(12, 16))
    labels = quadrants()
    labels[:2, :2] = 255  # 4 ignored pixels of class 0, outside the swapped rectangle
    ladder = Ladder(CLASSES)
    ladder.add(reference, candidate, (H, W), labels=labels)
    result = ladder.result()

    assert result["agreement"] == 1 - 12 / (H * W)
    iou_1, iou_3 = 36 / 48, 48 / (48 + 12)  # class 1 loses 12 pixels, class 3 gains 12 false positives
    assert result["miou_vs_reference"] == pytest.approx((1 + iou_1 + 1 + iou_3) / 4)
    assert result["miou_reference"] == 1.0  # the labels are the reference's map
    assert result["miou_candidate"] == pytest.approx((1 + iou_1 + 1 + iou_3) / 4)
    assert result["miou_drop"] == pytest.approx(100 * (1 - (2 + iou_1 + iou_3) / 4))
    assert result["per_class_iou_delta"] == pytest.approx(
        {"0": 0.0, "1": 100 * (iou_1 - 1), "2": 0.0, "3": 100 * (iou_3 - 1)}
    )
    # Logits: 12 pixels × 2 channels differ by 5; the reference has one 5 per pixel.
    assert result["max_abs"] == 5.0
    assert result["mean_abs"] == pytest.approx(12 * 2 * 5 / (CLASSES * H * W))
    assert result["cosine"] == pytest.approx((H * W - 12) / (H * W))
    assert result["sqnr_db"] == pytest.approx(10 * np.log10(H * W / (12 * 2)))


def test_boundary_f_of_a_moved_edge() -> None:
    reference = np.zeros((H, W), np.uint8)
    reference[:, 8:] = 1  # boundary pixels: column 7
    candidate = np.zeros((H, W), np.uint8)
    candidate[:, 11:] = 1  # boundary pixels: column 10, three columns away
    for tolerance, expected in [(2, 0.0), (3, 1.0)]:
        ladder = Ladder(CLASSES, boundary_tolerance=tolerance)
        ladder.add(one_hot_logits(reference), one_hot_logits(candidate), (H, W))
        ladder.add(one_hot_logits(reference), one_hot_logits(reference), (H, W))
        assert ladder.result()["boundary_f"] == (expected + 1.0) / 2  # mean over the two images


def test_pixel_weighted_pooling_over_image_sizes() -> None:
    rng = np.random.default_rng(1)
    ladder = Ladder(CLASSES)
    agreeing, pixels, abs_sum, elements = 0, 0, 0.0, 0
    for size, shape in [((36, 48), (CLASSES, 9, 12)), ((16, 16), (CLASSES, 4, 4))]:
        reference = rng.standard_normal(shape).astype(np.float32)
        candidate = reference + (rng.standard_normal(shape) * 0.3).astype(np.float32)
        ladder.add(reference[None], candidate, size)  # (1, C, h, w) and (C, h, w) both accepted
        agreeing += int((labels_from_logits(reference, size) == labels_from_logits(candidate, size)).sum())
        pixels += size[0] * size[1]
        abs_sum += float(np.abs(candidate.astype(np.float64) - reference).sum())
        elements += reference.size
    result = ladder.result()
    assert result["agreement"] == pytest.approx(agreeing / pixels)
    assert result["mean_abs"] == pytest.approx(abs_sum / elements)
    assert "miou_drop" not in result and "per_class_iou_delta" not in result


def test_label_rungs_need_every_image_labelled() -> None:
    logits = one_hot_logits(quadrants())
    ladder = Ladder(CLASSES)
    ladder.add(logits, logits, (H, W), labels=quadrants())
    ladder.add(logits, logits, (H, W))
    result = ladder.result()
    assert "miou_reference" not in result and "miou_drop" not in result
    assert check_gates(result, {"agreement": 0.99, "miou_drop": 1.0}) == [
        "miou_drop was not measured (every image needs a label map); gate ≤ 1"
    ]


def test_non_finite_candidate_is_json_safe_and_fails_gates() -> None:
    reference = one_hot_logits(quadrants())
    candidate = reference.copy()
    candidate[2, 5, 5] = np.nan
    ladder = Ladder(CLASSES)
    ladder.add(reference, candidate, (H, W))
    result = ladder.result()
    assert result["max_abs"] is None and result["cosine"] is None
    json.dumps(result, allow_nan=False)
    failures = check_gates(result, {"max_abs": 1e-4, "cosine": 0.99})
    assert failures == [
        "max_abs is not finite (the logits hold NaN or inf); needs ≤ 0.0001 (largest absolute logit difference)",
        "cosine is not finite (the logits hold NaN or inf); needs ≥ 0.99 (cosine similarity of the logits)",
    ]


def test_check_gates_reports_failures_in_ladder_order() -> None:
    result = {"max_abs": 0.02, "mean_abs": 0.001, "cosine": 0.999, "agreement": 0.9812, "miou_drop": 1.5}
    gates = {"miou_drop": 1.0, "agreement": 0.99, "cosine": 0.999, "max_abs": 1e-4, "mean_abs": 0.01}
    assert check_gates(result, gates) == [
        "max_abs 0.02 > 0.0001 (largest absolute logit difference)",
        "agreement 0.9812 < 0.99 (argmax pixel agreement)",
        "miou_drop 1.5 > 1 (mIoU points lost on labelled images)",
    ]
    assert check_gates(result, {"cosine": 0.999, "miou_drop": 1.5}) == []  # equal to the gate passes
    with pytest.raises(ValueError, match="unknown parity rung 'accuracy'; rungs: max_abs, mean_abs, cosine"):
        check_gates(result, {"accuracy": 0.9})


def test_parse_gates() -> None:
    assert parse_gates(["agreement=0.98", " miou_drop = 2 "]) == {"agreement": 0.98, "miou_drop": 2.0}
    assert parse_gates([]) == {}


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["agreement"], r"gate 'agreement' is not RUNG=VALUE, e\.g\. agreement=0\.99"),
        (["agreement="], "is not RUNG=VALUE"),
        (["=0.5"], "is not RUNG=VALUE"),
        (["accuracy=0.9"], "unknown parity rung 'accuracy'; rungs: max_abs, .*, miou_drop"),
        (["agreement=high"], r"gate 'agreement=high': 'high' is not a number"),
        (["sqnr_db=inf"], "must be a finite number"),
        (["agreement=0.9", "agreement=0.95"], "gate agreement is given twice"),
    ],
)
def test_parse_gates_errors(texts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gates(texts)


def test_gates_for() -> None:
    assert gates_for("fp32") == {"max_abs": 1e-4}
    assert gates_for("int8", {"miou_drop": 2.0, "cosine": 0.99}) == {
        "agreement": 0.99,
        "miou_drop": 2.0,
        "cosine": 0.99,
    }
    gates_for("fp16")["agreement"] = 0.5
    assert GATES["fp16"] == {"agreement": 0.995}  # a copy, not the defaults
    with pytest.raises(ValueError, match="no parity gates for precision 'int4'; precisions: fp32, fp16, bf16, int8"):
        gates_for("int4")
    with pytest.raises(ValueError, match="unknown parity rung 'iou'"):
        gates_for("fp32", {"iou": 0.5})


def test_ladder_errors() -> None:
    ladder = Ladder(CLASSES)
    logits = one_hot_logits(quadrants())
    with pytest.raises(ValueError, match="no images"):
        ladder.result()
    with pytest.raises(ValueError, match=r"must share one C×h×w shape with C = num_classes = 4"):
        ladder.add(logits, logits[:, :6], (H, W))
    with pytest.raises(ValueError, match="C = num_classes = 4"):
        ladder.add(logits[:3], logits[:3], (H, W))
    with pytest.raises(ValueError, match=r"float \(1, C, h, w\) or \(C, h, w\) array, got int64"):
        ladder.add(logits.astype(np.int64), logits, (H, W))
    with pytest.raises(ValueError, match=r"labels of shape \(12, 15\) do not match image_size \(12, 16\)"):
        ladder.add(logits, logits, (H, W), labels=np.zeros((12, 15), np.uint8))
    with pytest.raises(ValueError, match=r"target holds label 7, outside 0\.\.3"):
        ladder.add(logits, logits, (H, W), labels=np.full((H, W), 7, np.uint8))
    with pytest.raises(ValueError, match="no images"):
        ladder.result()  # a rejected image adds nothing
    with pytest.raises(ValueError, match="boundary_tolerance must be a non-negative int"):
        Ladder(CLASSES, boundary_tolerance=-1)

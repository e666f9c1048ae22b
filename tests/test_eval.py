"""``edgeseg eval`` on a tiny labelled set whose ground truth is the tiny bundle's own numpy prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.cli import main
from edgeseg.evaluate import evaluate, format_report
from edgeseg.imaging import normalize, resize_bilinear
from tests.conftest import TINY_MEAN, TINY_STD

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["sky", "road", "car", "tree", "person"]
IMAGE_SIZES = [(64, 96), (64, 96), (48, 72), (80, 120)]  # the bundle's input is 64×96: two are resized
# Every pixel's winning logit beats the runner-up by this much, so float32 rounding in a backend cannot flip it.
MIN_MARGIN = 2e-4

MakeBundle = Callable[..., Path]


@dataclass(frozen=True)
class LabelledSet:
    """A dataset folder, its val images and the numpy reference prediction of each."""

    root: Path
    images: list[np.ndarray]
    predictions: list[np.ndarray]


def block_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    """An H×W×3 image of 4×6 random-colour blocks."""
    grid = np.random.default_rng(seed).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    return np.repeat(np.repeat(grid, size[0] // 4, axis=0), size[1] // 6, axis=1)


def reference_prediction(tiny_conv, image: np.ndarray) -> tuple[np.ndarray, float]:
    """Labels at the image's size from the numpy model (dense bilinear upsampling), and the smallest margin."""
    x = normalize(resize_bilinear(image, (64, 96)), TINY_MEAN, TINY_STD)
    logits = tiny_conv(x)[0].transpose(1, 2, 0)
    upsampled = resize_bilinear(logits, image.shape[:2])
    top2 = np.sort(upsampled, axis=2)[:, :, -2:]
    return upsampled.argmax(axis=2).astype(np.uint8), float((top2[:, :, 1] - top2[:, :, 0]).min())


def unambiguous_images(tiny_conv) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (image, labels) pair per IMAGE_SIZES entry, from the first seeds without near-tied pixels."""
    pairs, seed = [], 0
    for size in IMAGE_SIZES:
        while True:
            seed += 1
            image = block_image(seed, size)
            labels, margin = reference_prediction(tiny_conv, image)
            if margin >= MIN_MARGIN:
                pairs.append((image, labels))
                break
    return pairs


def write_set(root: Path, val: list[tuple[np.ndarray, np.ndarray]], classes: list[str] = CLASSES) -> Path:
    """A dataset folder: val images with labels, and one train image without a label file."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    stems = [f"val{i}" for i in range(len(val))]
    for stem, (image, labels) in zip(stems, val):
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(labels).save(root / "labels" / f"{stem}.png")  # uint8 H×W: mode "L"
    Image.fromarray(block_image(0, (64, 96))).save(root / "images" / "unlabelled.png")
    index = {
        "format": "edgeseg-segmentation-set",
        "version": 1,
        "classes": classes,
        "palette": [[i * 50, 0, 0] for i in range(len(classes))],
        "ignore_index": 255,
        "splits": {"train": ["unlabelled"], "val": stems},
    }
    (root / "dataset.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory: pytest.TempPathFactory, tiny_conv) -> LabelledSet:
    pairs = unambiguous_images(tiny_conv)
    root = write_set(tmp_path_factory.mktemp("eval") / "set", pairs)
    return LabelledSet(root, [image for image, _ in pairs], [labels for _, labels in pairs])


BACKEND_CASES = [("onnx", False, None), ("onnx", True, None), ("openvino", False, None), ("onnx", False, "openvino")]


@pytest.mark.parametrize(("target", "dynamic", "backend"), BACKEND_CASES)
def test_own_predictions_score_perfectly(
    tiny_bundle: MakeBundle, labelled_set: LabelledSet, target: str, dynamic: bool, backend: str | None
) -> None:
    report = evaluate(tiny_bundle(target, dynamic), labelled_set.root, backend=backend)
    present = set(np.concatenate([p.ravel() for p in labelled_set.predictions]).tolist())
    assert report["images"] == 4 and report["split"] == "val"
    assert report["backend"] == (backend or {"onnx": "onnxruntime", "openvino": "openvino"}[target])
    assert report["model"] == "tiny-conv" and report["precision"] == "fp32"
    assert report["miou"] == 1.0 and report["pixel_accuracy"] == 1.0
    assert report["per_class_iou"] == {name: 1.0 if i in present else None for i, name in enumerate(CLASSES)}
    assert report["seconds"] > 0
    assert json.loads(json.dumps(report, allow_nan=False)) == report


@pytest.fixture(scope="module")
def corrupted_set(tmp_path_factory: pytest.TempPathFactory, labelled_set: LabelledSet) -> tuple[Path, dict]:
    """The labelled set with 40 pixels of one class relabelled as another and one row ignored, plus the
    expected scores worked out from pixel counts."""
    predictions = labelled_set.predictions
    counts = np.bincount(predictions[0].ravel(), minlength=len(CLASSES))
    a, b = (int(c) for c in np.argsort(counts)[-2:])  # the two most frequent classes of image 0
    labels = [p.copy() for p in predictions]
    moved = np.flatnonzero(predictions[0].ravel() == a)[:40]
    labels[0].ravel()[moved] = b
    labels[1][0] = 255
    root = write_set(tmp_path_factory.mktemp("eval") / "corrupted", list(zip(labelled_set.images, labels)))

    scored = np.concatenate([pred[truth != 255] for pred, truth in zip(predictions, labels)])
    n = np.bincount(scored, minlength=len(CLASSES))  # predicted pixels of each class, ignored row excluded
    iou = [1.0 if n[c] else None for c in range(len(CLASSES))]
    iou[a] = (n[a] - 40) / n[a]  # 40 of its predicted pixels are labelled b: intersection shrinks, union stays
    iou[b] = n[b] / (n[b] + 40)  # 40 more label pixels it does not predict: union grows
    present = [v for v in iou if v is not None]
    expected = {
        "per_class_iou": dict(zip(CLASSES, iou)),
        "miou": sum(present) / len(present),
        "pixel_accuracy": (scored.size - 40) / scored.size,
    }
    return root, expected


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_corrupted_labels_give_the_exact_drop(tiny_bundle: MakeBundle, corrupted_set, target: str) -> None:
    root, expected = corrupted_set
    report = evaluate(tiny_bundle(target), root)
    assert report["miou"] == pytest.approx(expected["miou"], rel=1e-12)
    assert report["miou"] < 1.0
    assert report["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], rel=1e-12)
    assert report["per_class_iou"] == pytest.approx(expected["per_class_iou"], rel=1e-12)


def test_cli_prints_a_table_and_writes_json(
    tiny_bundle: MakeBundle, labelled_set: LabelledSet, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval.json"
    args = ["eval", str(tiny_bundle()), "--data", str(labelled_set.root), "--limit", "2", "--threads", "1"]
    assert main([*args, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny-conv (fp32, onnxruntime)" in printed and "[val]: 2 images in" in printed
    assert "mIoU" in printed and "pixel accuracy" in printed and "100.00" in printed
    report = json.loads(out.read_text())
    assert report["images"] == 2 and report["threads"] == 1 and report["miou"] == 1.0
    assert f"wrote {out}" in printed


def test_format_report_marks_absent_classes() -> None:
    report = {
        "model": "m",
        "precision": "int8",
        "backend": "openvino",
        "dataset": "d",
        "split": "val",
        "images": 3,
        "seconds": 1.5,
        "miou": 0.5,
        "pixel_accuracy": 0.875,
        "per_class_iou": {"background": 0.25, "cat": None, "a-long-class-name": 0.75},
    }
    assert format_report(report).splitlines() == [
        "m (int8, openvino) on d [val]: 3 images in 1.50 s",
        "  class                IoU %",
        "  background           25.00",
        "  cat                      —",
        "  a-long-class-name    75.00",
        "  mIoU                 50.00",
        "  pixel accuracy       87.50",
    ]


def test_cli_errors(
    tiny_bundle: MakeBundle, labelled_set: LabelledSet, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bundle, data = str(tiny_bundle()), str(labelled_set.root)
    assert main(["eval", bundle, "--data", data, "--split", "train"]) == 2
    assert "1 image(s) of split 'train' have no label file (e.g. unlabelled)" in capsys.readouterr().err
    assert main(["eval", bundle, "--data", data, "--split", "test"]) == 2
    assert "has no split 'test'; choose one of 'train', 'val', 'all'" in capsys.readouterr().err
    three = write_set(tmp_path / "three", [], classes=CLASSES[:3])
    assert main(["eval", bundle, "--data", str(three)]) == 2
    assert "the bundle predicts 5 classes but" in capsys.readouterr().err
    with pytest.raises(ValueError, match="limit must be a positive number of images"):
        evaluate(bundle, data, limit=0)


def test_eval_is_torch_free(tiny_bundle: MakeBundle, labelled_set: LabelledSet, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from edgeseg.cli import main
        assert main(sys.argv[1:]) == 0
        leaked = [m for m in ("torch", "edgeseg.models", "edgeseg.export") if m in sys.modules]
        assert not leaked, leaked
        """
    )
    out = tmp_path / "eval.json"
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    args = ["eval", str(tiny_bundle("openvino")), "--data", str(labelled_set.root), "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": python_path},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["miou"] == 1.0

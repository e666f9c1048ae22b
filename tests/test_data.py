"""The segmentation-set format (edgeseg.data) and the procedural generator behind `edgeseg data synthetic`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.cli import main
from edgeseg.data import (
    CLASSES,
    DatasetError,
    Sample,
    generate_synthetic,
    list_images,
    open_dataset,
    read_sample,
    render,
)

SIZE = (64, 80)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images of 64×80, seed 3 (read-only: copy before changing it)."""
    out = tmp_path_factory.mktemp("data") / "small"
    generate_synthetic(out, 12, SIZE, seed=3, val_fraction=0.25)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_identical_bytes(small_set, tmp_path):
    again = tmp_path / "again"
    generate_synthetic(again, 12, SIZE, seed=3, val_fraction=0.25)
    first = _files(small_set)
    assert len(first) == 2 * 12 + 1
    assert first == _files(again)


def test_different_seed_writes_different_images(small_set, tmp_path):
    other = generate_synthetic(tmp_path / "other", 12, SIZE, seed=4, val_fraction=0.25)
    first, second = _files(small_set), _files(other.root)
    changed = [name for name in first if name.startswith("images/") and first[name] != second[name]]
    assert len(changed) == 12


def test_render_depends_on_seed_and_index_only():
    image, labels = render(7, 5, SIZE)
    again_image, again_labels = render(7, 5, SIZE)
    assert np.array_equal(image, again_image) and np.array_equal(labels, again_labels)
    assert not np.array_equal(image, render(7, 6, SIZE)[0])
    assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
    assert labels.shape == SIZE and labels.dtype == np.uint8


def test_index_follows_the_format(small_set):
    index = json.loads((small_set / "dataset.json").read_text())
    assert index["format"] == "edgeseg-segmentation-set" and index["version"] == 1
    assert index["classes"] == list(CLASSES) and index["classes"][0] == "background"
    assert len(index["palette"]) == len(CLASSES) and all(len(rgb) == 3 for rgb in index["palette"])
    assert index["ignore_index"] == 255
    generator = index["generator"]
    assert (generator["seed"], generator["count"], generator["size"], generator["val_fraction"]) == (
        3,
        12,
        list(SIZE),
        0.25,
    )
    assert sum(generator["pixel_fractions"].values()) == pytest.approx(1.0, abs=1e-3)


def test_files_have_the_right_modes_and_sizes(small_set):
    stem = open_dataset(small_set).splits["train"][0]
    with Image.open(small_set / "images" / f"{stem}.png") as image:
        assert (image.mode, image.size) == ("RGB", (SIZE[1], SIZE[0]))
    with Image.open(small_set / "labels" / f"{stem}.png") as label:
        assert (label.mode, label.size) == ("L", (SIZE[1], SIZE[0]))


def test_labels_are_classes_and_every_class_occurs(small_set):
    dataset = open_dataset(small_set)
    counts = np.zeros(256, dtype=np.int64)
    for sample in dataset.samples("all"):
        counts += np.bincount(read_sample(sample)[1].ravel(), minlength=256)
    present = np.flatnonzero(counts)
    assert set(present.tolist()) == set(range(len(dataset.classes)))


def test_textures_differ_between_classes():
    """Each class's pixels vary at its own frequency: mean absolute horizontal step differs per class."""
    steps: dict[int, list[float]] = {}
    for index in range(6):
        image, labels = render(0, index, (256, 256))
        grey = image.astype(np.float32).mean(axis=2)
        step = np.abs(np.diff(grey, axis=1))
        same = labels[:, 1:] == labels[:, :-1]
        for c in range(len(CLASSES)):
            inside = same & (labels[:, 1:] == c)
            if inside.sum() > 200:
                steps.setdefault(c, []).append(float(step[inside].mean()))
    means = {c: np.mean(v) for c, v in steps.items()}
    assert set(means) == set(range(len(CLASSES)))
    assert means[0] < min(means[c] for c in range(1, len(CLASSES))), means  # backgrounds are smooth


def test_splits_are_disjoint_and_cover_every_image(small_set):
    dataset = open_dataset(small_set)
    train, val = set(dataset.splits["train"]), set(dataset.splits["val"])
    assert not train & val
    stems = {p.stem for p in (small_set / "images").iterdir()}
    assert train | val == stems
    assert len(val) == 3
    assert [s.image.stem for s in dataset.samples("all")] == [*dataset.splits["train"], *dataset.splits["val"]]


def test_read_sample_round_trips_the_rendered_pixels(small_set):
    dataset = open_dataset(small_set)
    sample = dataset.samples("val")[0]
    image, labels = read_sample(sample)
    expected_image, expected_labels = render(3, int(sample.image.stem), SIZE)
    assert np.array_equal(image, expected_image) and np.array_equal(labels, expected_labels)
    assert sample.label == small_set / "labels" / f"{sample.image.stem}.png"


def test_a_sample_without_label_file_reads_as_unlabelled(small_set, tmp_path):
    image, labels = read_sample(Sample(small_set / "images" / f"{open_dataset(small_set).splits['val'][0]}.png", None))
    assert labels is None and image.shape == (*SIZE, 3)


def test_list_images_of_a_dataset_and_of_a_plain_folder(small_set, tmp_path):
    assert list_images(small_set) == [s.image for s in open_dataset(small_set).samples("train")]
    for name in ("b.JPG", "a.png", "c.bmp"):
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.bmp"]


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (None, "no dataset.json"),
        ("{not json", "not valid JSON"),
        ('{"format": "coco", "version": 1}', "format is not"),
        ('{"format": "edgeseg-segmentation-set", "version": 2}', "version 2"),
        ('{"format": "edgeseg-segmentation-set", "version": 1, "classes": [], "splits": {}}', "'classes'"),
    ],
)
def test_open_dataset_refuses_what_is_not_a_dataset(tmp_path, index, message):
    if index is not None:
        (tmp_path / "dataset.json").write_text(index)
    with pytest.raises(DatasetError, match=message):
        open_dataset(tmp_path)


def test_missing_folders_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="does not exist; create one with `edgeseg data synthetic"):
        open_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="does not exist"):
        list_images(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="holds no images"):
        list_images(tmp_path)


def test_unknown_split_names_the_choices(small_set):
    with pytest.raises(DatasetError, match=r"no split 'test'; choose one of 'train', 'val', 'all'"):
        open_dataset(small_set).samples("test")


def test_label_of_the_wrong_size_is_refused(small_set, tmp_path):
    sample = open_dataset(small_set).samples("train")[0]
    bad = tmp_path / "label.png"
    Image.new("L", (8, 8)).save(bad)
    with pytest.raises(DatasetError, match="labels must have their image's size"):
        read_sample(Sample(sample.image, bad))


def test_existing_set_needs_force_and_is_replaced_whole(tmp_path):
    out = tmp_path / "set"
    generate_synthetic(out, 2, SIZE)
    (out / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError, match="pass --force"):
        generate_synthetic(out, 4, SIZE)
    dataset = generate_synthetic(out, 4, SIZE, force=True)
    assert not (out / "stale.txt").exists() and len(dataset.samples("all")) == 4


@pytest.mark.parametrize(
    ("count", "size", "val_fraction", "message"),
    [(1, SIZE, 0.2, "count must be at least 2"), (4, (16, 64), 0.2, "too small"), (4, SIZE, 1.0, "val_fraction")],
)
def test_bad_requests_are_refused(tmp_path, count, size, val_fraction, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic(tmp_path / "set", count, size, val_fraction=val_fraction)
    assert not (tmp_path / "set").exists()


def test_cli_writes_a_set_and_reports_it(tmp_path, capsys):
    out = tmp_path / "cli-set"
    args = ["data", "synthetic", "--out", str(out), "--count", "5", "--size", "48x64", "--seed", "2"]
    assert main([*args, "--val-fraction", "0.4"]) == 0
    printed = capsys.readouterr().out
    assert "3 train, 2 val" in printed and "class pixel fractions: background" in printed
    dataset = open_dataset(out)
    assert read_sample(dataset.samples("val")[0])[0].shape == (48, 64, 3)
    assert main(args) == 2
    assert "pass --force" in capsys.readouterr().err

"""Class metadata end to end: the presets, the manifest's classes block, --classes in export, predict --color."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeseg.classes import get_preset, label_palette, presets
from edgeseg.image_io import palette, write_label_png
from edgeseg.manifest import ManifestError, parse_manifest


def test_presets_hold_their_datasets_classes_and_colours() -> None:
    counts = {name: preset.num_classes for name, preset in presets().items()}
    assert counts == {"ade20k": 150, "cityscapes": 19, "voc": 21, "coco-stuff": 171}
    for preset in presets().values():
        assert len(preset.palette) == preset.num_classes
        assert len(set(preset.classes)) == preset.num_classes
        assert all(0 <= v <= 255 for rgb in preset.palette for v in rgb)
        assert preset.source.startswith("https://github.com/open-mmlab/mmsegmentation/")
    ade, city, voc = get_preset("ade20k"), get_preset("cityscapes"), get_preset("voc")
    assert (ade.classes[2], ade.palette[2]) == ("sky", (6, 230, 230))
    assert (ade.classes[7], ade.classes[149]) == ("bed", "flag")
    assert (city.classes[0], city.palette[0], city.palette[18]) == ("road", (128, 64, 128), (119, 11, 32))
    assert [tuple(c) for c in palette(21)] == list(voc.palette)  # VOC's colour map is the bit-interleaved one
    with pytest.raises(ValueError, match="unknown class preset 'ade'; choose one of ade20k"):
        get_preset("ade")


def test_the_cli_offers_every_preset() -> None:
    from edgeseg.cli import CLASS_PRESETS

    assert tuple(presets()) == CLASS_PRESETS


def test_label_palette_puts_the_preset_first_and_keeps_the_default_after() -> None:
    table = label_palette(get_preset("cityscapes").palette)
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert table[0].tolist() == [128, 64, 128]
    assert (table[19:] == palette()[19:]).all()
    assert (label_palette(None) == palette()).all()


# ---- the manifest's classes block ----


def _with_classes(tiny_bundle: Any, classes: dict[str, Any]) -> dict[str, Any]:
    data = json.loads((tiny_bundle() / "manifest.json").read_text())
    return {**data, "classes": classes}


def test_a_manifest_with_classes_validates(tiny_bundle: Any) -> None:
    names = ["sky", "road", "car", "tree", "person"]
    colours = [[0, 0, 0], [1, 2, 3], [255, 255, 255], [9, 9, 9], [10, 20, 30]]
    manifest = parse_manifest(_with_classes(tiny_bundle, {"names": names, "palette": colours, "preset": "demo-5"}))
    assert manifest.classes is not None and manifest.classes.names == names
    assert json.loads(manifest.to_json())["classes"]["palette"][1] == [1, 2, 3]
    assert parse_manifest(_with_classes(tiny_bundle, {"names": names})).classes is not None  # palette optional


@pytest.mark.parametrize(
    ("classes", "error"),
    [
        ({"names": ["a", "b", "c"]}, "classes.names has 3 names for model.num_classes 5"),
        ({"names": list("abcde"), "palette": [[0, 0, 0]] * 4}, "palette has 4 colours for 5 class names"),
        ({"names": list("abcde"), "palette": [[0, 0, 256]] * 5}, "less than or equal to 255"),
        ({"names": list("abcde"), "palette": [[0, 0]] * 5}, "classes.palette.0"),
        ({"names": ["a", "b", "c", "d", ""]}, "classes.names.4"),
        ({"names": list("abcde"), "preset": "../x"}, "classes.preset"),
        ({"names": list("abcde"), "colours": []}, "Extra inputs are not permitted"),
    ],
)
def test_a_manifest_with_wrong_classes_is_refused(tiny_bundle: Any, classes: dict[str, Any], error: str) -> None:
    with pytest.raises(ManifestError, match=error):
        parse_manifest(_with_classes(tiny_bundle, classes))


def test_a_colour_png_uses_the_given_palette(tmp_path: Path) -> None:
    from PIL import Image

    labels = np.array([[0, 1], [2, 18]], dtype=np.uint8)
    colors = label_palette(get_preset("cityscapes").palette)
    write_label_png(tmp_path / "m.png", labels, colorize=True, colors=colors)
    rgb = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[1, 1].tolist() == [119, 11, 32]


# ---- export --classes → bundle → predict --color ----


def _edgeseg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_an_ade20k_bundle_carries_its_classes_and_predict_draws_their_colours(tmp_path: Path) -> None:
    from PIL import Image

    bundle = tmp_path / "bundle"
    made = _edgeseg(
        "export", "--model", "afformer-tiny", "--classes", "ade20k", "--input-size", "64x64", "--target", "onnx",
        "--out", str(bundle),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "classes: ade20k (150: wall, building, sky, floor, ...)" in made.stdout
    manifest = json.loads((bundle / "manifest.json").read_text())
    ade = get_preset("ade20k")
    assert manifest["model"]["num_classes"] == 150
    assert manifest["classes"]["preset"] == "ade20k"
    assert manifest["classes"]["names"] == list(ade.classes)
    assert [tuple(c) for c in manifest["classes"]["palette"]] == list(ade.palette)

    image = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(image)
    plain, colour = tmp_path / "labels.png", tmp_path / "colour.png"
    assert _edgeseg("predict", str(bundle), str(image), "--out", str(plain)).returncode == 0
    done = _edgeseg("predict", str(bundle), str(image), "--out", str(colour), "--color")
    assert done.returncode == 0, done.stderr
    labels = np.asarray(Image.open(plain))
    drawn = np.asarray(Image.open(colour).convert("RGB"))
    expected = np.asarray(ade.palette, dtype=np.uint8)[labels]
    assert (drawn == expected).all()
    assert not (drawn == palette()[labels]).all()  # not edgeseg's default colours


def test_a_bundle_without_classes_keeps_the_default_colours(tiny_bundle: Any, tmp_path: Path) -> None:
    from PIL import Image

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle(), bundle)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(image)
    plain, colour = tmp_path / "labels.png", tmp_path / "colour.png"
    assert _edgeseg("predict", str(bundle), str(image), "--out", str(plain)).returncode == 0
    assert _edgeseg("predict", str(bundle), str(image), "--out", str(colour), "--color").returncode == 0
    labels = np.asarray(Image.open(plain))
    assert (np.asarray(Image.open(colour).convert("RGB")) == palette()[labels]).all()


def _dataset(root: Path, classes: list[str]) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(root / "images/a.png")
    Image.fromarray(np.zeros((64, 96), dtype=np.uint8)).save(root / "labels/a.png")
    index = {"format": "edgeseg-segmentation-set", "version": 1, "classes": classes, "splits": {"val": ["a"]}}
    (root / "dataset.json").write_text(json.dumps(index))
    return root


def test_eval_says_when_the_bundle_names_its_classes_differently(tiny_bundle: Any, tmp_path: Path) -> None:
    from edgeseg.evaluate import evaluate, format_report

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["classes"] = {"names": ["sky", "road", "car", "tree", "person"]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    same = evaluate(bundle, _dataset(tmp_path / "same", ["sky", "road", "car", "tree", "person"]))
    assert "note" not in same and list(same["per_class_iou"]) == ["sky", "road", "car", "tree", "person"]
    other = evaluate(bundle, _dataset(tmp_path / "other", ["sky", "road", "bus", "tree", "person"]))
    assert "class 2: bundle 'car', dataset 'bus'" in other["note"]
    assert "note: the bundle and the dataset name the classes differently" in format_report(other)


def test_export_refuses_a_classes_block_that_does_not_fit_before_building(tmp_path: Path) -> None:
    from edgeseg.export import ExportRequest, export_bundle

    request = ExportRequest(
        model="afformer-tiny", out=tmp_path / "b", num_classes=19, classes={"names": ["a", "b"], "preset": "x"}
    )
    with pytest.raises(ValueError, match="names 2 classes for num_classes 19"):
        export_bundle(request)
    assert not (tmp_path / "b").exists()

"""`edgeseg train`: a few CPU steps on a tiny synthetic set, and the checkpoint's round trip through create()."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeseg.cli import main
from edgeseg.data import generate_synthetic, open_dataset
from edgeseg.models import create, get_spec
from edgeseg.train import (
    Split,
    TrainConfig,
    TrainResult,
    evaluate,
    load_split,
    random_batch,
    train,
    warmup_cosine,
)

MODEL = "afformer-tiny"
SIZE = (64, 64)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 synthetic images of 64×64: 6 train, 2 val."""
    out = tmp_path_factory.mktemp("train") / "set"
    generate_synthetic(out, 8, SIZE, seed=1, val_fraction=0.25)
    return out


@pytest.fixture(scope="module")
def trained(tiny_set: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, list[str]]:
    """30 steps of afformer-tiny on whole 64×64 images, one thread; (result, log lines)."""
    lines: list[str] = []
    config = TrainConfig(
        model=MODEL,
        data=tiny_set,
        out=tmp_path_factory.mktemp("ckpt") / "tiny.pth",
        steps=30,
        batch_size=4,
        crop=SIZE,
        lr=3e-3,
        threads=1,
        log_every=10,
    )
    return train(config, log=lines.append), lines


def test_loss_decreases(trained):
    result, _ = trained
    losses = np.array(result.losses)
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.7 * losses[:5].mean()


def test_progress_and_score_are_logged(trained):
    result, lines = trained
    # the first step at once, then every log_every steps (or 30 s, longer than this run's steps take)
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["1/30", "10/30", "20/30", "30/30"]
    assert any(line.startswith(f"val mIoU {100 * result.val_miou:.2f} %") for line in lines)  # percent, as eval
    assert 0.0 <= result.val_miou <= 1.0 and result.seconds > 0


def test_checkpoint_loads_without_ignored_or_initialised_keys(trained):
    result, _ = trained
    loaded = create(MODEL, num_classes=6, checkpoint=result.checkpoint)
    report = loaded.checkpoint_report
    assert report.ignored == [] and report.initialised == [] and report.deduplicated == {}
    assert report.loaded == len(result.model.state_dict())
    x = torch.randn(2, 3, 96, 64)
    with torch.inference_mode():
        expected = result.model.eval()(x)
        assert torch.equal(loaded(x), expected)
    assert not torch.equal(expected, create(MODEL, num_classes=6)(x).detach())


def test_checkpoint_meta_describes_the_run(trained, tiny_set):
    result, _ = trained
    meta = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["meta"]
    spec = get_spec(MODEL)
    assert meta["model"] == MODEL and meta["classes"] == list(open_dataset(tiny_set).classes)
    assert meta["num_classes"] == 6 and meta["steps"] == 30
    assert meta["val_miou"] == pytest.approx(result.val_miou)
    assert meta["input"] == {"color": "RGB", "pixel_range": [0, 255], "mean": list(spec.mean), "std": list(spec.std)}
    assert meta["seconds"] == pytest.approx(result.seconds, abs=0.1)


def test_reloaded_checkpoint_scores_the_same_val_miou(trained, tiny_set):
    result, _ = trained
    dataset = open_dataset(tiny_set)
    loaded = create(MODEL, num_classes=6, checkpoint=result.checkpoint)
    scores = evaluate(loaded, load_split(dataset, "val"), get_spec(MODEL), 6, dataset.ignore_index)
    assert scores.miou() == pytest.approx(result.val_miou)


def test_batches_are_crops_of_image_and_labels_together():
    """Pixel value = 40 × label, so a de-normalised crop must match its label crop, flipped or not."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(40, 50), dtype=np.uint8)
    image = np.repeat((labels * 40)[:, :, None], 3, axis=2)
    spec = get_spec(MODEL)
    inputs, targets = random_batch(Split([image], [labels]), 16, (32, 32), spec, 255, np.random.default_rng(1))
    pixels = inputs * torch.tensor(spec.std).view(1, 3, 1, 1) + torch.tensor(spec.mean).view(1, 3, 1, 1)
    assert torch.allclose(pixels, (targets * 40).unsqueeze(1).float().expand_as(pixels), atol=1e-3)
    assert len({tuple(t[0, :4].tolist()) for t in targets}) > 1  # not the same crop every time


def test_images_smaller_than_the_crop_are_padded_with_ignore():
    labels = np.ones((20, 24), dtype=np.uint8)
    image = np.full((20, 24, 3), 200, dtype=np.uint8)
    inputs, targets = random_batch(
        Split([image], [labels]), 2, (32, 32), get_spec(MODEL), 255, np.random.default_rng(0)
    )
    assert (targets[:, :20, :24] == 1).all() and (targets[:, 20:] == 255).all() and (targets[:, :, 24:] == 255).all()
    assert (inputs[:, :, 20:] == 0).all()


def test_schedule_warms_up_then_decays_to_zero():
    factors = [warmup_cosine(step, 100, 10) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert (np.diff(factors[9:]) <= 0).all()
    assert factors[-1] < 0.001


@pytest.mark.parametrize(
    ("model", "crop", "message"),
    [("cloformer-xs", SIZE, "classification model"), (MODEL, (48, 64), "not a multiple of 32")],
)
def test_unusable_configs_are_refused(tiny_set, tmp_path, model, crop, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(model=model, data=tiny_set, out=tmp_path / "x.pth", crop=crop))
    assert not (tmp_path / "x.pth").exists()


def test_labels_outside_the_classes_are_refused(tiny_set, tmp_path):
    copy = tmp_path / "set"
    shutil.copytree(tiny_set, copy)
    label = copy / "labels" / f"{open_dataset(copy).splits['train'][0]}.png"
    Image.fromarray(np.full(SIZE, 9, dtype=np.uint8), mode="L").save(label)
    with pytest.raises(ValueError, match=r"holds label 9, but the dataset has 6 classes"):
        train(TrainConfig(MODEL, copy, tmp_path / "x.pth", steps=1, crop=SIZE, threads=1), log=lambda line: None)


def test_threads_are_restored(tiny_set, tmp_path):
    before = torch.get_num_threads()
    config = TrainConfig(MODEL, tiny_set, tmp_path / "t.pth", steps=1, batch_size=1, crop=SIZE, threads=1)
    train(config, log=lambda line: None)
    assert torch.get_num_threads() == before


def test_cli_trains_and_writes_a_checkpoint(tiny_set, tmp_path, capsys):
    out = tmp_path / "cli.pth"
    args = ["train", "--model", MODEL, "--data", str(tiny_set), "--out", str(out), "--steps", "2"]
    assert main([*args, "--batch-size", "2", "--crop", "64x64", "--threads", "1", "--lr", "1e-3"]) == 0
    printed = capsys.readouterr().out
    assert "step 2/2" in printed and "val mIoU" in printed and out.is_file()
    assert create(MODEL, num_classes=6, checkpoint=out).checkpoint_report.initialised == []


def test_cli_reports_a_missing_dataset(tmp_path, capsys):
    assert main(["train", "--model", MODEL, "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x.pth")]) == 2
    assert "does not exist; create one with `edgeseg data synthetic" in capsys.readouterr().err

"""Fine-tune a registered segmentation model on an edgeseg dataset, on the CPU, in minutes.

Inputs are preprocessed exactly as a bundle does it (RGB uint8 → ``(pixel - mean) / std`` with the model's
mean and std), so a checkpoint written here exports to a bundle that sees what the model was trained on.
Recipe: random scale-preserving crops with horizontal flips, cross-entropy on logits bilinearly upsampled
to the labels (``ignore_index`` skipped), AdamW with a linear warm-up and a cosine decay. Validation runs
the model in eval mode on the whole val images at their own size and reports the mean IoU.

The checkpoint is mmseg-style, ``{"state_dict": ..., "meta": {...}}``, and loads with
``edgeseg.models.create(name, num_classes=len(classes), checkpoint=path)`` (plus ``head_attention=`` when it was
trained with one, as its ``meta["head_attention"]`` says).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.data import SegmentationSet, open_dataset, read_sample
from edgeseg.imaging import normalize
from edgeseg.metrics import ConfusionMatrix, json_float
from edgeseg.models import ModelSpec, create, get_spec
from edgeseg.progress import bar

DEFAULT_STEPS = 400
DEFAULT_BATCH_SIZE = 8
DEFAULT_CROP = (256, 256)
DEFAULT_LR = 2e-3
WEIGHT_DECAY = 0.01
WARMUP_FRACTION = 0.05
LOG_EVERY = 50
LOG_SECONDS = 30.0  # a loss line at least this often, whatever the step time


@dataclass(frozen=True)
class TrainConfig:
    """What to train, on what, for how long; ``threads=None`` uses every core."""

    model: str
    data: Path
    out: Path
    steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE
    crop: tuple[int, int] = DEFAULT_CROP
    lr: float = DEFAULT_LR
    seed: int = 0
    threads: int | None = None
    log_every: int = LOG_EVERY
    head_attention: str | None = None  # "se", "cbam" or "ca": a block in the all-MLP head (models.create)


@dataclass(frozen=True)
class TrainResult:
    """The checkpoint written, the trained model (eval mode), per-step losses and the val scores."""

    checkpoint: Path
    model: nn.Module
    losses: tuple[float, ...]
    val_miou: float
    class_iou: dict[str, float | None]  # None: class neither in the val labels nor predicted
    seconds: float


@dataclass(frozen=True)
class Split:
    """A dataset split held in memory: uint8 RGB images and uint8 label maps."""

    images: list[np.ndarray]
    labels: list[np.ndarray]


def _check_config(config: TrainConfig, spec: ModelSpec) -> None:
    """Raise a ValueError that says how to fix an unusable configuration."""
    if spec.task != "segmentation":
        raise ValueError(f"{config.model} is a {spec.task} model; train a segmentation model (see `edgeseg models`)")
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError(f"steps and batch size must be positive, got {config.steps} and {config.batch_size}")
    if config.lr <= 0:
        raise ValueError(f"learning rate must be positive, got {config.lr}")
    multiple = spec.input_multiple
    if any(side < multiple or side % multiple for side in config.crop):
        raise ValueError(
            f"crop {config.crop[0]}x{config.crop[1]} is not a multiple of {multiple} ({config.model}'s input "
            f"multiple); use e.g. {DEFAULT_CROP[0]}x{DEFAULT_CROP[1]}"
        )


def _check_labels(label: np.ndarray, path: Path, num_classes: int, ignore_index: int) -> None:
    """Every label must be a class index or ``ignore_index``."""
    bad = (label >= num_classes) & (label != ignore_index)
    if bad.any():
        raise ValueError(
            f"{path} holds label {int(label[bad].max())}, but the dataset has {num_classes} classes; "
            f"label pixels must be 0..{num_classes - 1} or {ignore_index} (ignored)"
        )


def load_split(dataset: SegmentationSet, split: str) -> Split:
    """Read every sample of ``split`` into memory; unlabelled samples and unknown labels are refused."""
    samples = dataset.samples(split)
    if not samples:
        raise ValueError(f"split {split!r} of {dataset.root} is empty; regenerate the dataset with more images")
    images, labels = [], []
    for sample in samples:
        image, label = read_sample(sample)
        if label is None or sample.label is None:
            raise ValueError(f"{sample.image} has no label file; training and validation need labelled samples")
        _check_labels(label, sample.label, len(dataset.classes), dataset.ignore_index)
        images.append(image)
        labels.append(label)
    return Split(images, labels)


def random_batch(
    split: Split, batch_size: int, crop: tuple[int, int], spec: ModelSpec, ignore_index: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random crops (half of them flipped left-right), normalised as a bundle does it.

    Images smaller than the crop are padded: zeros after normalisation, ``ignore_index`` in the labels.
    """
    inputs = torch.zeros(batch_size, 3, *crop)
    targets = torch.full((batch_size, *crop), ignore_index, dtype=torch.long)
    for row, index in enumerate(rng.integers(len(split.images), size=batch_size)):
        image, label = split.images[index], split.labels[index]
        h, w = min(crop[0], label.shape[0]), min(crop[1], label.shape[1])
        top = int(rng.integers(label.shape[0] - h + 1))
        left = int(rng.integers(label.shape[1] - w + 1))
        image, label = image[top : top + h, left : left + w], label[top : top + h, left : left + w]
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        inputs[row, :, :h, :w] = torch.from_numpy(normalize(image, spec.mean, spec.std)[0])
        targets[row, :h, :w] = torch.from_numpy(label.astype(np.int64))
    return inputs, targets


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Cross-entropy of logits bilinearly upsampled (``align_corners=False``) to the label size."""
    logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(
    model: nn.Module, lr: float, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no weight decay on norms and biases) with the warm-up/cosine schedule."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    warmup = max(1, round(steps * WARMUP_FRACTION))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, steps, warmup))
    return optimizer, schedule


@torch.inference_mode()
def predict_labels(model: nn.Module, image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Labels of one whole image: padded to the model's input multiple, logits upsampled to it, argmax, cropped."""
    h, w = image.shape[:2]
    multiple = spec.input_multiple
    padded = (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
    x = torch.zeros(1, 3, *padded)
    x[0, :, :h, :w] = torch.from_numpy(normalize(image, spec.mean, spec.std)[0])
    logits = F.interpolate(model(x), size=padded, mode="bilinear", align_corners=False)
    return logits[0, :, :h, :w].argmax(dim=0).numpy()


def evaluate(model: nn.Module, split: Split, spec: ModelSpec, num_classes: int, ignore_index: int) -> ConfusionMatrix:
    """The confusion matrix of ``model`` (switched to eval mode) over the whole images of ``split``."""
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index)
    for image, labels in zip(split.images, split.labels):
        confusion.update(predict_labels(model, image, spec), labels)
    return confusion


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads (every core when None), then restore the setting."""
    previous = torch.get_num_threads()
    count = threads or default_threads()
    if count < 1:
        raise ValueError(f"threads must be positive, got {count}")
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


def fit(
    model: nn.Module,
    train_split: Split,
    config: TrainConfig,
    ignore_index: int,
    log: Callable[[str], None],
) -> list[float]:
    """Run ``config.steps`` optimisation steps in train mode; returns the loss of every step."""
    spec = get_spec(config.model)
    rng = np.random.default_rng(config.seed)
    optimizer, schedule = make_optimizer(model, config.lr, config.steps)
    model.train()
    losses: list[float] = []
    start = logged = time.perf_counter()
    with bar(config.steps, "training", "step") as shown:
        for step in range(1, config.steps + 1):
            inputs, targets = random_batch(train_split, config.batch_size, config.crop, spec, ignore_index, rng)
            loss = segmentation_loss(model(inputs), targets, ignore_index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            shown.update(1)
            now = time.perf_counter()
            if step == 1 or step % config.log_every == 0 or step == config.steps or now - logged >= LOG_SECONDS:
                logged = now
                recent = np.mean(losses[-config.log_every :])
                log(f"step {step}/{config.steps}  loss {recent:.4f}  {now - start:.0f}s")
    return losses


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``{"state_dict", "meta"}`` to ``path`` (through a temporary file, so never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save({"state_dict": model.state_dict(), "meta": meta}, partial)
    partial.replace(path)


def _meta(config: TrainConfig, dataset: SegmentationSet, scores: ConfusionMatrix, seconds: float) -> dict[str, Any]:
    """The checkpoint's ``meta``: what was trained on what, how, the val scores and the input preprocessing."""
    spec = get_spec(config.model)
    return {
        "model": config.model,
        "head_attention": config.head_attention,
        "classes": list(dataset.classes),
        "num_classes": len(dataset.classes),
        "steps": config.steps,
        "batch_size": config.batch_size,
        "crop": list(config.crop),
        "lr": config.lr,
        "seed": config.seed,
        "dataset": str(dataset.root),
        "val_miou": json_float(scores.miou()),
        "class_iou": {name: json_float(iou) for name, iou in zip(dataset.classes, scores.iou())},
        "input": {"color": "RGB", "pixel_range": [0, 255], "mean": list(spec.mean), "std": list(spec.std)},
        "seconds": round(seconds, 1),
    }


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``config.model`` on ``config.data``'s train split, validate on its val split, save the checkpoint."""
    spec = get_spec(config.model)
    _check_config(config, spec)
    dataset = open_dataset(config.data)
    num_classes, ignore_index = len(dataset.classes), dataset.ignore_index
    with torch_threads(config.threads) as threads:
        start = time.perf_counter()
        train_split, val_split = load_split(dataset, "train"), load_split(dataset, "val")
        log(
            f"training {config.model} on {len(train_split.images)} images of {dataset.root} ({num_classes} classes), "
            f"validating on {len(val_split.images)}: {config.steps} steps of {config.batch_size} crops of "
            f"{config.crop[0]}x{config.crop[1]}, lr {config.lr:g}, seed {config.seed}, {threads} torch thread(s)"
        )
        torch.manual_seed(config.seed)
        model = create(config.model, num_classes=num_classes, head_attention=config.head_attention)
        losses = fit(model, train_split, config, ignore_index, log)
        scores = evaluate(model, val_split, spec, num_classes, ignore_index)
        seconds = time.perf_counter() - start
    meta = _meta(config, dataset, scores, seconds)
    save_checkpoint(Path(config.out), model, meta)
    per_class = ", ".join(f"{name} {100 * iou:.1f}" for name, iou in meta["class_iou"].items() if iou is not None)
    log(f"val mIoU {100 * scores.miou():.2f} % (IoU % per class: {per_class})")
    log(f"wrote {config.out} ({seconds:.0f}s)")
    return TrainResult(Path(config.out), model, tuple(losses), scores.miou(), meta["class_iou"], seconds)

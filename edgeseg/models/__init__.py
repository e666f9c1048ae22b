"""Export-friendly re-implementations of lightweight segmentation models.

``create(name)`` builds an eval-mode ``torch.nn.Module`` whose ``forward(x)`` maps a normalised
N×3×H×W float tensor to logits at the head's native stride; ``forward_features(x)`` returns the
backbone's stage outputs. Official checkpoints load unchanged through ``checkpoint=``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeseg.models import (
    afformer,  # noqa: F401  (registers the family)
    cgrseg,  # noqa: F401
    cloformer,  # noqa: F401
    maskformer,  # noqa: F401
    mobilenetv2,  # noqa: F401
    segformer,  # noqa: F401
    setr,  # noqa: F401
    umixformer,  # noqa: F401
)
from edgeseg.models.checkpoint import CheckpointError, LoadReport, load_checkpoint
from edgeseg.models.heads import AllMLPHead
from edgeseg.models.registry import ModelSpec, get_spec, list_models

__all__ = [
    "CheckpointError",
    "LoadReport",
    "ModelSpec",
    "checkpoint_report",
    "count_macs",
    "count_params",
    "create",
    "get_spec",
    "list_models",
    "model_spec",
]


def create(
    name: str,
    *,
    num_classes: int = 150,
    checkpoint: str | Path | None = None,
    head_attention: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build model ``name`` in eval mode, optionally loading an official checkpoint.

    ``options`` are the family's build options (e.g. SETR's ``full_resolution``). ``head_attention`` ("se",
    "cbam" or "ca") inserts that block into an all-MLP head (SegFormer, CloFormer-seg) after its fuse conv,
    initialised so the head computes what it computed without it; a checkpoint without the block's keys (e.g. an
    official one) leaves it so and lists its keys in the load report's ``initialised``. The load report is kept
    as ``model.checkpoint_report`` (see :func:`checkpoint_report`); ``model.spec`` is the registry entry, with
    the model's own ``output_stride`` when an option changed it.
    """
    spec = get_spec(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        takes = f"it takes {', '.join(spec.options)}" if spec.options else "it takes none"
        raise ValueError(f"{name} has no build option {', '.join(unknown)}; {takes}")
    model = spec.builder(num_classes, **options)
    setattr(model, "head_attention", head_attention)  # noqa: B010  (recorded for callers; not a submodule)
    if head_attention is not None:
        _add_head_attention(model, name, head_attention)
    report = None
    if checkpoint is not None:
        try:
            report = load_checkpoint(
                model,
                checkpoint,
                aliases=getattr(model, "checkpoint_aliases", ()),
                ignored=getattr(model, "checkpoint_ignored", ()),
            )
        except CheckpointError as error:
            if head_attention is None and "unexpected keys: decode_head.attention." in str(error):
                raise CheckpointError(
                    f"{error} The checkpoint was trained with an attention block in the head: pass the same "
                    "head_attention (--head-attention) it was trained with (its meta['head_attention'])."
                ) from None
            raise
    # torch's stubs type every Module attribute as Tensor | Module; these two are plain Python values.
    model.spec = dataclasses.replace(  # type: ignore[assignment]
        spec, output_stride=getattr(model, "output_stride", spec.output_stride)
    )
    model.checkpoint_report = report  # type: ignore[assignment]
    return model.eval()


def model_spec(model: nn.Module) -> ModelSpec:
    """The registry entry :func:`create` attached to ``model``, with the model's own ``output_stride``."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"{type(model).__name__} was not built by edgeseg.models.create: it has no spec")
    return spec


def checkpoint_report(model: nn.Module) -> LoadReport:
    """The report of the checkpoint :func:`create` loaded into ``model``."""
    report = getattr(model, "checkpoint_report", None)
    if not isinstance(report, LoadReport):
        raise ValueError("the model has no checkpoint report: build it with edgeseg.models.create(..., checkpoint=...)")
    return report


def _add_head_attention(model: nn.Module, name: str, kind: str) -> None:
    """Insert a ``kind`` block into the all-MLP head of ``model`` (named ``name``); its keys are optional in
    checkpoints."""
    head = getattr(model, "decode_head", None)
    if not isinstance(head, AllMLPHead):
        raise ValueError(
            f"head attention needs a model with the all-MLP head (segformer-*, cloformer-*-seg); "
            f"{name} has {type(head).__name__ if head is not None else 'no decode head'}"
        )
    head.add_attention(kind)
    optional = (*getattr(model, "checkpoint_optional", ()), r"^decode_head\.attention\.")
    setattr(model, "checkpoint_optional", optional)  # noqa: B010  (read by load_checkpoint)


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (shared modules counted once)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward at ``input_size`` (conv, linear and matmul; FLOPs / 2).

    Runs a copy of the model on the meta device: shapes only, no arithmetic, so it is fast at any size.
    """
    from torch.utils.flop_counter import FlopCounterMode

    shadow = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False) as counter:
        shadow(torch.zeros(1, 3, *input_size, device="meta"))
    return counter.get_total_flops() // 2

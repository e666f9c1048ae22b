"""Model registry: one entry per deployable model name, registered by each family file."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

# mmseg's ADE20K / Cityscapes normalisation, in 0..255 pixel units, RGB order.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelSpec:
    """What edgeseg needs to know about a model besides its weights."""

    name: str
    family: str
    builder: Callable[..., nn.Module]  # builder(num_classes, **family options)
    output_stride: int
    description: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_multiple: int = 32
    # True when one graph traced with symbolic height and width is exact at every multiple of input_multiple
    # (no per-size constants such as pooling matrices baked into the graph).
    dynamic_resolution: bool = False
    # "segmentation" (N×classes×H/s×W/s logits) or "classification" (N×classes; backbones' ImageNet heads,
    # kept to load and check official checkpoints, not exported as bundles).
    task: str = "segmentation"
    # Keyword options the builder takes beyond num_classes (``create(name, **options)``, ``--model-option``).
    options: tuple[str, ...] = ()
    # What the class maps are: "logits" (softmax gives probabilities) or "scores" (already per-class scores in
    # [0, 1], e.g. MaskFormer's mask classification; argmax is what they are for).
    output_kind: str = "logits"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry; names are unique."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def register_variants(
    family: str,
    build: Callable[[str, int], nn.Module],
    variants: Iterable[str],
    describe: Callable[[str], str],
    *,
    suffix: str = "",
    **spec_fields: Any,
) -> None:
    """Register ``{family}-{variant}{suffix}`` for every variant, built as ``build(variant, num_classes)``.

    ``describe(variant)`` gives the description; ``spec_fields`` are the other :class:`ModelSpec` fields.
    """
    for variant in variants:
        register_model(
            ModelSpec(
                name=f"{family}-{variant}{suffix}",
                family=family,
                builder=functools.partial(build, variant),
                description=describe(variant),
                **spec_fields,
            )
        )


def list_models() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; unknown names raise with the list of known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None

"""Loading official checkpoints unchanged: shared-module copies, ignored keys, strict key checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint does not match the model it is loaded into."""


@dataclass
class LoadReport:
    """What happened to every key of a checkpoint."""

    loaded: int
    ignored: list[str] = field(default_factory=list)
    deduplicated: dict[str, list[str]] = field(default_factory=dict)


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (``{'state_dict': ...}``, ``{'model': ...}`` or a bare state dict)."""
    if isinstance(source, Mapping):
        obj = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors (optionally under 'state_dict')")
    return dict(obj)


def _short(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_checkpoint(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    aliases: tuple[tuple[str, str], ...] = (),
    ignored: tuple[str, ...] = (),
) -> LoadReport:
    """Load ``source`` into ``model`` strictly.

    ``aliases`` are ``(regex, replacement)`` pairs that map the repeated keys of a shared module onto the
    one key the model registers; every copy must hold the same tensor. Keys matching an ``ignored`` regex
    are dropped and reported. Any other missing or unexpected key raises :class:`CheckpointError`.
    """
    state = read_state_dict(source)
    report = LoadReport(loaded=0)
    canonical: dict[str, torch.Tensor] = {}
    copies: dict[str, list[str]] = {}
    for key, tensor in state.items():
        if any(re.search(pattern, key) for pattern in ignored):
            report.ignored.append(key)
            continue
        target = key
        for pattern, repl in aliases:
            target = re.sub(pattern, repl, target)
        if target in canonical:
            if canonical[target].shape != tensor.shape or not torch.equal(canonical[target], tensor):
                raise CheckpointError(
                    f"keys {copies[target][0]!r} and {key!r} name one shared module but hold different "
                    "tensors; the checkpoint is inconsistent"
                )
        else:
            canonical[target] = tensor
        copies.setdefault(target, []).append(key)
    report.deduplicated = {k: v for k, v in copies.items() if len(v) > 1}

    expected = model.state_dict()
    missing = sorted(set(expected) - set(canonical))
    unexpected = sorted(set(canonical) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        raise CheckpointError(
            f"checkpoint does not fit {type(model).__name__}: "
            + "; ".join(parts)
            + ". Check the model name and --num-classes."
        )
    wrong = [
        f"{k} {tuple(canonical[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if canonical[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(
            "checkpoint shapes do not fit the model (wrong variant or --num-classes?): " + _short(wrong)
        )
    model.load_state_dict(canonical, strict=True)
    report.loaded = len(canonical)
    return report

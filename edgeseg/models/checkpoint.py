"""Loading official checkpoints unchanged: shared-module copies, ignored keys, strict key checks."""

from __future__ import annotations

import pickle
import re
import struct
import warnings
import zipfile
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
    initialised: list[str] = field(default_factory=list)  # model keys absent from the checkpoint, left as built


# What torch.load(weights_only=True) raises on files that are not a checkpoint of tensors.
_TORCH_LOAD_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    RuntimeError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    struct.error,
    zipfile.BadZipFile,
)


def _is_safetensors(path: Path) -> bool:
    """A ``.safetensors`` name, or a file that starts like one (8-byte header length, then a JSON object)."""
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as file:
        head = file.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _short_error(error: BaseException) -> str:
    """The informative line of a loader's error (torch's weights-only refusal is a page long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    refusal = [i for i, line in enumerate(lines) if "WeightsUnpickler error" in line]
    if refusal and refusal[0] + 1 < len(lines):
        return f"the weights-only unpickler refused it: {lines[refusal[0] + 1][:200]}"
    first_sentence = lines[0].split(". ")[0] if lines else ""
    return f"{type(error).__name__}: {first_sentence[:200]}"


def _load_file(path: Path) -> object:
    """The object stored in a checkpoint file, read without running any code from it."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); download or write it again")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {path} is not a readable safetensors file ({_short_error(error)}); "
                "it may be truncated or corrupt: download it again"
            ) from None
    if path.suffix == ".pkl":  # detectron2's model zoo: a pickled dict of numpy arrays
        from edgeseg.models.pickled_arrays import read_pickled_arrays

        try:
            return read_pickled_arrays(path)
        except _TORCH_LOAD_ERRORS as error:
            raise CheckpointError(
                f"checkpoint {path} is not a readable detectron2 pickle of numpy arrays ({error}); it may be "
                "truncated or corrupt: download it again"
            ) from None
    try:
        with warnings.catch_warnings():  # a corrupt file's odd protocol byte is reported by the error below
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except _TORCH_LOAD_ERRORS as error:
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch checkpoint of tensors ({_short_error(error)}); it may be "
            "truncated or corrupt, or hold Python objects, which are never loaded (they could run code)"
        ) from None


def _refuse_non_finite(state: Mapping[str, torch.Tensor], source: object) -> None:
    """Raise :class:`CheckpointError` when a floating-point tensor holds NaN or inf, naming the first keys."""
    bad = [
        key
        for key, tensor in state.items()
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {source} has NaN or inf weights in {_short(bad, limit=5)}; "
            "it is broken (e.g. a diverged training run): use another checkpoint"
        )


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (``{'state_dict': ...}``, ``{'model': ...}``, a bare state dict, ``.safetensors`` or a
    detectron2 ``.pkl`` of numpy arrays).

    Files are loaded weights-only (never unpickling code). Empty, truncated, corrupt and non-tensor files,
    and tensors holding NaN or inf, raise :class:`CheckpointError` naming the file.
    """
    obj = source if isinstance(source, Mapping) else _load_file(Path(source))
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors (optionally under 'state_dict')")
    _refuse_non_finite(obj, source)
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

    A model whose official checkpoints come in more than one key layout may define
    ``remap_checkpoint(state) -> state``; it is applied first and must return the model's own key names.
    ``aliases`` are ``(regex, replacement)`` pairs that map the repeated keys of a shared module onto the
    one key the model registers; every copy must hold the same tensor. Keys matching an ``ignored`` regex
    are dropped and reported. A model may define ``checkpoint_optional``, regexes of its own keys: when a
    checkpoint has none of the keys matching one of them (e.g. an ImageNet checkpoint for a backbone under a
    new head), those keep their initial values and are listed in ``report.initialised``. Any other missing
    or unexpected key raises :class:`CheckpointError`.
    """
    state = read_state_dict(source)
    remap = getattr(model, "remap_checkpoint", None)
    if remap is not None:
        state = remap(state)
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
    for pattern in getattr(model, "checkpoint_optional", ()):
        group = [k for k in expected if re.search(pattern, k)]
        if not any(k in canonical for k in group):
            report.initialised += group
            canonical.update((k, expected[k]) for k in group)
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
    report.loaded = len(canonical) - len(report.initialised)
    return report

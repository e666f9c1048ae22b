"""Checkpoint files are untrusted: broken ones give one clear error, none runs code, non-finite weights are refused."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from edgeseg.models import create
from edgeseg.models.checkpoint import CheckpointError, read_state_dict

REPO = Path(__file__).resolve().parents[1]


class _Planted:
    """Unpickling this touches a marker file: proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _state() -> dict[str, torch.Tensor]:
    return {"conv.weight": torch.ones(2, 3), "conv.bias": torch.zeros(2)}


def broken_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, what the error must say)."""
    torch.save({"state_dict": _state()}, folder / "whole.pth")
    save_file(_state(), folder / "whole.safetensors")
    pth, st = (folder / "whole.pth").read_bytes(), (folder / "whole.safetensors").read_bytes()
    files = {
        "empty.pth": (b"", "is empty"),
        "empty.safetensors": (b"", "is empty"),
        "truncated.pth": (pth[: len(pth) // 2], "not a readable PyTorch checkpoint"),
        "text.pth": (b"hello, not a checkpoint\n", "not a readable PyTorch checkpoint"),
        "pickle-of-objects.pth": (pickle.dumps({"a": object()}, protocol=2), "not a readable PyTorch checkpoint"),
        "truncated.safetensors": (st[:-5], "not a readable safetensors file"),
        "corrupt.safetensors": (st[:8] + b"x" * (len(st) - 8), "not a readable safetensors file"),
        "safetensors-named.bin": (st[:-5], "not a readable safetensors file"),
    }
    out = {}
    for name, (data, message) in files.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, message)
    return out


def test_broken_files_raise_one_checkpoint_error_naming_file_and_format(tmp_path: Path) -> None:
    for name, (path, message) in broken_checkpoints(tmp_path).items():
        with pytest.raises(CheckpointError, match=message) as info:
            read_state_dict(path)
        assert str(path) in str(info.value), name
        assert len(str(info.value)) < 600, name  # one clear line, not torch's page of advice


def test_whole_files_still_load(tmp_path: Path) -> None:
    broken_checkpoints(tmp_path)
    for name in ("whole.pth", "whole.safetensors"):
        state = read_state_dict(tmp_path / name)
        assert set(state) == {"conv.weight", "conv.bias"} and torch.equal(state["conv.weight"], torch.ones(2, 3))


def test_a_planted_checkpoint_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "planted.pth").write_bytes(pickle.dumps({"state_dict": _state(), "x": _Planted(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="weights-only unpickler refused it"):
        read_state_dict(tmp_path / "planted.pth")
    assert not marker.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_non_finite_weights_are_refused(tmp_path: Path, value: float, suffix: str) -> None:
    state = _state()
    state["conv.bias"][1] = value
    path = tmp_path / f"bad{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, path)
    with pytest.raises(CheckpointError, match=r"bad\.\w+ has NaN or inf weights in conv\.bias;"):
        read_state_dict(path)


def test_create_refuses_non_finite_weights_before_export(tmp_path: Path) -> None:
    torch.save({"state_dict": {"backbone.anything": torch.tensor([1.0, float("nan")])}}, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"NaN or inf weights in backbone\.anything"):
        create("segformer-b0", num_classes=4, checkpoint=tmp_path / "nan.pth")


def test_no_load_path_unpickles_code() -> None:
    """Every torch.load in the package and the benchmarks is weights-only."""
    unsafe = []
    for path in [*REPO.glob("edgeseg/**/*.py"), *REPO.glob("benchmarks/**/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"weights_only\s*=\s*False", line):
                unsafe.append(f"{path.relative_to(REPO)}:{number}")
    assert not unsafe, f"torch.load(weights_only=False) runs code from the file: {unsafe}"

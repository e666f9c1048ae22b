"""Hugging Face transformers SegFormer checkpoints: loading into edgeseg and converting both ways."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeseg import models
from edgeseg.models.checkpoint import read_state_dict
from tests.golden import golden_dir

transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency (pip install it)")


@pytest.fixture(scope="module")
def hf_model():
    """A randomly initialised transformers SegFormer-B0 (built from a config, nothing downloaded)."""
    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_labels=150)
    return transformers.SegformerForSemanticSegmentation(config).eval()


def hf_logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_saved_hf_checkpoint_loads_and_gives_hf_outputs(hf_model, tmp_path, filename):
    hf_model.save_pretrained(tmp_path)  # Hub layout: 4.x key names on disk
    if filename == "pytorch_model.bin":  # the older Hub format, same names in a torch pickle
        torch.save(read_state_dict(tmp_path / "model.safetensors"), tmp_path / filename)
    model = models.create("segformer-b0", checkpoint=tmp_path / filename)
    x = torch.randn(1, 3, 256, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
    # HF runs every LayerNorm at eps 1e-5 where the NVlabs code (followed by edgeseg) uses 1e-6.
    torch.testing.assert_close(ours, hf_logits(hf_model, x), rtol=0, atol=1e-4)


def test_in_memory_transformers_5_names_load(hf_model):
    state = hf_model.state_dict()
    assert any(".stages." in k for k in state) or any(".encoder." in k for k in state)
    model = models.create("segformer-b0", checkpoint=state)
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf_logits(hf_model, x), rtol=0, atol=1e-4)


def convert(to: str, source, destination) -> None:
    command = [sys.executable, "-m", "edgeseg", "convert-checkpoint", "--model", "segformer-b0", "--to", to]
    done = subprocess.run([*command, str(source), str(destination)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_nvlabs_to_hf_gives_the_official_outputs_in_transformers(tmp_path):
    golden = golden_dir("segformer_b0")
    convert("hf", golden / "checkpoint.pth", tmp_path / "hf")
    hf = transformers.SegformerForSemanticSegmentation.from_pretrained(tmp_path / "hf").eval()
    x = torch.from_numpy(np.load(golden / "input.npy"))
    np.testing.assert_allclose(hf_logits(hf, x).numpy(), np.load(golden / "logits.npy"), rtol=0, atol=1e-4)


def test_round_trips_are_bit_exact(tmp_path, hf_model):
    golden = golden_dir("segformer_b0")
    original = read_state_dict(golden / "checkpoint.pth")
    convert("hf", golden / "checkpoint.pth", tmp_path / "hf")
    convert("nvlabs", tmp_path / "hf/model.safetensors", tmp_path / "nv.pth")
    back = read_state_dict(tmp_path / "nv.pth")
    assert set(back) == set(original)
    for key, tensor in original.items():
        if key.startswith("decode_head.conv_seg."):  # never used; HF has no such tensor, so it comes back as zeros
            assert not back[key].any()
        else:
            assert torch.equal(back[key], tensor), key

    hf_model.save_pretrained(tmp_path / "hf_orig")
    convert("nvlabs", tmp_path / "hf_orig/model.safetensors", tmp_path / "a.pth")
    convert("hf", tmp_path / "a.pth", tmp_path / "hf_again")
    first = read_state_dict(tmp_path / "hf_orig/model.safetensors")
    second = read_state_dict(tmp_path / "hf_again/model.safetensors")
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)

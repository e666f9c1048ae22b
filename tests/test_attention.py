"""SE, CBAM and Coordinate Attention: golden parity, fusion, dynamic-size ONNX export, and the head option."""

from __future__ import annotations

import collections
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.export import Dim

from edgeseg import models
from edgeseg.cli import HEAD_ATTENTION_CHOICES
from edgeseg.data import generate_synthetic
from edgeseg.models.attention import (
    CBAM,
    HEAD_ATTENTION_KINDS,
    CoordinateAttention,
    HeadAttention,
    SqueezeExcitation,
    head_attention,
)
from edgeseg.models.checkpoint import CheckpointError, load_checkpoint, read_state_dict
from edgeseg.models.fusion import fuse_model
from edgeseg.train import TrainConfig, train
from tests.golden import golden_dir
from tests.model_checks import run_onnxruntime

# golden folder → (block built with the official configuration, official state-dict size)
BLOCKS = {
    "se_block": (lambda: SqueezeExcitation(64, reduction=16), 2),
    "cbam_block": (lambda: CBAM(64, reduction=16), 10),
    "coordatt_block": (lambda: CoordinateAttention(64, 64, reduction=32), 11),
}
OFFICIAL_PARAMS = {"se_block": 512, "cbam_block": 680, "coordatt_block": 1688}
# Ops that pool with a size taken from the input, or cut/join maps along a dynamic axis.
SIZE_BOUND_OPS = {"AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "Split", "Slice"}


def official_block(name: str) -> nn.Module:
    build, _ = BLOCKS[name]
    block = build()
    load_checkpoint(block, golden_dir(name) / "checkpoint.pth")
    return block.eval()


def export_dynamic(block: nn.Module, channels: int) -> onnx.ModelProto:
    """``block`` on 1×C×H×W with symbolic H and W, through torch's dynamo exporter at opset 18."""
    sides = {2: Dim("h", min=2, max=1024), 3: Dim("w", min=2, max=1024)}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            block,
            (torch.zeros(1, channels, 24, 40),),
            dynamo=True,
            opset_version=18,
            external_data=False,
            dynamic_shapes=(sides,),
            verbose=False,
        )
    return program.model_proto


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("stress", ["", "_stress"])
def test_blocks_reproduce_the_official_outputs(name, stress):
    golden = golden_dir(name)
    block = official_block(name)
    x = torch.from_numpy(np.load(golden / f"input{stress}.npy"))
    with torch.no_grad():
        out = block(x).numpy()
    np.testing.assert_allclose(out, np.load(golden / f"output{stress}.npy"), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_blocks_load_every_official_key_and_count_the_official_params(name):
    report = load_checkpoint(BLOCKS[name][0](), golden_dir(name) / "checkpoint.pth")
    assert report.loaded == BLOCKS[name][1] == len(read_state_dict(golden_dir(name) / "checkpoint.pth"))
    assert report.ignored == [] and report.initialised == []
    assert sum(p.numel() for p in BLOCKS[name][0]().parameters()) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("name", ["cbam_block", "coordatt_block"])
def test_fusion_folds_every_batchnorm_exactly(name):
    block = official_block(name)
    fused = fuse_model(block)
    assert not [m for m in fused.modules() if isinstance(m, nn.BatchNorm2d)]
    x = torch.from_numpy(np.load(golden_dir(name) / "input_stress.npy"))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), block(x), rtol=0, atol=1e-4)


def test_coordinate_attention_training_path_is_the_official_concatenation():
    """In training mode the shared transform runs on the concatenated pooled maps; with frozen statistics
    that equals the eval path, which runs it on each map."""
    block = official_block("coordatt_block")
    x = torch.from_numpy(np.load(golden_dir("coordatt_block") / "input.npy"))
    with torch.no_grad():
        separate = block(x)
        block.train()
        block.bn1.eval()
        joint = block(x)
    torch.testing.assert_close(joint, separate, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_blocks_export_one_graph_for_every_size(name):
    golden = golden_dir(name)
    block = fuse_model(official_block(name))
    proto = export_dynamic(block, 64)
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    assert not SIZE_BOUND_OPS & set(ops), sorted(SIZE_BOUND_OPS & set(ops))
    assert ops["ReduceMean"] >= 1
    if name == "coordatt_block":
        assert "Concat" not in ops and "Transpose" not in ops
    x = torch.from_numpy(np.load(golden / "input.npy"))
    np.testing.assert_allclose(run_onnxruntime(proto, x), np.load(golden / "output.npy"), rtol=0, atol=1e-4)
    for size in [(24, 40), (37, 18)]:
        x = torch.randn(1, 64, *size, generator=torch.Generator().manual_seed(size[0])) * 4
        with torch.no_grad():
            eager = block(x).numpy()
        np.testing.assert_allclose(run_onnxruntime(proto, x), eager, rtol=0, atol=1e-5)


# ---- an attention block in the all-MLP head ---------------------------------------------------------------


def test_cli_choices_are_the_head_attention_kinds():
    assert HEAD_ATTENTION_CHOICES == HEAD_ATTENTION_KINDS


@pytest.mark.parametrize("kind", HEAD_ATTENTION_KINDS)
def test_a_head_block_starts_as_the_identity_and_learns(kind):
    torch.manual_seed(0)  # the block's random layers: SE's hidden ReLU units must not all be dead for this batch
    block = head_attention(kind, 32)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 32, 9, 13, generator=generator) + torch.randn(8, 32, 1, 1, generator=generator)
    block.train()
    out = block(x)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    out.square().sum().backward()  # a loss whose gradient reaches the gates
    zeroed = [p for p in block.parameters() if p.ndim > 1 and not p.any()]
    assert zeroed and all(p.grad is not None and p.grad.abs().sum() > 0 for p in zeroed)


@pytest.fixture(scope="module")
def segformer_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return models.create("segformer-b0", num_classes=5).state_dict()


@pytest.mark.parametrize("kind", HEAD_ATTENTION_KINDS)
def test_segformer_with_a_head_block_loads_an_official_checkpoint_and_computes_the_same(kind, segformer_state):
    plain = models.create("segformer-b0", num_classes=5, checkpoint=segformer_state)
    torch.manual_seed(1)
    model = models.create("segformer-b0", num_classes=5, checkpoint=segformer_state, head_attention=kind)
    report = model.checkpoint_report
    assert report.initialised == [k for k in model.state_dict() if k.startswith("decode_head.attention.")]
    assert report.initialised and isinstance(model.decode_head.attention, HeadAttention)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", HEAD_ATTENTION_KINDS)
def test_a_trained_head_block_round_trips_and_fuses(kind, segformer_state):
    torch.manual_seed(1)
    model = models.create("segformer-b0", num_classes=5, checkpoint=segformer_state, head_attention=kind)
    with torch.no_grad():  # a trained block: no longer the identity
        for p in model.decode_head.attention.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    state = model.state_dict()
    reloaded = models.create("segformer-b0", num_classes=5, checkpoint=state, head_attention=kind)
    assert reloaded.checkpoint_report.initialised == []
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eager = reloaded(x)
        assert not torch.allclose(eager, models.create("segformer-b0", num_classes=5, checkpoint=segformer_state)(x))
        torch.testing.assert_close(model(x), eager, rtol=0, atol=0)
        torch.testing.assert_close(fuse_model(reloaded)(x), eager, rtol=0, atol=1e-5)
    with pytest.raises(CheckpointError, match=r"decode_head\.attention\..*pass the same head_attention"):
        models.create("segformer-b0", num_classes=5, checkpoint=state)


def test_head_attention_is_refused_where_there_is_no_all_mlp_head():
    with pytest.raises(ValueError, match=r"all-MLP head.*mbv2-ca-seg has LiteRASPPHead"):
        models.create("mbv2-ca-seg", head_attention="ca")
    with pytest.raises(ValueError, match="unknown head attention 'eca'; choose one of se, cbam, ca"):
        models.create("segformer-b0", head_attention="eca")


def test_cloformer_seg_takes_a_head_block():
    model = models.create("cloformer-xxs-seg", head_attention="cbam")
    assert isinstance(model.decode_head.attention.block, CBAM)


def test_train_with_a_head_block_writes_a_checkpoint_that_loads_back(tmp_path: Path):
    data = generate_synthetic(tmp_path / "set", 4, (64, 64), seed=1, val_fraction=0.25).root
    config = TrainConfig(
        "segformer-b0", data, tmp_path / "ca.pth", steps=2, batch_size=2, crop=(64, 64), threads=1, head_attention="ca"
    )
    result = train(config, log=lambda line: None)
    meta = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["meta"]
    assert meta["head_attention"] == "ca"
    model = models.create(
        "segformer-b0",
        num_classes=meta["num_classes"],
        checkpoint=result.checkpoint,
        head_attention=meta["head_attention"],
    )
    assert model.checkpoint_report.initialised == []
    trained_gate = result.model.decode_head.attention.block.conv_h.weight
    assert trained_gate.any()  # the zero-initialised gate conv moved
    torch.testing.assert_close(model.decode_head.attention.block.conv_h.weight, trained_gate)

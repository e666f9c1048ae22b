"""AFFormer: official-checkpoint loading, golden parity, static low-pass filter, fusion."""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F

from edgeseg import models
from edgeseg.export.onnx_graph import simplify
from edgeseg.models.checkpoint import CheckpointError, read_state_dict
from edgeseg.models.fusion import fuse_model
from edgeseg.models.static_ops import PoolUpsample
from tests.golden import golden_dir
from tests.model_checks import assert_golden_logits_and_features, export_fused

# Official parameter counts (dongbo811/AFFormer, 150 classes, measured on the official code), which include
# the head's dead `align` block (66,048 parameters) that edgeseg does not build.
OFFICIAL_PARAMS = {"afformer-tiny": 2_193_354, "afformer-small": 2_389_154, "afformer-base": 3_003_954}
DEAD_ALIGN_PARAMS = 66_048


@pytest.fixture(scope="module")
def golden():
    return golden_dir("afformer_tiny")


@pytest.fixture(scope="module")
def golden_model(golden):
    return models.create("afformer-tiny", checkpoint=golden / "checkpoint.pth")


def test_registry_lists_the_three_variants():
    assert {"afformer-tiny", "afformer-small", "afformer-base"} <= set(models.list_models())
    with pytest.raises(KeyError, match="known models"):
        models.create("afformer-huge")


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_equal_the_official_ones_less_align(name):
    assert models.count_params(models.create(name)) == OFFICIAL_PARAMS[name] - DEAD_ALIGN_PARAMS


def test_macs_at_512_match_the_published_count():
    macs = models.count_macs(models.create("afformer-tiny"), (512, 512))
    assert macs == pytest.approx(3.08e9, rel=0.01)


def test_golden_logits_and_features(golden, golden_model):
    assert_golden_logits_and_features(golden_model, golden)


@pytest.mark.parametrize("layout", ["channels", "channels-reduce"])
def test_channels_layouts_give_the_golden_logits_and_features(golden, layout):
    model = models.create("afformer-tiny", checkpoint=golden / "checkpoint.pth")
    model.set_encoder_layout(layout)
    assert_golden_logits_and_features(model, golden)


def test_unknown_encoder_layout_is_refused():
    with pytest.raises(ValueError, match="tokens, channels, channels-reduce"):
        models.create("afformer-tiny").set_encoder_layout("nhwc")


@pytest.mark.parametrize("layout", ["tokens", "channels", "channels-reduce"])
def test_exported_encoder_has_last_axis_softmax_and_few_transposes(layout):
    model = models.create("afformer-tiny")
    model.set_encoder_layout(layout)
    graph = simplify(export_fused(model, (128, 128))).graph  # as exported: the weight chunks fold away
    ops = collections.Counter(n.op_type for n in graph.node)
    softmax_axes = {a.i for n in graph.node if n.op_type == "Softmax" for a in n.attribute if a.name == "axis"}
    assert softmax_axes <= {-1, 3} and ops["Softmax"] == 8
    # channels: two per LayerNorm (16) and the small Vᵀ and contextᵀ of each of the 8 layers, nothing else;
    # channels-reduce: only the latter, its LayerNorms are channel means
    assert ops["Transpose"] == {"tokens": 88, "channels": 48, "channels-reduce": 16}[layout]
    assert ops["LayerNormalization"] == {"tokens": 16, "channels": 16, "channels-reduce": 0}[layout]
    # the low-pass quarters in all; tokens also splits q, k, v
    assert ops["Split"] == {"tokens": 16, "channels": 8, "channels-reduce": 8}[layout]


def test_checkpoint_report_names_ignored_and_shared_keys(golden, golden_model):
    report = golden_model.checkpoint_report
    assert report.ignored == [
        "decode_head.align.conv.weight",
        "decode_head.align.gn.weight",
        "decode_head.align.gn.bias",
    ]
    raw = read_state_dict(golden / "checkpoint.pth")
    copies = sum(len(v) for v in report.deduplicated.values()) - len(report.deduplicated)
    assert report.loaded + copies + len(report.ignored) == len(raw) == 420
    shared = report.deduplicated["backbone.mhca_stages.1.mhca_blks.0.crpe.conv_list.0.weight"]
    assert "backbone.mhca_stages.1.mhca_blks.0.MHCA_layers.1.factoratt_crpe.crpe.conv_list.0.weight" in shared


def test_diverging_shared_copy_is_an_error(golden):
    state = read_state_dict(golden / "checkpoint.pth")
    key = "backbone.mhca_stages.2.mhca_blks.0.MHCA_layers.3.cpe.proj.weight"
    state[key] = state[key] + 1
    with pytest.raises(CheckpointError, match="different tensors"):
        models.create("afformer-tiny", checkpoint={"state_dict": state})


def test_missing_and_unexpected_keys_are_named(golden):
    state = read_state_dict(golden / "checkpoint.pth")
    del state["backbone.stem.0.conv.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: backbone\.stem\.0\.conv\.weight.*unexpected keys: "):
        models.create("afformer-tiny", checkpoint=state)


def test_wrong_variant_or_class_count_is_explained(golden):
    with pytest.raises(CheckpointError, match="num-classes"):
        models.create("afformer-tiny", num_classes=19, checkpoint=golden / "checkpoint.pth")
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        models.create("afformer-small", checkpoint=golden / "checkpoint.pth")


@pytest.mark.parametrize("size", [1, 2, 3, 6])
@pytest.mark.parametrize("n", [(1, 1), (2, 5), (3, 7), (5, 4), (8, 10), (13, 6), (32, 40), (64, 64)])
def test_static_low_pass_equals_adaptive_pool_and_upsample(size, n):
    x = torch.randn(2, 5, *n)
    pooled = F.adaptive_avg_pool2d(x, size)
    reference = F.interpolate(pooled, size=n, mode="bilinear", align_corners=False)
    torch.testing.assert_close(PoolUpsample(size)(x), reference, rtol=0, atol=2e-6)


@pytest.mark.parametrize("layout", ["tokens", "channels", "channels-reduce"])
@pytest.mark.parametrize("size", [(256, 320), (352, 480)])
def test_fused_model_matches_eager(golden_model, size, layout):
    fused = fuse_model(golden_model)
    fused.set_encoder_layout(layout)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager_logits, fused_logits = golden_model(x), fused(x)
        eager_feats, fused_feats = golden_model.forward_features(x), fused.forward_features(x)
    torch.testing.assert_close(fused_logits, eager_logits, rtol=0, atol=1e-5)
    for eager, fast in zip(eager_feats, fused_feats):
        torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-4)


def test_fusion_removes_batchnorm_and_merges_high_pass_kernels(golden_model):
    fused = fuse_model(golden_model)
    assert not [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    crpe = fused.backbone.mhca_stages[1].mhca_blks[0].crpe
    assert len(crpe.conv_list) == 1 and crpe.conv_list[0].kernel_size == (7, 7)
    assert crpe.conv_list[0].groups == crpe.conv_list[0].in_channels == 64
    assert all(not m.residual for m in fused.modules() if hasattr(m, "residual"))
    # The original is untouched.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in golden_model.modules())


def test_any_input_size_runs_and_gives_stride_8_logits():
    model = models.create("afformer-tiny")
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 100, 68))
    assert logits.shape == (1, 150, 13, 9)

"""CGRSeg T/B/L on EfficientFormerV2: official-checkpoint loading, golden parity, exact pooling and bias resize,
fusion and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeseg import models
from edgeseg.models.cgrseg import pyramid_pool
from edgeseg.models.checkpoint import CheckpointError, read_state_dict
from edgeseg.models.efficientformerv2 import Attention4DDownsample, LGQuery, RelativeBiasAttention
from edgeseg.models.fusion import fuse_model
from tests.golden import golden_dir
from tests.model_checks import assert_portable_graph, export_fused, run_onnxruntime

# Official parameter counts (released ADE20K configs, 150 classes, measured on the official code). The official
# dead buffers (7×7 ImageNet bias tables) are buffers, not parameters, so nothing is subtracted.
OFFICIAL_PARAMS = {"cgrseg-t": 9_364_647, "cgrseg-b": 19_114_871, "cgrseg-l": 35_677_703}
OFFICIAL_BACKBONE_PARAMS = {"cgrseg-t": 5_748_360, "cgrseg-b": 12_151_408, "cgrseg-l": 25_578_016}
# The official dead buffers of CGRSeg-T: 4 Attention4D blocks and 1 Attention4DDownsample, 2 keys each.
DEAD_KEYS_T = [
    f"backbone.network.{block}.{name}"
    for block in ("4.7.token_mixer", "4.8.token_mixer", "5.attn", "6.4.token_mixer", "6.5.token_mixer")
    for name in ("attention_biases", "attention_bias_idxs")
]
NON_MULTIPLE_OF_64 = (352, 480)


@pytest.fixture(scope="module")
def golden():
    return golden_dir("cgrseg_t")


@pytest.fixture(scope="module")
def golden_model(golden):
    return models.create("cgrseg-t", checkpoint=golden / "checkpoint.pth")


@pytest.fixture(scope="module")
def fused_model(golden_model):
    return fuse_model(golden_model)


def random_input(size: tuple[int, int], seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_the_three_variants_with_a_model_card():
    assert {"cgrseg-t", "cgrseg-b", "cgrseg-l"} <= set(models.list_models())
    assert "next_repeat=6" in models.get_spec("cgrseg-b").description
    assert "18.1 M" in models.get_spec("cgrseg-b").description


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_equal_the_official_ones(name):
    model = models.create(name)
    assert models.count_params(model) == OFFICIAL_PARAMS[name]
    assert models.count_params(model.backbone) == OFFICIAL_BACKBONE_PARAMS[name]


def test_macs_at_512_match_the_measured_count():
    # Conv-only 3.945 G (published 4.0 GFLOPs, which count conv MACs) plus 0.585 G of attention/gather matmuls.
    macs = models.count_macs(models.create("cgrseg-t"), (512, 512))
    assert macs == pytest.approx(4.531e9, rel=0.001)


def test_golden_logits_and_features(golden, golden_model):
    x = torch.from_numpy(np.load(golden / "input.npy"))
    with torch.no_grad():
        features = golden_model.forward_features(x)
        logits = golden_model.decode_head(features[1:]).numpy()
    np.testing.assert_allclose(logits, np.load(golden / "logits.npy"), rtol=0, atol=1e-4)
    for i in (1, 2, 3):
        np.testing.assert_allclose(features[i].numpy(), np.load(golden / f"features_{i}.npy"), rtol=0, atol=1e-4)


def test_checkpoint_report_lists_the_dead_bias_buffers(golden, golden_model):
    report = golden_model.checkpoint_report
    assert sorted(report.ignored) == sorted(DEAD_KEYS_T)
    assert not report.deduplicated
    assert report.loaded + len(report.ignored) == len(read_state_dict(golden / "checkpoint.pth")) == 952


def test_constructed_bias_index_tables_equal_the_official_ones(golden):
    state = read_state_dict(golden / "checkpoint.pth")
    built = models.create("cgrseg-t").state_dict()
    tables = [k for k in state if k.endswith("attention_bias_idxs_seg")]
    assert len(tables) == 5
    for key in tables:
        assert torch.equal(built[key], state[key]), key


def test_missing_and_unexpected_keys_are_named(golden):
    state = read_state_dict(golden / "checkpoint.pth")
    del state["decode_head.lgc.conv_mask.weight"]
    state["decode_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: decode_head\.lgc\.conv_mask\.weight.*unexpected keys: "):
        models.create("cgrseg-t", checkpoint=state)


def test_wrong_variant_or_class_count_is_explained(golden):
    with pytest.raises(CheckpointError, match="num-classes"):
        models.create("cgrseg-t", num_classes=19, checkpoint=golden / "checkpoint.pth")
    with pytest.raises(CheckpointError, match="does not fit CGRSeg: missing keys"):
        models.create("cgrseg-b", checkpoint=golden / "checkpoint.pth")


def test_weights_loaded_after_a_forward_are_used(golden_model):
    # The official model caches the gathered bias at eval() and goes stale when weights are loaded later.
    model = models.create("cgrseg-t")
    x = random_input((64, 96))
    with torch.no_grad():
        model(x)
        model.load_state_dict(golden_model.state_dict())
        torch.testing.assert_close(model(x), golden_model(x), rtol=0, atol=0)


@pytest.mark.parametrize("size", [NON_MULTIPLE_OF_64, (416, 416), (96, 160), (512, 512)])
def test_pyramid_pooling_equals_adaptive_avg_pool(size):
    h, w = size
    features = [torch.randn(2, c, h // s, w // s) for c, s in ((5, 8), (6, 16), (7, 32))]
    grid = ((h // 32 - 1) // 2 + 1, (w // 32 - 1) // 2 + 1)
    reference = torch.cat([F.adaptive_avg_pool2d(f, grid) for f in features], dim=1)
    torch.testing.assert_close(pyramid_pool(features), reference, rtol=0, atol=1e-6)


def test_pyramid_pooling_windows_overlap_at_non_multiples_of_64():
    # 352 / 32 = 11 tokens pooled to 6: windows [0,2), [1,4), [3,6), ... are uneven and overlap.
    x = torch.zeros(1, 1, 11, 1)
    x[0, 0, 1, 0] = 1.0
    pooled = pyramid_pool([x])
    assert pooled.shape == (1, 1, 6, 1)
    assert pooled[0, 0, 0, 0] == 0.5 and pooled[0, 0, 1, 0] == pytest.approx(1 / 3)


def official_bias(module: RelativeBiasAttention, num_queries: int, num_keys: int) -> torch.Tensor:
    """Reference from the notes: the gathered 16×16-grid table, bicubically resized on every forward."""
    grid = 16
    qy, qx = np.divmod(np.arange(grid * grid), grid)
    if isinstance(module, Attention4DDownsample):  # offsets (|2qy − ky|, |2qx − kx|) to a 32×32 key grid
        ky, kx = np.divmod(np.arange(4 * grid * grid), 2 * grid)
        index = np.abs(2 * qy[:, None] - ky) * 2 * grid + np.abs(2 * qx[:, None] - kx)
    else:  # offsets (|Δy|, |Δx|) on the 16×16 grid
        index = np.abs(qy[:, None] - qy) * grid + np.abs(qx[:, None] - qx)
    table = module.attention_biases_seg[:, torch.from_numpy(index)]
    return F.interpolate(table[None], size=(num_queries, num_keys), mode="bicubic", align_corners=False)[0]


@pytest.fixture(scope="module")
def official_bias_model(golden):
    model = models.create("cgrseg-t", checkpoint=golden / "checkpoint.pth")
    for module in model.modules():
        if isinstance(module, RelativeBiasAttention):
            module.attention_bias = lambda nq, nk, m=module: official_bias(m, nq, nk)
    return model


def test_official_bias_reference_is_the_model_bias_at_512(golden_model):
    # At 512×512 (16×16 query grid) the official bicubic resize is an identity.
    attention = [m for m in golden_model.modules() if isinstance(m, RelativeBiasAttention)]
    assert len(attention) == 5
    with torch.no_grad():
        for module in attention:
            num_keys = 1024 if isinstance(module, Attention4DDownsample) else 256
            assert torch.equal(module.attention_bias(256, num_keys), official_bias(module, 256, num_keys))


@pytest.mark.parametrize("size", [NON_MULTIPLE_OF_64, (128, 160)])
def test_other_sizes_match_the_official_bicubic_bias_resize(golden_model, fused_model, official_bias_model, size):
    x = random_input(size)
    with torch.no_grad():
        reference = official_bias_model(x)
        eager, fused = golden_model(x), fused_model(x)
    assert eager.shape == (1, 150, size[0] // 8, size[1] // 8)
    torch.testing.assert_close(eager, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)


def test_fused_model_matches_eager_and_has_nothing_left_to_fold(golden_model, fused_model):
    x = random_input((256, 320), seed=2)
    with torch.no_grad():
        torch.testing.assert_close(fused_model(x), golden_model(x), rtol=0, atol=1e-5)
    assert not [m for m in fused_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    leftover = [
        n for n, _ in fused_model.named_parameters() if n.rsplit(".", 1)[-1].startswith(("layer_scale", "gamma"))
    ]
    assert not leftover
    assert all(m.subsample_merged for m in fused_model.modules() if isinstance(m, LGQuery))
    attention = [m for m in fused_model.modules() if isinstance(m, RelativeBiasAttention)]
    assert len(attention) == 5 and all(m.scale == 1.0 and m.frozen_bias is not None for m in attention)
    # The original is untouched.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in golden_model.modules())


def test_fused_bias_is_cached_per_token_grid(fused_model):
    attention = next(m for m in fused_model.modules() if isinstance(m, Attention4DDownsample))
    first = attention.attention_bias(99, 396)
    assert attention.attention_bias(99, 396) is first
    assert first.shape == (8, 99, 396)


def test_sides_must_be_multiples_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        models.create("cgrseg-t")(torch.zeros(1, 3, 96, 100))


@pytest.mark.slow
@pytest.mark.parametrize("size", [(512, 512), NON_MULTIPLE_OF_64], ids=lambda s: f"{s[0]}x{s[1]}")
def test_fused_model_exports_to_a_static_4d_graph_matching_pytorch(golden, golden_model, size):
    proto = export_fused(golden_model, size)
    assert_portable_graph(proto)
    # Only the bilinear resizes remain: 2 attention upsamplings and 5 in the head; the biases are constants.
    resizes = [n for n in proto.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 7
    assert all(a.s == b"linear" for n in resizes for a in n.attribute if a.name == "mode")

    x = torch.from_numpy(np.load(golden / "input.npy")) if size == (512, 512) else random_input(size)
    logits = run_onnxruntime(proto, x)
    with torch.no_grad():
        np.testing.assert_allclose(logits, golden_model(x).numpy(), rtol=0, atol=1e-4)
    if size == (512, 512):
        np.testing.assert_allclose(logits, np.load(golden / "logits.npy"), rtol=0, atol=1e-4)

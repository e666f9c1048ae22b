"""CloFormer: official-checkpoint loading, golden parity, portable GroupNorm, fusion, seg head, export.

The export checks use the segmentation model, whose graph contains the whole classifier backbone.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from edgeseg import models
from edgeseg.models.checkpoint import CheckpointError, read_state_dict
from edgeseg.models.cloformer import LayerNormCHW
from edgeseg.models.fusion import fuse_model
from tests.golden import golden_dir
from tests.model_checks import FORBIDDEN_OPS, assert_portable_graph, export_fused, run_onnxruntime

# Official classifier parameter counts and conv/linear/matmul GMACs (224², 512²), measured on qhfan/CloFormer.
OFFICIAL = {
    "cloformer-xxs": (4_166_728, 0.661, 3.87),
    "cloformer-xs": (7_172_216, 1.219, 7.00),
    "cloformer-s": (12_345_576, 2.170, 12.12),
}
FINAL_DIMS = {"cloformer-xxs": 256, "cloformer-xs": 352, "cloformer-s": 448}
CLASSIFIER_KEYS = ["norm.weight", "norm.bias", "head.weight", "head.bias"]


@pytest.fixture(scope="module")
def golden():
    return golden_dir("cloformer_xxs")


@pytest.fixture(scope="module")
def golden_input(golden):
    return torch.from_numpy(np.load(golden / "input.npy"))


@pytest.fixture(scope="module")
def classifier(golden):
    return models.create("cloformer-xxs", num_classes=1000, checkpoint=golden / "checkpoint.pth")


@pytest.fixture(scope="module")
def segmenter(golden):
    torch.manual_seed(0)
    return models.create("cloformer-xxs-seg", checkpoint=golden / "checkpoint.pth")


def test_registry_lists_classifiers_and_segmenters():
    for variant in ("xxs", "xs", "s"):
        classifier_spec = models.get_spec(f"cloformer-{variant}")
        seg_spec = models.get_spec(f"cloformer-{variant}-seg")
        assert "classifier" in classifier_spec.description
        assert "edgeseg's own" in seg_spec.description and seg_spec.output_stride == 4


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_classifier_params_and_macs_equal_the_official_ones(name):
    params, gmacs_224, gmacs_512 = OFFICIAL[name]
    model = models.create(name, num_classes=1000)
    assert models.count_params(model) == params
    assert models.count_macs(model, (224, 224)) / 1e9 == pytest.approx(gmacs_224, rel=2e-3)
    if name == "cloformer-xxs":  # 512² for one variant keeps the test fast
        assert models.count_macs(model, (512, 512)) / 1e9 == pytest.approx(gmacs_512, rel=2e-3)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_seg_backbone_params_equal_the_classifier_less_its_head(name):
    model = models.create(f"{name}-seg")
    dim = FINAL_DIMS[name]
    classifier_head = dim * 1000 + 1000 + 2 * dim  # Linear + final GroupNorm
    assert models.count_params(model) - models.count_params(model.decode_head) == OFFICIAL[name][0] - classifier_head


def test_golden_logits_features_and_stem(golden, golden_input, classifier):
    with torch.no_grad():
        logits = classifier(golden_input).numpy()
        stem, features = classifier.forward_pyramid(golden_input)
    np.testing.assert_allclose(logits, np.load(golden / "logits.npy"), rtol=0, atol=1e-4)
    np.testing.assert_allclose(stem.numpy(), np.load(golden / "stem.npy"), rtol=0, atol=1e-4)
    assert len(features) == 4
    for i, feature in enumerate(features):
        np.testing.assert_allclose(feature.numpy(), np.load(golden / f"features_{i}.npy"), rtol=0, atol=1e-4)
    torch.testing.assert_close(classifier.forward_stem(golden_input), stem, rtol=0, atol=0)


def test_classifier_checkpoint_loads_every_key(golden, classifier):
    report = classifier.checkpoint_report
    assert report.loaded == len(read_state_dict(golden / "checkpoint.pth")) == 351
    assert report.ignored == [] and report.initialised == [] and report.deduplicated == {}


def test_missing_and_unexpected_keys_are_named(golden):
    state = read_state_dict(golden / "checkpoint.pth")
    del state["layers.1.blocks.0.attn.global_kv.weight"]
    state["layers.1.blocks.0.attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"missing keys: layers\.1\.blocks\.0\.attn\.global_kv\.weight.*unexpected"
    ):
        models.create("cloformer-xxs", num_classes=1000, checkpoint=state)


def test_wrong_variant_or_class_count_is_explained(golden):
    with pytest.raises(CheckpointError, match="num-classes"):
        models.create("cloformer-xxs", checkpoint=golden / "checkpoint.pth")  # default 150 classes
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        models.create("cloformer-xs", num_classes=1000, checkpoint=golden / "checkpoint.pth")


def test_seg_model_loads_an_imagenet_checkpoint_into_its_backbone(golden_input, classifier, segmenter):
    report = segmenter.checkpoint_report
    assert report.ignored == CLASSIFIER_KEYS
    assert report.initialised == [k for k in segmenter.state_dict() if k.startswith("decode_head.")]
    assert report.loaded == 351 - len(CLASSIFIER_KEYS)
    with torch.no_grad():
        seg_features = segmenter.forward_features(golden_input)
        classifier_features = classifier.forward_features(golden_input)
        logits = segmenter(golden_input)
    for seg, cls in zip(seg_features, classifier_features):
        torch.testing.assert_close(seg, cls, rtol=0, atol=0)
    assert logits.shape == (1, 150, 56, 56) and torch.isfinite(logits).all()


def test_seg_checkpoint_round_trips_and_a_partial_head_is_an_error(segmenter):
    state = segmenter.state_dict()
    reloaded = models.create("cloformer-xxs-seg", checkpoint=state)
    assert reloaded.checkpoint_report.initialised == [] and reloaded.checkpoint_report.ignored == []
    torch.testing.assert_close(reloaded.decode_head.linear_pred.weight, segmenter.decode_head.linear_pred.weight)
    del state["decode_head.linear_pred.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: decode_head\.linear_pred\.bias"):
        models.create("cloformer-xxs-seg", checkpoint=state)


@pytest.mark.parametrize("shape", [(2, 32, 56, 56), (1, 256, 7, 9)])
def test_layer_norm_chw_is_group_norm_with_one_group(shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator) * 3 + 1
    norm = LayerNormCHW(shape[1])
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.normal_(0, 0.1, generator=generator)
        reference = F.group_norm(x, 1, norm.weight, norm.bias, norm.eps)
        torch.testing.assert_close(norm(x), reference, rtol=0, atol=1e-5)
        conv = torch.nn.Conv2d(shape[1], 8, 1)
        expected = conv(norm(x))
        plain = norm.drop_affine(conv)
        torch.testing.assert_close(conv(plain(x)), expected, rtol=0, atol=1e-5)
    assert plain.weight is None


def test_fused_classifier_matches_eager_and_has_no_batchnorm(golden_input, classifier):
    fused = fuse_model(classifier)
    with torch.no_grad():
        torch.testing.assert_close(fused(golden_input), classifier(golden_input), rtol=0, atol=1e-5)
    assert not [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    attn = fused.layers[0].blocks[0].attn
    assert attn.gate_scale == 1.0 and classifier.layers[0].blocks[0].attn.gate_scale == 8**-0.5
    norms = [m for m in fused.modules() if isinstance(m, LayerNormCHW)]
    assert [m for m in norms if m.weight is not None] == [fused.patch_embed.layernorm]  # feeds a residual
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in classifier.modules())  # the original is untouched


@pytest.mark.parametrize("size", [(224, 224), (160, 200)])
def test_fused_segmenter_matches_eager_at_any_size(segmenter, size):
    fused = fuse_model(segmenter)
    assert fused.decode_head.branches is not None and not hasattr(fused.decode_head, "linear_fuse")
    assert not [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager, fast = segmenter(x), fused(x)
    assert eager.shape == (1, 150, -(-size[0] // 4), -(-size[1] // 4))
    torch.testing.assert_close(fast, eager, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(224, 224), (256, 320)])
def test_segmenter_exports_to_onnxruntime_and_openvino(segmenter, size, tmp_path):
    proto = export_fused(segmenter, size)
    assert_portable_graph(proto, FORBIDDEN_OPS | {"InstanceNormalization", "GroupNormalization"})
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = segmenter(x).numpy()
    np.testing.assert_allclose(run_onnxruntime(proto, x), reference, rtol=0, atol=1e-4)
    if size == (224, 224):
        import openvino as ov

        onnx.save(proto, tmp_path / "model.onnx")
        compiled = ov.Core().compile_model(tmp_path / "model.onnx", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        np.testing.assert_allclose(compiled([x.numpy()])[0], reference, rtol=0, atol=1e-4)

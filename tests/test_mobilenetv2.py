"""MobileNetV2-CA: official-checkpoint loading, golden parity of every stage, the LR-ASPP segmenter, export."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from edgeseg import models
from edgeseg.bundle import read_bundle
from edgeseg.data import generate_synthetic, open_dataset, read_sample
from edgeseg.export import ExportRequest, export_bundle
from edgeseg.imaging import normalize
from edgeseg.models.checkpoint import read_state_dict
from edgeseg.models.fusion import fuse_model
from tests.golden import golden_dir

OFFICIAL_PARAMS = 3_950_648  # MBV2_CA(), houqb/CoordAttention (manifest param_count)
OFFICIAL_KEYS = 490
STAGES = [f"features.{i}" for i in range(18)] + ["conv"]
SEG_UNUSED = (r"features\.1[4-7]\.", r"conv\.", r"classifier\.")  # stride-32 stages, 1280 conv, classifier


@pytest.fixture(scope="module")
def golden():
    return golden_dir("mbv2_ca")


@pytest.fixture(scope="module")
def golden_input(golden):
    return torch.from_numpy(np.load(golden / "input.npy"))


@pytest.fixture(scope="module")
def stages(golden):
    return np.load(golden / "intermediates.npz")


@pytest.fixture(scope="module")
def classifier(golden):
    return models.create("mbv2-ca", num_classes=1000, checkpoint=golden / "checkpoint.pth")


@pytest.fixture(scope="module")
def segmenter(golden):
    torch.manual_seed(0)
    return models.create("mbv2-ca-seg", checkpoint=golden / "checkpoint.pth")


@pytest.fixture(scope="module")
def lively_checkpoint(golden, tmp_path_factory):
    """The segmenter on the golden weights with every BatchNorm's statistics set to those of its input on the kinds
    of inputs the parity ladder feeds (synthetic images and N(0, 1) noise): unit-variance signals throughout,
    logits of a few units. The golden statistics shrink running_var by up to 10× per BatchNorm, which amplifies
    float rounding far beyond what trained weights do, so the fusion and export checks use these."""
    folder = generate_synthetic(tmp_path_factory.mktemp("mbv2") / "set", 2, (128, 128), seed=3, val_fraction=0.5).root
    spec = models.get_spec("mbv2-ca-seg")
    images = [normalize(read_sample(s)[0], spec.mean, spec.std) for s in open_dataset(folder).samples("all")]
    noise = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    model = models.create("mbv2-ca-seg", checkpoint=golden / "checkpoint.pth")

    def set_statistics(bn: torch.nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        bn.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
        bn.running_var.copy_(inputs[0].var(dim=(0, 2, 3), unbiased=False))

    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [bn.register_forward_pre_hook(set_statistics) for bn in batchnorms]
    with torch.no_grad():
        model(torch.cat([torch.from_numpy(np.concatenate(images)), noise]))
    for hook in hooks:
        hook.remove()
    path = tmp_path_factory.mktemp("mbv2") / "lively.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def test_registry_lists_the_classifier_and_the_segmenter():
    classifier, segmenter = models.get_spec("mbv2-ca"), models.get_spec("mbv2-ca-seg")
    assert classifier.family == segmenter.family == "mbv2"
    assert classifier.task == "classification" and segmenter.task == "segmentation"
    assert segmenter.output_stride == 8 and segmenter.input_multiple == 16 and segmenter.dynamic_resolution


def test_params_equal_the_official_ones():
    model = models.create("mbv2-ca", num_classes=1000)
    assert models.count_params(model) == OFFICIAL_PARAMS
    seg = models.create("mbv2-ca-seg")
    unused = sum(p.numel() for name, p in model.named_parameters() if any(re.match(u, name) for u in SEG_UNUSED))
    assert models.count_params(seg.backbone) == OFFICIAL_PARAMS - unused


def test_classifier_checkpoint_loads_every_key(golden, classifier):
    report = classifier.checkpoint_report
    assert report.loaded == len(read_state_dict(golden / "checkpoint.pth")) == OFFICIAL_KEYS
    assert report.ignored == [] and report.initialised == [] and report.deduplicated == {}


def test_every_stage_reproduces_the_official_one_from_the_official_input(classifier, golden_input, stages):
    """Each stage run on the official output of the stage before it: every block is exact on its own."""
    with torch.no_grad():
        outputs = [classifier.features[0](golden_input)]
        for i in range(1, 18):
            outputs.append(classifier.features[i](torch.from_numpy(stages[f"features.{i - 1}"])))
        outputs.append(classifier.conv(torch.from_numpy(stages["features.17"])))
        logits = classifier.classifier(torch.from_numpy(stages["conv"]).mean(dim=(2, 3)))
    for name, output in zip(STAGES, outputs):
        np.testing.assert_allclose(output.numpy(), stages[name], rtol=0, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(logits.numpy(), np.load(golden_dir("mbv2_ca") / "logits.npy"), rtol=0, atol=1e-4)


def test_end_to_end_logits_and_features(classifier, golden, golden_input, stages):
    """End to end, float rounding grows through the 17 blocks: this reference recalibrated every BatchNorm to
    running_var = var × U(0.1, 1), which amplifies each block's ~1e-6 rounding differences (the pools' summation
    order) to ~2e-4 on the logits and ~5e-3 on the 1280-channel features (|x| ≤ 6). The per-stage test above
    is the exactness check; this one bounds the accumulated rounding."""
    with torch.no_grad():
        logits = classifier(golden_input).numpy()
        features = classifier.forward_features(golden_input)[0].numpy()
        outputs = classifier.forward_stages(golden_input)
    np.testing.assert_allclose(logits, np.load(golden / "logits.npy"), rtol=0, atol=1e-3)
    np.testing.assert_allclose(features, np.load(golden / "features.npy"), rtol=0, atol=2e-2)
    np.testing.assert_allclose(outputs[6].numpy(), stages["features.6"], rtol=0, atol=1e-4)  # the seg model's f8
    assert np.argsort(logits[0])[-5:].tolist() == np.argsort(np.load(golden / "logits.npy")[0])[-5:].tolist()


def test_fused_classifier_matches_eager_and_has_no_batchnorm(classifier, golden_input):
    fused = fuse_model(classifier)
    assert not [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        torch.testing.assert_close(fused(golden_input), classifier(golden_input), rtol=0, atol=1e-3)


def test_segmenter_loads_the_imagenet_backbone(golden, golden_input, classifier, segmenter):
    report = segmenter.checkpoint_report
    imagenet = read_state_dict(golden / "checkpoint.pth")
    unused = [k for k in imagenet if any(re.match(u, k) for u in SEG_UNUSED)]
    assert sorted(k.removeprefix("backbone.") for k in report.ignored) == sorted(unused)
    assert report.initialised == [k for k in segmenter.state_dict() if k.startswith("decode_head.")]
    assert report.loaded == OFFICIAL_KEYS - len(unused)
    with torch.no_grad():
        low, high = segmenter.forward_features(golden_input)
        stages = classifier.forward_stages(golden_input)
        logits = segmenter(golden_input)
    torch.testing.assert_close(low, stages[6], rtol=0, atol=0)
    torch.testing.assert_close(high, stages[13], rtol=0, atol=0)
    assert logits.shape == (1, 150, 28, 28) and torch.isfinite(logits).all()


def test_segmenter_checkpoint_round_trips(segmenter):
    reloaded = models.create("mbv2-ca-seg", checkpoint=segmenter.state_dict())
    assert reloaded.checkpoint_report.initialised == [] and reloaded.checkpoint_report.ignored == []
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), segmenter(x), rtol=0, atol=0)


@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
def test_fused_segmenter_matches_eager_at_any_size(lively_checkpoint, size):
    segmenter = models.create("mbv2-ca-seg", checkpoint=lively_checkpoint)
    fused = fuse_model(segmenter)
    assert not [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = segmenter(x)
        torch.testing.assert_close(fused(x), eager, rtol=0, atol=1e-4)
    assert eager.std() > 0.5  # logits of a few units, so 1e-4 is a tight bound
    assert eager.shape == (1, 150, size[0] // 8, size[1] // 8)


def test_the_classifier_is_not_exported(tmp_path):
    with pytest.raises(ValueError, match=r"classification model, not a segmenter.*mbv2-ca-seg"):
        export_bundle(ExportRequest(model="mbv2-ca", out=tmp_path / "b", input_size=(224, 224)))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_segmenter_exports_a_dynamic_bundle_that_passes_parity(lively_checkpoint, target, tmp_path):
    out = export_bundle(
        ExportRequest(
            model="mbv2-ca-seg",
            out=tmp_path / target,
            target=target,
            input_size=(256, 256),
            checkpoint=lively_checkpoint,
            dynamic=True,
            parity_count=2,
        )
    )
    manifest = read_bundle(out).manifest
    assert manifest.parity["passed"] and manifest.export["dynamic"]
    assert manifest.input.shape[2] is None and manifest.input.shape[3] is None
    assert manifest.model.checkpoint.initialised_keys == []
    assert not {"AveragePool", "GlobalAveragePool", "Split"} & set(manifest.export["ops"])

"""MaskFormer (detectron2 ResNet + pixel decoder + transformer decoder): golden parity, checkpoints, export."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeseg import models
from edgeseg.models.checkpoint import CheckpointError, read_state_dict
from edgeseg.models.fusion import fuse_model
from edgeseg.models.hf_maskformer import HF_PREFIX
from edgeseg.models.maskformer import MultiheadAttention, sine_position_encoding
from edgeseg.models.resnet import FrozenBatchNorm2d
from edgeseg.models.swin import shifted_window_mask, window_partition, window_reverse
from tests.golden import GOLDEN_ROOT
from tests.model_checks import assert_portable_graph, run_onnxruntime

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN = GOLDEN_ROOT / "maskformer_r50"
ATOL = 1e-4  # the manifest's tolerance: 2-thread vs 1-thread runs of the official code differ by up to 2.8e-5
# The official model's parameters (manifest params_total; FrozenBN statistics and affines are buffers).
OFFICIAL_R50_PARAMS = 41_254_743
# ResNet-101 has 17 more res4 bottlenecks: 1×1 1024→256, 3×3 256→256, 1×1 256→1024, no biases (frozen BN buffers).
R101_EXTRA_PARAMS = 17 * (1024 * 256 + 256 * 256 * 9 + 256 * 1024)


@pytest.fixture(scope="session")
def maskformer_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden checkpoint rebuilt from ``keys.json`` with the official ``make_checkpoint.py``."""
    script, keys = GOLDEN_ROOT / "make_checkpoint.py", GOLDEN / "keys.json"
    if not keys.is_file() or not script.is_file():
        pytest.skip(f"golden reference data {keys} is absent (set EDGESEG_GOLDEN to the shared/golden folder)")
    out = tmp_path_factory.mktemp("maskformer_golden") / "maskformer_r50.pth"
    subprocess.run([sys.executable, str(script), str(keys), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def golden_model(maskformer_checkpoint: Path) -> torch.nn.Module:
    return models.create("maskformer-r50", checkpoint=maskformer_checkpoint)


@pytest.fixture(scope="module")
def golden_run(golden_model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The golden input through ``forward_outputs`` (query outputs, mask features and, by a hook, the backbone's
    res2..res5) and through ``model(x)`` (the semantic scores)."""
    x = torch.from_numpy(np.load(GOLDEN / "input.npy"))
    features: list[torch.Tensor] = []
    hook = golden_model.backbone.register_forward_hook(lambda module, inputs, output: features.extend(output))
    with torch.no_grad():
        outputs = golden_model.forward_outputs(x)
        hook.remove()
        semseg = golden_model(x)
    seen = {name: tensor.numpy() for name, tensor in outputs._asdict().items()}
    seen.update((f"res{i + 2}", feature.numpy()) for i, feature in enumerate(features))
    return {**seen, "semseg": semseg.numpy()}


def test_registry_names_and_specs():
    names = {f"maskformer-{v}" for v in ("r50", "r101", "r101c", "swin-t", "swin-s", "swin-b", "swin-l")}
    assert names <= set(models.list_models())
    spec = models.get_spec("maskformer-r50")
    assert (spec.output_stride, spec.input_multiple, spec.dynamic_resolution) == (4, 32, False)


@pytest.mark.parametrize(
    "name",
    ["pred_logits", "pred_masks", "semseg", "mask_features", "features_res3", "features_res4", "features_res5"],
)
def test_golden_outputs_and_features(golden_run, name):
    ours = golden_run[name.removeprefix("features_")]
    np.testing.assert_allclose(ours, np.load(GOLDEN / f"{name}.npy"), rtol=0, atol=ATOL)


def test_query_outputs_and_features_have_the_official_shapes(golden_model):
    x = torch.from_numpy(np.load(GOLDEN / "input.npy"))[:, :, :64, :96]
    with torch.no_grad():
        outputs = golden_model.forward_outputs(x)
        features = golden_model.forward_features(x)
    assert outputs.pred_logits.shape == (1, 100, 151) and outputs.pred_masks.shape == (1, 100, 16, 24)
    assert outputs.mask_features.shape == (1, 256, 16, 24)
    assert [tuple(f.shape[1:]) for f in features] == [(256, 16, 24), (512, 8, 12), (1024, 4, 6), (2048, 2, 3)]


def test_full_resolution_upsamples_the_mask_logits_before_the_sigmoid(maskformer_checkpoint):
    model = models.create("maskformer-r50", checkpoint=maskformer_checkpoint, full_resolution=True)
    assert model.spec.output_stride == 1
    with torch.no_grad():
        full = model(torch.from_numpy(np.load(GOLDEN / "input.npy"))).numpy()
    assert full.shape == (1, 150, 256, 320)
    np.testing.assert_allclose(full[:, :, ::4, ::4], np.load(GOLDEN / "semseg_full.npy"), rtol=0, atol=ATOL)
    np.testing.assert_allclose(full[:, :, 112:144, 144:176], np.load(GOLDEN / "semseg_full_center.npy"), atol=ATOL)


def test_the_class_count_is_read_from_the_checkpoint_without_the_no_object_row(maskformer_checkpoint):
    from edgeseg.weights.resolve import infer_num_classes

    # class_embed has 151 rows: 150 ADE20K classes and "no object" (`edgeseg export` without --num-classes)
    assert infer_num_classes("maskformer-r50", maskformer_checkpoint) == 150
    assert infer_num_classes("setr-naive-tiny", maskformer_checkpoint) is None  # no head tensor of SETR's in it


def test_parameter_counts_equal_the_official_ones(golden_model):
    assert models.count_params(golden_model) == OFFICIAL_R50_PARAMS
    assert models.count_params(models.create("maskformer-r101")) == OFFICIAL_R50_PARAMS + R101_EXTRA_PARAMS


def test_r101c_has_the_deeplab_stem_and_the_res5_multi_grid():
    model = models.create("maskformer-r101c")
    stem = model.backbone.stem
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in (stem.conv1, stem.conv2, stem.conv3)] == [
        (3, 64, 2),
        (64, 64, 1),
        (64, 128, 1),
    ]
    assert [(b.conv2.dilation[0], b.conv2.padding[0]) for b in model.backbone.res5] == [(1, 1), (2, 2), (4, 4)]
    assert model.backbone.res5[0].conv2.stride == (2, 2)  # res5 keeps stride 32 (RES5_DILATION 1)
    # the three 3×3 stem convs instead of the 7×7, and res2's first block reading 128 channels instead of 64:
    # 60.3 M, the model zoo's 60 M
    deeplab_extra = (3 * 64 + 64 * 64 + 64 * 128) * 9 - 3 * 64 * 49 + 64 * 64 + 64 * 256
    assert models.count_params(model) == OFFICIAL_R50_PARAMS + R101_EXTRA_PARAMS + deeplab_extra
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 150, 16, 24)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["r101", "r101c", "swin-t", "swin-s", "swin-b", "swin-l"])
def test_other_variants_give_the_official_outputs(variant):
    """The official MaskFormer of each ADE20K config on seeded weights (tests/reference/make_maskformer_d2.py):
    same key names, parameter count and outputs, at a size that is not a multiple of Swin's window."""
    from tests.reference.maskformer_d2 import input_image, random_weights, reference
    from tests.reference.sampling import sample_positions

    expected = reference(variant)
    weights = random_weights([(name, shape) for name, shape in expected["keys"]])
    model = models.create(
        f"maskformer-{variant}", num_classes=150, checkpoint={k: torch.from_numpy(v) for k, v in weights.items()}
    )
    assert models.count_params(model) == expected["params"]
    x = torch.from_numpy(input_image())
    with torch.no_grad():
        outputs = model.forward_outputs(x)
        semseg = model(x)
        model.full_resolution = True
        ours = {"pred_logits": outputs.pred_logits, "pred_masks": outputs.pred_masks, "semseg": semseg}
        ours["semseg_full"] = model(x)
    for name, tensor in ours.items():
        values = tensor.numpy()
        assert list(values.shape) == expected["outputs"][name]["shape"], name
        np.testing.assert_allclose(
            values[sample_positions(values.shape)], expected["outputs"][name]["values"], rtol=0, atol=ATOL, err_msg=name
        )


def official_position_encoding(h: int, w: int, features: int = 128) -> torch.Tensor:
    """DETR's PositionEmbeddingSine(normalize=True) written out in float32 torch ops, for an all-valid mask."""
    ones = torch.ones(1, h, w)
    y_embed, x_embed = ones.cumsum(1), ones.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * 2 * math.pi
    x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = torch.arange(features, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / features)
    pos_x, pos_y = x_embed[..., None] / dim_t, y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


@pytest.mark.parametrize("size", [(8, 10), (11, 15), (16, 16)])
def test_position_encoding_is_the_official_formula(size):
    ours = torch.from_numpy(sine_position_encoding(*size))
    assert ours.shape == (1, 256, *size)
    torch.testing.assert_close(ours, official_position_encoding(*size), rtol=0, atol=2e-6)


def test_attention_equals_torch_multihead_attention_with_its_keys():
    generator = torch.Generator().manual_seed(3)
    reference = torch.nn.MultiheadAttention(32, 4).eval()
    ours = MultiheadAttention(32, 4)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    ours.load_state_dict(reference.state_dict(), strict=True)
    query, key, value = (torch.randn(2, n, 32, generator=generator) for n in (5, 7, 7))
    with torch.no_grad():
        expected = reference(query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1))[0].transpose(0, 1)
        torch.testing.assert_close(ours(query, key, value), expected, rtol=0, atol=1e-5)


def test_batches_are_independent_and_the_fused_model_has_no_frozen_batchnorm(golden_model):
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    fused = fuse_model(golden_model)
    assert not [m for m in fused.modules() if isinstance(m, FrozenBatchNorm2d)]
    with torch.no_grad():
        batch = golden_model(x)
        single = golden_model(x[1:])
        folded = fused(x)
    assert batch.shape == (2, 150, 16, 24)
    assert (batch[0] - batch[1]).abs().max() > 1e-2  # the two images give different scores
    torch.testing.assert_close(batch[1:], single, rtol=0, atol=ATOL)  # GEMM blocking differs with the batch
    torch.testing.assert_close(folded, batch, rtol=0, atol=ATOL)


def test_criterion_is_ignored_and_old_format_head_keys_load(maskformer_checkpoint, golden_model):
    state = read_state_dict(maskformer_checkpoint)
    old = {k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head."): v for k, v in state.items()}
    model = models.create("maskformer-r50", checkpoint={**old, "pixel_mean": torch.zeros(3, 1, 1)})
    assert sorted(model.checkpoint_report.ignored) == ["criterion.empty_weight", "pixel_mean"]
    assert model.checkpoint_report.loaded == len(state) - 1
    ours, golden = model.state_dict(), golden_model.state_dict()
    assert all(torch.equal(ours[k], golden[k]) for k in golden)


def test_detectron2_model_zoo_pickle_loads(maskformer_checkpoint, golden_model, tmp_path):
    state = read_state_dict(maskformer_checkpoint)
    arrays = {k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head."): v.numpy() for k, v in state.items()}
    path = tmp_path / "model_final.pkl"  # the model zoo's layout: numpy arrays, old-format head keys
    path.write_bytes(pickle.dumps({"model": arrays, "__author__": "FAIR", "matching_heuristics": True}, protocol=2))
    model = models.create("maskformer-r50", checkpoint=path)
    assert model.checkpoint_report.ignored == ["criterion.empty_weight"]
    ours, golden = model.state_dict(), golden_model.state_dict()
    assert all(torch.equal(ours[k], golden[k]) for k in golden)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(_RunsCode(), r"getcwd, which is not needed for numpy arrays"), (np.array(["x"], dtype=object), "dtype object")],
    ids=["code", "objects"],
)
def test_pickles_that_are_not_plain_arrays_are_refused(tmp_path, payload, reason):
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": {"backbone.stem.conv1.weight": payload}}))
    with pytest.raises(CheckpointError, match=reason):
        models.create("maskformer-r50", checkpoint=path)


def test_missing_keys_and_wrong_class_counts_are_explained(maskformer_checkpoint):
    state = read_state_dict(maskformer_checkpoint)
    del state["sem_seg_head.predictor.query_embed.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: sem_seg_head\.predictor\.query_embed\.weight"):
        models.create("maskformer-r50", checkpoint=state)
    with pytest.raises(CheckpointError, match=r"class_embed\.weight \(151, 256\) vs model \(20, 256\)"):
        models.create("maskformer-r50", num_classes=19, checkpoint=maskformer_checkpoint)


def test_sides_that_are_not_multiples_of_32_are_refused(golden_model):
    with pytest.raises(ValueError, match="multiples of 32, got 80x96"):
        golden_model(torch.zeros(1, 3, 80, 96))


@pytest.fixture(scope="module")
def hf_maskformer() -> torch.nn.Module:
    """A transformers MaskFormer-R50 (built from a config, nothing downloaded) with every tensor randomised."""
    transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency")
    backbone = transformers.ResNetConfig(
        depths=[3, 4, 6, 3],
        hidden_sizes=[256, 512, 1024, 2048],
        layer_type="bottleneck",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.MaskFormerConfig(backbone_config=backbone, num_labels=150)
    model = transformers.MaskFormerForInstanceSegmentation(config).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # HF initialises biases and norms to constants, which would hide swapped keys
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=generator)
            tensor.copy_(noise + 0.5 if name.endswith("running_var") else tensor + (noise - 0.5) * 0.2)
    return model


def test_hf_checkpoint_loads_and_gives_the_hf_outputs(hf_maskformer, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf_maskformer.state_dict().items()}, path)
    model = models.create("maskformer-r50", checkpoint=path)
    report = model.checkpoint_report
    assert "criterion.empty_weight" in report.ignored and not report.initialised
    assert len(report.ignored) == 1 + 53  # the criterion and every BatchNorm's num_batches_tracked
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = hf_maskformer(pixel_values=x)
        ours = model.forward_outputs(x)
    torch.testing.assert_close(ours.pred_logits, expected.class_queries_logits, rtol=0, atol=ATOL)
    torch.testing.assert_close(ours.pred_masks, expected.masks_queries_logits, rtol=0, atol=ATOL)


def test_hf_transformers_4_names_load_the_same_tensors(hf_maskformer):
    state = hf_maskformer.state_dict()
    v4 = {k.replace(".mlp.fc", ".fc").replace(".o_proj.", ".out_proj."): v for k, v in state.items()}
    assert v4.keys() != state.keys()
    ours_v4 = models.create("maskformer-r50", checkpoint=v4).state_dict()
    ours_v5 = models.create("maskformer-r50", checkpoint=state).state_dict()
    assert all(torch.equal(ours_v4[k], ours_v5[k]) for k in ours_v5)


def test_hf_backbones_other_than_resnet_and_swin_are_refused_with_the_reason(hf_maskformer):
    state = {**hf_maskformer.state_dict(), HF_PREFIX + "encoder.stem.conv.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="neither a ResNet nor a MaskFormer-Swin backbone key"):
        models.create("maskformer-r50", checkpoint=state)


def official_window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """The official Swin ``window_partition`` (a 6-D view)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def official_shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """The official shifted-window mask: regions labelled by slice assignment, −100 across regions."""
    labels = torch.zeros(1, height, width, 1)
    count = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            labels[:, hs, ws, :] = count
            count += 1
    windows = official_window_partition(labels, window).view(-1, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def test_windows_are_the_official_partition_and_invert():
    x = torch.randn(2, 14, 21, 5, generator=torch.Generator().manual_seed(7))
    windows = window_partition(x, 7)
    torch.testing.assert_close(windows, official_window_partition(x, 7).reshape(-1, 49, 5), rtol=0, atol=0)
    torch.testing.assert_close(window_reverse(windows, 7, 2, 14, 21), x, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(14, 21), (7, 7), (28, 14)])
def test_shift_mask_is_the_official_one(size):
    ours = torch.from_numpy(shifted_window_mask(*size, 7, 3))
    torch.testing.assert_close(ours[:, 0], official_shift_mask(*size, 7, 3), rtol=0, atol=0)


def random_hf_maskformer_swin(embed_dim: int, depths: list[int], heads: list[int], window: int) -> torch.nn.Module:
    """A transformers MaskFormer with a Swin backbone (MaskFormerSwin) of these dims, every tensor randomised."""
    transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency")
    backbone = transformers.MaskFormerSwinConfig(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    model = transformers.MaskFormerForInstanceSegmentation(
        transformers.MaskFormerConfig(backbone_config=backbone, num_labels=150)
    ).eval()
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor += (torch.rand(tensor.shape, generator=generator) - 0.5) * 0.1
    return model


@pytest.fixture(scope="module")
def hf_maskformer_swin() -> torch.nn.Module:
    """transformers' MaskFormer-Swin-T, randomised."""
    return random_hf_maskformer_swin(96, [2, 2, 6, 2], [3, 6, 12, 24], 7)


def test_hf_swin_checkpoint_loads_and_gives_the_hf_outputs(hf_maskformer_swin):
    model = models.create("maskformer-swin-t", checkpoint=hf_maskformer_swin.state_dict())
    unused = [f"{HF_PREFIX}encoder.model.layernorm.{p}" for p in ("weight", "bias")]
    assert sorted(model.checkpoint_report.ignored) == sorted(["criterion.empty_weight", *unused])
    x = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(9))  # res2 24×40: windows are padded
    with torch.no_grad():
        expected = hf_maskformer_swin(pixel_values=x, output_hidden_states=True)
        ours = model.forward_outputs(x)
        features = model.forward_features(x)
    for theirs, mine in zip(expected.encoder_hidden_states, features, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.pred_logits, expected.class_queries_logits, rtol=0, atol=ATOL)
    torch.testing.assert_close(ours.pred_masks, expected.masks_queries_logits, rtol=1e-5, atol=ATOL)


def test_swin_parameter_counts():
    # MaskFormer's Swin-T and Swin-S (paper: 42M and 63M); Swin-T = the HF model less its unused final LayerNorm.
    assert models.count_params(models.create("maskformer-swin-t")) == 41_757_009
    assert models.count_params(models.create("maskformer-swin-s")) == 63_074_913
    # Swin-B and Swin-L (MaskFormer's model zoo: 102M and 212M; IN-22k 384² backbones, window 12)
    assert round(models.count_params(models.create("maskformer-swin-b")) / 1e6) == 102
    assert round(models.count_params(models.create("maskformer-swin-l")) / 1e6) == 212


def test_hf_swin_b_with_window_12_loads_and_gives_the_hf_outputs():
    hf_model = random_hf_maskformer_swin(128, [2, 2, 18, 2], [4, 8, 16, 32], 12)
    model = models.create("maskformer-swin-b", checkpoint=hf_model.state_dict())
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(9))  # every stage padded to 12² windows
    with torch.no_grad():
        expected = hf_model(pixel_values=x)
        ours = model.forward_outputs(x)
    torch.testing.assert_close(ours.pred_logits, expected.class_queries_logits, rtol=0, atol=ATOL)
    torch.testing.assert_close(ours.pred_masks, expected.masks_queries_logits, rtol=1e-5, atol=ATOL)


def test_swin_checkpoint_without_the_relative_position_index_keeps_the_built_one():
    built = models.create("maskformer-swin-t")
    state = {k: v for k, v in built.state_dict().items() if not k.endswith("relative_position_index")}
    model = models.create("maskformer-swin-t", checkpoint=state)
    initialised = model.checkpoint_report.initialised
    assert len(initialised) == 12 and all(k.endswith(".attn.relative_position_index") for k in initialised)
    index = model.backbone.layers[0].blocks[0].attn.relative_position_index
    assert index.shape == (49, 49) and index[0, 0] == 84 and index[0, 48] == 0 and index[48, 0] == 168


@pytest.mark.slow
def test_bundle_matches_eager_and_golden_in_onnxruntime_and_openvino(maskformer_checkpoint, tmp_path):
    from edgeseg.bundle import read_bundle
    from edgeseg.export import ExportRequest, export_bundle

    request = ExportRequest(
        model="maskformer-r50",
        out=tmp_path / "bundle",
        target="openvino",
        input_size=(256, 320),
        checkpoint=maskformer_checkpoint,
        parity_inputs=1,
        parity_count=2,
    )
    bundle = read_bundle(export_bundle(request))
    parity = bundle.manifest.parity
    assert parity["passed"] and set(parity["results"]) == {"onnx", "openvino"}  # the .onnx runs in ONNX Runtime
    assert max(r["max_abs"] for r in parity["results"].values()) <= ATOL
    logits = bundle.manifest.output("logits")
    assert logits is not None and logits.shape == (1, 150, 64, 80) and logits.stride == 4
    proto = onnx.load(str(bundle.path / "model.onnx"))
    ops = assert_portable_graph(proto)  # no Einsum, ≤ 4-D tensors
    # The last layer's outputs only (all six: 6 class softmaxes, 6 sigmoids); the first self-attention, over the
    # constant queries, may fold to a constant.
    assert ops["Sigmoid"] == 1 and 2 * 6 - 1 <= ops["Softmax"] <= 2 * 6 + 1
    semseg = run_onnxruntime(proto, np.load(GOLDEN / "input.npy"))
    np.testing.assert_allclose(semseg, np.load(GOLDEN / "semseg.npy"), rtol=0, atol=ATOL)


@pytest.mark.slow
def test_swin_graph_runs_in_onnxruntime_and_openvino(tmp_path):
    import openvino as ov

    from edgeseg.export.graph import build_export_graph

    model = models.create("maskformer-swin-t")
    proto = build_export_graph(model, "openvino", "fp32", (64, 96)).proto
    assert_portable_graph(proto)  # window partition, shift and mask in ≤ 4-D tensors
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run_onnxruntime(proto, x), expected, rtol=0, atol=ATOL)
    onnx.save(proto, tmp_path / "model.onnx")
    compiled = ov.Core().compile_model(
        ov.convert_model(tmp_path / "model.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, rtol=0, atol=ATOL)


def test_confidence_output_is_refused_for_scores(tmp_path):
    from edgeseg.export import ExportRequest, export_bundle

    request = ExportRequest(
        model="maskformer-r50", out=tmp_path / "b", input_kind="uint8-rgb", outputs=("labels-full", "confidence")
    )
    with pytest.raises(ValueError, match=r"maskformer-r50 outputs scores .* export logits or labels instead"):
        export_bundle(request)
    assert not (tmp_path / "b").exists()

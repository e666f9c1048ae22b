"""SETR (ViT/16 + Naive / PUP / MLA): golden parity, checkpoint layouts, position grid, sizes, fusion, export."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from edgeseg import models
from edgeseg.models.checkpoint import CheckpointError, read_state_dict
from edgeseg.models.static_ops import bilinear_resize_matrix
from tests.golden import GOLDEN_ROOT
from tests.model_checks import assert_fuses_exactly, assert_portable_graph, run_onnxruntime

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN = {"setr-naive-tiny": "setr_naive_tiny", "setr-mla-tiny": "setr_mla_tiny"}
# Official parameter counts of the golden models (manifest params_total) and the unused BaseDecodeHead conv_seg
# (Conv2d(512, 150, 1)), which edgeseg does not build.
OFFICIAL_TOTAL = {"setr-naive-tiny": 5_701_356, "setr-mla-tiny": 10_636_908}
CONV_SEG_PARAMS = 512 * 150 + 150
# Official SETR modules at 512² (pos_embed 1025 rows), 150 classes, without conv_seg (setr_maskformer.md).
OFFICIAL_512_PARAMS_M = {"naive-tiny": 5.8, "pup-tiny": 7.9, "mla-tiny": 10.7, "naive-small": 22.1, "mla-small": 27.2}


@pytest.fixture(scope="session")
def setr_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The golden checkpoints rebuilt from ``keys.json`` with the official ``make_checkpoint.py``."""
    script = GOLDEN_ROOT / "make_checkpoint.py"
    folder = tmp_path_factory.mktemp("setr_golden")
    paths = {}
    for name, golden in GOLDEN.items():
        keys = GOLDEN_ROOT / golden / "keys.json"
        if not keys.is_file() or not script.is_file():
            pytest.skip(f"golden reference data {keys} is absent (set EDGESEG_GOLDEN to the shared/golden folder)")
        out = folder / f"{golden}.pth"
        subprocess.run([sys.executable, str(script), str(keys), str(out)], check=True, capture_output=True)
        paths[name] = out
    return paths


@pytest.fixture(scope="module", params=sorted(GOLDEN))
def golden_case(request, setr_checkpoints):
    """(model name, golden folder, model loaded with the golden weights)."""
    name = request.param
    return name, GOLDEN_ROOT / GOLDEN[name], models.create(name, checkpoint=setr_checkpoints[name])


def test_registry_names_and_specs():
    names = {f"setr-{h}-{s}" for h in ("naive", "pup", "mla") for s in ("tiny", "small", "base", "large")}
    assert names <= set(models.list_models())
    spec = models.get_spec("setr-naive-tiny")
    assert (spec.output_stride, spec.input_multiple, spec.dynamic_resolution) == (1, 16, False)


def test_golden_logits_at_the_manifest_indices_and_features(golden_case):
    name, golden, model = golden_case
    x = torch.from_numpy(np.load(golden / "input.npy"))
    with torch.no_grad():
        full = model(x).numpy()
        features = [f.numpy() for f in model.forward_features(x)]
    assert full.shape == (1, 150, 256, 256)
    np.testing.assert_allclose(full[:, :, ::4, ::4], np.load(golden / "logits.npy"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(full[:, :, 112:144, 112:144], np.load(golden / "logits_center.npy"), rtol=0, atol=1e-5)
    assert len(features) == (1 if "naive" in name else 4)
    for i, feature in enumerate(features):
        np.testing.assert_allclose(feature, np.load(golden / f"features_{i}.npy"), rtol=0, atol=1e-5)


def test_parameter_counts_equal_the_official_ones(golden_case):
    name, _, model = golden_case
    assert models.count_params(model) == OFFICIAL_TOTAL[name] - CONV_SEG_PARAMS


@pytest.mark.parametrize("variant", sorted(OFFICIAL_512_PARAMS_M))
def test_parameter_counts_at_512_match_the_official_configs(variant):
    count = models.count_params(models.create(f"setr-{variant}"))
    assert round(count / 1e6, 1) == OFFICIAL_512_PARAMS_M[variant]


@pytest.mark.parametrize(("variant", "gmacs"), [("naive-tiny", 10.5), ("pup-tiny", 64.1), ("mla-tiny", 26.2)])
def test_macs_at_512_match_the_official_modules(variant, gmacs):
    assert round(models.count_macs(models.create(f"setr-{variant}"), (512, 512)) / 1e9, 1) == gmacs


def test_naive_head_takes_the_checkpoints_3x3_first_conv(setr_checkpoints):
    state = read_state_dict(setr_checkpoints["setr-naive-tiny"])
    state["decode_head.conv_0.weight"] = torch.randn(256, 192, 3, 3, generator=torch.Generator().manual_seed(4))
    model = models.create("setr-naive-tiny", checkpoint=state)  # the official conv3x3_conv1x1=True layout
    assert model.decode_head.conv_0.kernel_size == (3, 3)
    torch.testing.assert_close(model.decode_head.conv_0.weight, state["decode_head.conv_0.weight"], rtol=0, atol=0)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 32)).shape == (1, 150, 64, 32)


def test_conv_seg_and_auxiliary_heads_are_ignored_and_listed(setr_checkpoints):
    state = read_state_dict(setr_checkpoints["setr-naive-tiny"])
    aux = {
        "auxiliary_head.0.conv_0.weight": torch.zeros(256, 192, 1, 1),
        "auxiliary_head.2.conv_1.bias": torch.zeros(3),
    }
    model = models.create("setr-naive-tiny", checkpoint={**state, **aux})
    report = model.checkpoint_report
    assert sorted(report.ignored) == sorted(["decode_head.conv_seg.weight", "decode_head.conv_seg.bias", *aux])
    assert report.loaded == len(state) - 2 and not report.initialised


def test_missing_head_key_and_wrong_size_are_explained(setr_checkpoints):
    state = read_state_dict(setr_checkpoints["setr-mla-tiny"])
    del state["backbone.mla.mla_p3.0.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: backbone\.mla\.mla_p3\.0\.weight"):
        models.create("setr-mla-tiny", checkpoint=state)
    with pytest.raises(CheckpointError, match="width 384"):
        models.create("setr-naive-small", checkpoint=setr_checkpoints["setr-naive-tiny"])


def imagenet_vit(state: dict[str, torch.Tensor], grid: int, distilled: bool) -> dict[str, torch.Tensor]:
    """A timm/DeiT ImageNet ViT-Ti state dict made from the golden backbone, its table at a ``grid``² grid."""
    out = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    extra = 2 if distilled else 1
    out["pos_embed"] = torch.randn(1, extra + grid * grid, 192, generator=torch.Generator().manual_seed(3))
    out.update({"norm.weight": torch.ones(192), "norm.bias": torch.zeros(192), "head.weight": torch.zeros(1000, 192)})
    out["head.bias"] = torch.zeros(1000)
    if distilled:
        out.update({"dist_token": torch.zeros(1, 1, 192), "head_dist.weight": torch.zeros(1000, 192)})
    return out


@pytest.mark.parametrize("distilled", [False, True], ids=["vit", "deit-distilled"])
def test_imagenet_vit_checkpoints_load_into_the_backbone(setr_checkpoints, distilled):
    golden = read_state_dict(setr_checkpoints["setr-naive-tiny"])
    state = imagenet_vit(golden, 14, distilled)
    model = models.create("setr-mla-tiny", checkpoint={"model": state} if distilled else state)  # DeiT's wrapper
    report = model.checkpoint_report
    ignored = {"norm.weight", "norm.bias", "head.weight", "head.bias"} | (
        {"dist_token", "head_dist.weight"} if distilled else set()
    )
    assert set(report.ignored) == {f"backbone.{k}" for k in ignored}
    assert report.initialised and all(
        k.startswith(("decode_head.", "backbone.mla.", "backbone.norm_")) for k in report.initialised
    )
    table = model.backbone.pos_embed.detach()
    assert table.shape == (1, 197, 192) and model.backbone.position_grid == (14, 14)
    torch.testing.assert_close(table[:, 0], state["pos_embed"][:, 0], rtol=0, atol=0)  # cls row; a dist row is dropped
    torch.testing.assert_close(table[:, 1:], state["pos_embed"][:, -196:], rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.blocks[11].mlp.fc2.weight, golden["backbone.blocks.11.mlp.fc2.weight"])


def test_position_table_is_resized_bilinearly_per_axis_with_the_cls_row_kept(golden_case):
    _, _, model = golden_case
    table = model.backbone.pos_embed.detach()
    resized = model.backbone.position_embedding((24, 20)).detach()
    grid = table[0, 1:].reshape(16, 16, -1).permute(2, 0, 1)  # E×16×16
    rows = torch.from_numpy(bilinear_resize_matrix(24, 16, align_corners=False))
    cols = torch.from_numpy(bilinear_resize_matrix(20, 16, align_corners=False))
    expected = (rows @ grid @ cols.T).permute(1, 2, 0).reshape(1, 480, -1)
    assert resized.shape == (1, 481, 192)
    torch.testing.assert_close(resized[:, :1], table[:, :1], rtol=0, atol=0)
    torch.testing.assert_close(resized[:, 1:], expected, rtol=0, atol=1e-5)  # float rounding; a swapped axis is O(1)
    assert model.backbone.position_embedding((16, 16)) is model.backbone.pos_embed


@pytest.mark.parametrize("size", [(128, 192), (96, 64)])
def test_non_square_sizes_run_and_the_stride_output_resizes_to_the_full_one(golden_case, setr_checkpoints, size):
    name, _, model = golden_case
    strided = models.create(name, checkpoint=setr_checkpoints[name], full_resolution=False)
    stride = 16 if "naive" in name else 4
    assert strided.spec.output_stride == stride and model.spec.output_stride == 1
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full, low = model(x), strided(x)
    assert full.shape == (1, 150, *size) and low.shape == (1, 150, size[0] // stride, size[1] // stride)
    upsampled = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(full, upsampled, rtol=0, atol=0)


def test_pup_runs_at_a_non_square_size_with_stride_2_logits():
    model = models.create("setr-pup-tiny", num_classes=7, full_resolution=False)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 7, 32, 48)
    assert model.spec.output_stride == 2


def test_sides_that_are_not_multiples_of_16_are_refused(golden_case):
    _, _, model = golden_case
    with pytest.raises(ValueError, match="multiples of 16, got 100x96"):
        model(torch.zeros(1, 3, 100, 96))


def test_fused_models_match_eager_without_batchnorm(golden_case):
    _, _, model = golden_case
    assert_fuses_exactly(model, (128, 192))


def test_fused_pup_matches_eager():
    assert_fuses_exactly(models.create("setr-pup-tiny"), (64, 96))


@pytest.mark.slow
def test_stride_16_graph_bakes_the_position_table(setr_checkpoints):
    from edgeseg.export.graph import build_export_graph

    model = models.create("setr-naive-tiny", checkpoint=setr_checkpoints["setr-naive-tiny"], full_resolution=False)
    proto = build_export_graph(model, "onnxruntime", "fp32", (128, 192)).proto  # the graph a bundle holds
    ops = assert_portable_graph(proto)
    assert "Resize" not in ops  # the 16×16 table resized to 8×12 once, at export; no full-resolution resize
    x = torch.randn(1, 3, 128, 192, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        np.testing.assert_allclose(run_onnxruntime(proto, x), model(x).numpy(), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_bundle_passes_the_fp32_parity_gate_in_onnxruntime_and_openvino(setr_checkpoints, tmp_path):
    from edgeseg.bundle import read_bundle
    from edgeseg.export import ExportRequest, export_bundle

    request = ExportRequest(
        model="setr-mla-tiny",
        out=tmp_path / "bundle",
        target="openvino",
        input_size=(128, 192),
        checkpoint=setr_checkpoints["setr-mla-tiny"],
        parity_inputs=1,
        parity_count=2,
    )
    bundle = read_bundle(export_bundle(request))
    manifest, parity = bundle.manifest, bundle.manifest.parity
    assert parity["passed"] and set(parity["results"]) == {"onnx", "openvino"}  # the .onnx runs in ONNX Runtime
    assert max(r["max_abs"] for r in parity["results"].values()) <= 1e-4
    logits = manifest.output("logits")
    assert logits is not None and logits.shape == (1, 150, 128, 192) and logits.stride == 1
    resizes = [n for n in onnx.load(str(bundle.path / "model.onnx")).graph.node if n.op_type == "Resize"]
    modes = [a.s for n in resizes for a in n.attribute if a.name == "coordinate_transformation_mode"]
    assert len(resizes) == 5 and modes.count(b"align_corners") == 4  # MLA's ×4s and the final one: the table is baked


def test_unknown_build_options_are_refused_naming_the_ones_there_are():
    with pytest.raises(ValueError, match="setr-naive-tiny has no build option stride; it takes full_resolution"):
        models.create("setr-naive-tiny", stride=16)
    with pytest.raises(ValueError, match="segformer-b0 has no build option full_resolution; it takes none"):
        models.create("segformer-b0", full_resolution=False)


@pytest.mark.slow
def test_export_stops_at_the_head_stride_and_the_runtime_gives_the_full_resolution_labels(setr_checkpoints, tmp_path):
    from edgeseg.bundle import read_bundle
    from edgeseg.cli import main
    from edgeseg.runtime import load

    checkpoint = str(setr_checkpoints["setr-naive-tiny"])
    out = tmp_path / "b"
    args = ["export", "--model", "setr-naive-tiny", "--checkpoint", checkpoint, "--input-size", "64x96", "-q"]
    assert main([*args, "--model-option", "full_resolution=false", "--parity-count", "2", "--out", str(out)]) == 0
    manifest = read_bundle(out).manifest
    logits = manifest.output("logits")
    assert logits is not None and logits.shape == (1, 150, 4, 6) and logits.stride == 16
    assert manifest.export["model_options"] == {"full_resolution": False} and manifest.parity["passed"]
    # The runtime's label path (bilinear, align_corners False, then argmax) is the official full-resolution output's.
    model = models.create("setr-naive-tiny", checkpoint=checkpoint)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    with load(out) as seg:
        x = seg.preprocess(rgb)
        with torch.no_grad():
            expected = model(torch.from_numpy(x))[0].argmax(0).numpy()
        assert (seg.predict(rgb) == expected).mean() >= 0.9999


# ---- mmsegmentation's SETR (reference data made with mmseg's own modules: tests/reference) ----------------------


@pytest.fixture(scope="module")
def mmseg_checkpoints(tmp_path_factory):
    """``{head: path}`` of mmseg-layout checkpoints: the reference's key names, recipe weights, ``state_dict``."""
    from tests.reference.mmseg_setr import HEADS, random_weights, reference

    folder = tmp_path_factory.mktemp("mmseg_setr")
    paths = {}
    for head in HEADS:
        weights = random_weights([(name, shape) for name, shape in reference(head)["keys"]])
        paths[head] = folder / f"{head}.pth"
        torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in weights.items()}}, paths[head])
    return paths


@pytest.mark.parametrize("head", ["naive", "pup", "mla"])
@pytest.mark.parametrize("full_resolution", [True, False])
def test_mmseg_checkpoints_load_unchanged_and_give_mmsegs_logits(mmseg_checkpoints, head, full_resolution):
    from tests.reference.mmseg_setr import SIZES, input_image, reference
    from tests.reference.sampling import sample_positions

    model = models.create(
        f"setr-{head}-tiny", num_classes=150, checkpoint=mmseg_checkpoints[head], full_resolution=full_resolution
    ).eval()
    assert model.layout == "mmseg"  # chosen by the checkpoint's keys
    assert model.output_stride == (1 if full_resolution else {"naive": 4, "pup": 1, "mla": 4}[head])
    for size in SIZES:  # the configured square, and a non-square size (position table resized)
        expected = reference(head)["outputs"]["x".join(map(str, size))]["logits" if full_resolution else "head_logits"]
        with torch.no_grad():
            logits = model(torch.from_numpy(input_image(size))).numpy()
        assert list(logits.shape) == expected["shape"]
        np.testing.assert_allclose(logits[sample_positions(logits.shape)], expected["values"], rtol=0, atol=1e-4)


def test_mmseg_layout_is_an_option_and_fuses_exactly(mmseg_checkpoints):
    model = models.create("setr-mla-tiny", layout="mmseg")
    assert model.layout == "mmseg" and model.neck is not None and model.output_stride == 1
    assert_fuses_exactly(model, (64, 96))
    state = read_state_dict(mmseg_checkpoints["naive"])
    aux = {"auxiliary_head.0.up_convs.0.0.conv.weight": torch.zeros(256, 192, 1, 1)}  # training only
    loaded = models.create("setr-naive-tiny", num_classes=150, checkpoint={**state, **aux})
    report = loaded.checkpoint_report
    assert report.ignored == list(aux) and not report.initialised and report.loaded == len(state) + 1  # + zero bias
    assert loaded.spec.output_stride == 1 and not loaded.backbone.patch_embed.proj.bias.any()
    with pytest.raises(ValueError, match="layout 'detectron2' is not one of official, mmseg"):
        models.create("setr-naive-tiny", layout="detectron2")

"""U-MixFormer: mmseg-1.x checkpoint loading, golden parity, unused tensors, fusion, dynamic ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeseg import models
from edgeseg.bundle import read_bundle
from edgeseg.export import ExportRequest, export_bundle
from edgeseg.models.checkpoint import CheckpointError, read_state_dict
from edgeseg.models.mit import mmseg_to_nvlabs
from edgeseg.runtime import load
from tests.golden import golden_dir
from tests.model_checks import (
    FORBIDDEN_OPS,
    assert_fuses_exactly,
    assert_golden_logits_and_features,
    assert_portable_graph,
    export_fused,
    run_onnxruntime,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Official totals (julian-klitzing/u-mixformer, 150 classes), which include tensors the forward never uses.
OFFICIAL_TOTAL_PARAMS = {"umixformer-b0": 6_138_252, "umixformer-b1": 24_047_596, "umixformer-b2": 35_845_100}
KV_DIMS = {"umixformer-b0": 512, "umixformer-b1": 1024, "umixformer-b2": 1024}  # sum of the encoder channels


# The decoder tensors of the official checkpoints that the forward never uses, in checkpoint order.
UNUSED_DECODER_KEYS = ["decode_head.conv_seg.weight", "decode_head.conv_seg.bias"] + [
    f"decode_head.attn_c{stage}.attn.{module}.{param}"
    for stage in (4, 3, 2, 1)
    for module in ("sr", "norm")
    for param in ("weight", "bias")
]


def unused_params(kv_dim: int) -> int:
    """conv_seg Conv2d(256, 150, 1) + 4 × (attn.sr Conv2d(kv, kv, 1) + attn.norm LayerNorm(kv))."""
    return 256 * 150 + 150 + 4 * (kv_dim * kv_dim + kv_dim + 2 * kv_dim)


@pytest.fixture(scope="module")
def golden():
    return golden_dir("umixformer_b0")


@pytest.fixture(scope="module")
def golden_model(golden):
    return models.create("umixformer-b0", checkpoint=golden / "checkpoint.pth")


def test_registry_lists_the_variants():
    names = {"umixformer-b0", "umixformer-b1", "umixformer-b2", "umixformer-mscan-t", "umixformer-mscan-s"}
    assert names | {"umixformer-lvt"} <= set(models.list_models())
    assert all(models.get_spec(n).dynamic_resolution and models.get_spec(n).output_stride == 4 for n in names)


def test_unused_counts_match_the_official_totals():
    # B0: official total − official used count (the notes' itemised sum; their "1,092,774" is a typo).
    assert unused_params(512) == 6_138_252 - 5_044_982 == 1_093_270
    assert unused_params(1024) == 4_245_142


@pytest.mark.parametrize("name", sorted(OFFICIAL_TOTAL_PARAMS))
def test_parameter_counts_equal_the_official_used_ones(name):
    used = OFFICIAL_TOTAL_PARAMS[name] - unused_params(KV_DIMS[name])
    assert models.count_params(models.create(name)) == used
    if name == "umixformer-b0":
        assert used == 5_044_982


def test_macs_at_512_match_the_published_count(golden_model):
    assert models.count_macs(golden_model, (512, 512)) == pytest.approx(6.1e9, rel=0.01)


def test_golden_logits_and_features(golden, golden_model):
    assert_golden_logits_and_features(golden_model, golden)


def test_layernorm_eps_follow_the_mmseg_code(golden_model):
    backbone = golden_model.backbone
    assert backbone.patch_embed1.norm.eps == backbone.block1[0].attn.norm.eps == 1e-6
    assert backbone.block3[1].norm2.eps == backbone.norm2.eps == 1e-6
    head = golden_model.decode_head
    assert head.attn_c1.norm1.eps == head.attn_c4.norm2.eps == head.attn_c2.norm3.eps == 1e-5


def test_checkpoint_report_lists_the_unused_tensors(golden, golden_model):
    report = golden_model.checkpoint_report
    assert report.ignored == UNUSED_DECODER_KEYS
    # 8 backbone blocks × in_proj weight and bias, each split into q and kv.
    assert report.loaded + len(report.ignored) - 16 == len(read_state_dict(golden / "checkpoint.pth")) == 274


def test_mmseg_in_proj_splits_into_q_and_kv(golden, golden_model):
    raw = read_state_dict(golden / "checkpoint.pth")
    in_proj = raw["backbone.layers.2.1.1.attn.attn.in_proj_weight"]
    attn = golden_model.backbone.block3[1].attn
    torch.testing.assert_close(torch.cat([attn.q.weight, attn.kv.weight]), in_proj, rtol=0, atol=0)
    fc2 = raw["backbone.layers.3.1.0.ffn.layers.4.weight"]
    torch.testing.assert_close(golden_model.backbone.block4[0].mlp.fc2.weight, fc2.flatten(1), rtol=0, atol=0)


def test_nvlabs_layout_loads_too(golden, golden_model):
    state = mmseg_to_nvlabs(read_state_dict(golden / "checkpoint.pth"))
    assert not [k for k in state if k.startswith("backbone.layers.")]
    model = models.create("umixformer-b0", checkpoint=state)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), golden_model(x), rtol=0, atol=0)


def test_missing_and_unexpected_keys_are_named(golden):
    state = read_state_dict(golden / "checkpoint.pth")
    del state["decode_head.cat_key3.sr_list.1.weight"]
    state["backbone.layers.0.1.0.ffn.layers.7.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"missing keys: decode_head\.cat_key3\.sr_list\.1\.weight.*unexpected keys: "
    ):
        models.create("umixformer-b0", checkpoint=state)


def test_fused_model_matches_eager_without_batchnorm(golden_model):
    assert_fuses_exactly(golden_model, (192, 224))


def test_odd_input_sizes_give_stride_4_logits(golden_model):
    with torch.no_grad():
        assert golden_model(torch.randn(1, 3, 97, 131)).shape == (1, 150, 25, 33)


@pytest.mark.slow
def test_dynamic_onnx_export_is_exact_at_several_sizes(golden, golden_model):
    x = torch.from_numpy(np.load(golden / "input.npy"))
    proto = export_fused(golden_model, tuple(x.shape[2:]), dynamic_multiple=32)
    assert "AveragePool" in assert_portable_graph(proto, FORBIDDEN_OPS | {"Gather"})
    np.testing.assert_allclose(run_onnxruntime(proto, x), np.load(golden / "logits.npy"), rtol=0, atol=1e-4)
    # Dynamic graphs take multiples of 32 (what `edgeseg export --dynamic` promises); 96×608 is far from the
    # example's aspect ratio.
    for size in [(320, 448), (96, 608)]:
        xi = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            reference = golden_model(xi).numpy()
        np.testing.assert_allclose(run_onnxruntime(proto, xi), reference, rtol=0, atol=1e-4)


# ==== other encoders: MSCAN-T/S and LVT (golden data of the official code for MSCAN-T and LVT) ====

# Official totals (random weights) and the decoder tensors the forward never uses (kv dims 512 and 544).
OTHER_ENCODER_USED_PARAMS = {
    "umixformer-mscan-t": 6_722_444 - unused_params(512),
    "umixformer-lvt": 6_500_176 - unused_params(544),
}
GOLDEN_SETS = {"umixformer-lvt": "umixformer_lvt", "umixformer-mscan-t": "umixformer_mscan_t"}
# Paper Table 1 GFLOPs at 512×512 (= GMACs, mmcv's counting convention).
PUBLISHED_GMACS = {"umixformer-lvt": 9.1, "umixformer-mscan-t": 7.6}


@pytest.fixture(scope="module", params=sorted(GOLDEN_SETS))
def other_golden(request) -> tuple[str, Path, torch.nn.Module]:
    """(model name, golden folder, the model loaded from the official checkpoint)."""
    folder = golden_dir(GOLDEN_SETS[request.param])
    return request.param, folder, models.create(request.param, checkpoint=folder / "checkpoint.pth")


def test_other_encoders_reproduce_the_official_logits_and_features(other_golden):
    _, folder, model = other_golden
    assert_golden_logits_and_features(model, folder)


def test_other_encoders_load_every_official_key_and_ignore_only_the_unused_ones(other_golden):
    _, folder, model = other_golden
    report = model.checkpoint_report
    assert report.ignored == UNUSED_DECODER_KEYS
    assert report.loaded + len(report.ignored) == len(read_state_dict(folder / "checkpoint.pth"))


def test_other_encoders_fused_match_the_official_logits(other_golden):
    _, folder, model = other_golden
    fused = assert_fuses_exactly(model, (96, 128))
    x = torch.from_numpy(np.load(folder / "input.npy"))
    with torch.no_grad():
        np.testing.assert_allclose(fused(x).numpy(), np.load(folder / "logits.npy"), rtol=0, atol=1e-4)


def test_other_encoders_macs_at_512_match_the_published_count(other_golden):
    name, _, model = other_golden
    assert models.count_macs(model, (512, 512)) == pytest.approx(PUBLISHED_GMACS[name] * 1e9, rel=0.015)


def test_lvt_keys_are_the_official_mmseg_ones():
    """The LVT stages are the official ``backbone.backbone.{stage}.{0: patch embed, 1: blocks}`` tree."""
    keys = models.create("umixformer-lvt").state_dict()
    assert tuple(keys["backbone.backbone.0.1.1.attn.weight.weight"].shape) == (576, 64, 1, 1)  # CSA, 9 groups
    assert tuple(keys["backbone.backbone.1.1.0.mlp.fc1.weight"].shape) == (512, 64, 1, 1)  # 1×1 conv MLP
    assert tuple(keys["backbone.backbone.3.0.proj.weight"].shape) == (256, 160, 3, 3)
    assert not [k for k in keys if k.startswith("backbone.") and not k.startswith("backbone.backbone.")]


def test_lvt_missing_official_keys_are_named():
    folder = golden_dir("umixformer_lvt")
    state = read_state_dict(folder / "checkpoint.pth")
    del state["backbone.backbone.2.1.1.attn.ds.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: backbone\.backbone\.2\.1\.1\.attn\.ds\.weight"):
        models.create("umixformer-lvt", checkpoint=state)


def randomised(name: str) -> torch.nn.Module:
    """``name`` with random BatchNorm statistics and layer scales, so that fusion has work to do."""
    torch.manual_seed(0)
    model = models.create(name)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        for key, param in model.named_parameters():
            if "layer_scale" in key:
                param.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", sorted(OTHER_ENCODER_USED_PARAMS))
def test_other_encoder_parameter_counts_equal_the_official_used_ones(name):
    assert models.count_params(models.create(name)) == OTHER_ENCODER_USED_PARAMS[name]


def test_mscan_s_total_matches_the_published_size():
    total = models.count_params(models.create("umixformer-mscan-s")) + unused_params(1024)
    assert total == pytest.approx(24.3e6, abs=0.05e6)


@pytest.mark.parametrize("name", ["umixformer-mscan-t", "umixformer-lvt"])
def test_other_encoders_give_stride_4_logits_and_fuse_exactly(name):
    model = randomised(name)
    fused = assert_fuses_exactly(model, (128, 160))
    with torch.no_grad():
        for size, expected in [((128, 160), (32, 40)), ((97, 131), (25, 33))]:
            x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3))
            logits = model(x)
            assert logits.shape == (1, 150, *expected)
            assert [f.shape[1] for f in model.forward_features(x)] == list(model.backbone.out_channels)
            torch.testing.assert_close(fused(x), logits, rtol=0, atol=1e-5)


def test_lvt_window_attention_equals_the_unfold_fold_formulation():
    """CSA written as in the paper (5-D, unfold / grouped conv / fold) against the 4-D export form."""
    import torch.nn.functional as F

    from edgeseg.models.lvt import ConvSelfAttention

    torch.manual_seed(0)
    csa = ConvSelfAttention(64, 2).eval()
    x = torch.randn(2, 64, 13, 18)
    b, c, height, width = x.shape
    heads, d = 2, 32
    with torch.no_grad():
        pooled = F.avg_pool2d(x, 2, 2, ceil_mode=True)
        h, w = pooled.shape[2:]
        attn = csa.attn(pooled.permute(0, 2, 3, 1)).reshape(b, h * w, heads, 9, 9).permute(0, 2, 1, 3, 4)
        attn = (attn * d**-0.5).softmax(dim=-1)
        v = F.unfold(x, 3, padding=1, stride=2).reshape(b, c, 9, h * w).permute(0, 3, 2, 1)
        v = csa.weight(v.reshape(b * h * w, 9 * c, 1, 1))
        v = v.reshape(b, h * w, 9, heads, d).permute(0, 3, 1, 2, 4)
        out = (attn @ v).permute(0, 1, 4, 3, 2).reshape(b, c * 9, h * w)
        out = F.fold(out, (height, width), 3, padding=1, stride=2)
        reference = csa.proj(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(csa(x), reference, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["umixformer-lvt"])  # MSCAN-T shares the exporter path of B0's test; CI time
def test_other_encoders_dynamic_bundles_reproduce_the_official_logits(name, tmp_path):
    """Exported as `edgeseg export --dynamic` does at a small size; the bundle runs the golden 256×320 input."""
    folder = golden_dir(GOLDEN_SETS[name])
    request = ExportRequest(
        model=name,
        out=tmp_path / "bundle",
        target="openvino",
        input_size=(64, 96),
        dynamic=True,
        checkpoint=folder / "checkpoint.pth",
        parity_count=2,
    )
    bundle = read_bundle(export_bundle(request))
    assert bundle.dynamic and bundle.input.shape == (1, 3, None, None)
    assert all(result["passed"] for result in bundle.manifest.parity["results"].values())
    assert_portable_graph(onnx.load(bundle.path / "model.onnx"), FORBIDDEN_OPS | {"Gather"})
    x, expected = np.load(folder / "input.npy"), np.load(folder / "logits.npy")
    for backend in ("onnxruntime", "openvino"):
        np.testing.assert_allclose(load(bundle.path, backend=backend).logits(x), expected, rtol=0, atol=1e-4)

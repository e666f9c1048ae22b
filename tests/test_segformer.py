"""SegFormer: official-checkpoint loading, golden parity, LayerNorm eps, fusion, dynamic-shape ONNX export."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from edgeseg import models
from edgeseg.models.checkpoint import CheckpointError, read_state_dict
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

# Official parameter counts (NVlabs code, 150 classes). They count what the forward uses: the unused
# `decode_head.conv_seg` (Conv2d(128, 150, 1), 19,350 parameters) is not included, and edgeseg does not build it.
OFFICIAL_USED_PARAMS = {"segformer-b0": 3_752_694, "segformer-b1": 13_715_798, "segformer-b2": 27_461_974}
OFFICIAL_B0_TOTAL = 3_772_044
CONV_SEG_PARAMS = 128 * 150 + 150


@pytest.fixture(scope="module")
def golden():
    return golden_dir("segformer_b0")


@pytest.fixture(scope="module")
def golden_model(golden):
    return models.create("segformer-b0", checkpoint=golden / "checkpoint.pth")


def test_registry_lists_b0_to_b5():
    assert {f"segformer-b{i}" for i in range(6)} <= set(models.list_models())
    assert models.get_spec("segformer-b3").output_stride == 4
    assert all(models.get_spec(f"segformer-b{i}").dynamic_resolution for i in range(6))


@pytest.mark.parametrize("name", sorted(OFFICIAL_USED_PARAMS))
def test_parameter_counts_equal_the_official_ones(name):
    assert models.count_params(models.create(name)) == OFFICIAL_USED_PARAMS[name]


def test_b0_count_is_the_official_total_less_conv_seg():
    assert models.count_params(models.create("segformer-b0")) == OFFICIAL_B0_TOTAL - CONV_SEG_PARAMS


def test_macs_at_512_match_the_published_count(golden_model):
    assert models.count_macs(golden_model, (512, 512)) == pytest.approx(8.4e9, rel=0.01)


def test_golden_logits_and_features(golden, golden_model):
    assert_golden_logits_and_features(golden_model, golden)


def test_layernorm_eps_follow_the_nvlabs_code(golden_model):
    backbone = golden_model.backbone
    assert backbone.patch_embed2.norm.eps == 1e-5
    assert backbone.block1[0].attn.norm.eps == 1e-5
    assert backbone.block1[0].norm1.eps == backbone.block4[1].norm2.eps == backbone.norm4.eps == 1e-6
    assert not hasattr(backbone.block4[0].attn, "sr")


def test_checkpoint_report_lists_the_unused_conv_seg(golden, golden_model):
    report = golden_model.checkpoint_report
    assert report.ignored == ["decode_head.conv_seg.weight", "decode_head.conv_seg.bias"]
    assert report.loaded + len(report.ignored) == len(read_state_dict(golden / "checkpoint.pth")) == 194


def test_missing_and_unexpected_keys_are_named(golden):
    state = read_state_dict(golden / "checkpoint.pth")
    del state["backbone.block2.1.attn.kv.weight"]
    state["decode_head.linear_c5.proj.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: backbone\.block2\.1\.attn\.kv\.weight.*unexpected keys"):
        models.create("segformer-b0", checkpoint=state)


def test_wrong_variant_is_explained(golden):
    with pytest.raises(CheckpointError, match="missing keys"):
        models.create("segformer-b2", checkpoint=golden / "checkpoint.pth")


def test_fused_model_matches_eager_without_batchnorm(golden_model):
    assert_fuses_exactly(golden_model, (192, 224))


def test_odd_input_sizes_give_stride_4_logits(golden_model):
    with torch.no_grad():
        assert golden_model(torch.randn(1, 3, 97, 131)).shape == (1, 150, 25, 33)


@pytest.mark.slow
def test_dynamic_onnx_export_is_exact_at_several_sizes(golden, golden_model):
    x = torch.from_numpy(np.load(golden / "input.npy"))
    proto = export_fused(golden_model, tuple(x.shape[2:]), dynamic_multiple=32)
    assert_portable_graph(proto, FORBIDDEN_OPS | {"Gather"})
    np.testing.assert_allclose(run_onnxruntime(proto, x), np.load(golden / "logits.npy"), rtol=0, atol=1e-4)
    for size in [(320, 448), (96, 608)]:
        xi = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            reference = golden_model(xi).numpy()
        np.testing.assert_allclose(run_onnxruntime(proto, xi), reference, rtol=0, atol=1e-4)


# ==== Hugging Face transformers checkpoints ====


def to_hf_v4(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The golden NVlabs checkpoint renamed as transformers 4.x would store it (segformer.md table 5.1)."""
    out = {}
    for key, tensor in state.items():
        if key.startswith("decode_head.conv_seg."):
            continue
        m = re.match(r"backbone\.block(\d)\.(\d+)\.attn\.kv\.(weight|bias)$", key)
        if m:
            base = f"segformer.encoder.block.{int(m[1]) - 1}.{m[2]}.attention.self"
            key_half, value_half = tensor.chunk(2, dim=0)
            out[f"{base}.key.{m[3]}"], out[f"{base}.value.{m[3]}"] = key_half, value_half
            continue
        key = re.sub(r"^backbone\.patch_embed(\d)\.norm\.", lambda g: f"backbone.patch_embed{g[1]}.layer_norm.", key)
        key = re.sub(
            r"^backbone\.patch_embed(\d)\.", lambda g: f"segformer.encoder.patch_embeddings.{int(g[1]) - 1}.", key
        )
        key = re.sub(r"^backbone\.norm(\d)\.", lambda g: f"segformer.encoder.layer_norm.{int(g[1]) - 1}.", key)
        key = re.sub(r"^backbone\.block(\d)\.", lambda g: f"segformer.encoder.block.{int(g[1]) - 1}.", key)
        for old, new in [
            (".norm1.", ".layer_norm_1."),
            (".norm2.", ".layer_norm_2."),
            (".attn.q.", ".attention.self.query."),
            (".attn.sr.", ".attention.self.sr."),
            (".attn.norm.", ".attention.self.layer_norm."),
            (".attn.proj.", ".attention.output.dense."),
            (".mlp.fc1.", ".mlp.dense1."),
            (".mlp.fc2.", ".mlp.dense2."),
            ("decode_head.linear_fuse.conv.", "decode_head.linear_fuse."),
            ("decode_head.linear_fuse.bn.", "decode_head.batch_norm."),
            ("decode_head.linear_pred.", "decode_head.classifier."),
        ]:
            key = key.replace(old, new)
        key = re.sub(r"^decode_head\.linear_c(\d)\.", lambda g: f"decode_head.linear_c.{int(g[1]) - 1}.", key)
        out[key] = tensor
    return out


def to_hf_v5(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 4.x names → ≥ 5 module names (segformer.md 5.2)."""
    out = {}
    for key, tensor in state.items():
        key = re.sub(r"^segformer\.encoder\.patch_embeddings\.(\d)\.", r"segformer.stages.\1.patch_embeddings.", key)
        key = re.sub(r"^segformer\.encoder\.block\.(\d)\.", r"segformer.stages.\1.blocks.", key)
        key = re.sub(r"^segformer\.encoder\.layer_norm\.(\d)\.", r"segformer.stages.\1.layer_norm.", key)
        for old, new in [
            ("attention.self.query.", "attention.q_proj."),
            ("attention.self.key.", "attention.k_proj."),
            ("attention.self.value.", "attention.v_proj."),
            ("attention.self.sr.", "attention.sequence_reduction.sequence_reduction."),
            ("attention.self.layer_norm.", "attention.sequence_reduction.layer_norm."),
            ("attention.output.dense.", "attention.o_proj."),
            ("mlp.dense1.", "mlp.fc1."),
            ("mlp.dense2.", "mlp.fc2."),
            ("layer_norm_1.", "layernorm_before."),
            ("layer_norm_2.", "layernorm_after."),
            ("decode_head.linear_c.", "decode_head.linear_projections."),
        ]:
            key = key.replace(old, new)
        out[key] = tensor
    return out


@pytest.mark.parametrize("version", ["v4-safetensors", "v4-bin", "v5-safetensors"])
def test_hugging_face_checkpoints_load(golden, golden_model, tmp_path, version):
    from safetensors.torch import save_file

    state = to_hf_v4(read_state_dict(golden / "checkpoint.pth"))
    assert len(state) == 208  # segformer.md: HF B0 has 208 keys
    assert "segformer.encoder.block.0.1.attention.self.value.bias" in state
    if version.startswith("v5"):
        state = to_hf_v5(state)
        assert "segformer.stages.0.blocks.1.attention.k_proj.weight" in state
    path = tmp_path / ("model.safetensors" if version.endswith("safetensors") else "pytorch_model.bin")
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    model = models.create("segformer-b0", checkpoint=path)
    assert model.checkpoint_report.loaded == 192 and not model.checkpoint_report.ignored
    for key, value in golden_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_hugging_face_checkpoint_without_a_value_is_explained(golden):
    state = to_hf_v4(read_state_dict(golden / "checkpoint.pth"))
    del state["segformer.encoder.block.2.0.attention.self.value.weight"]
    with pytest.raises(CheckpointError, match=r"block3\.0\.attn\.kv\.weight.*key but not its partner"):
        models.create("segformer-b0", checkpoint=state)

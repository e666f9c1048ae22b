"""Export bundles: parity gate at two sizes for both backends, manifest, graph hygiene, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeseg import models
from edgeseg.bundle import read_bundle
from edgeseg.export import ExportRequest, ParityError, export_bundle
from edgeseg.imaging import parse_size
from edgeseg.runtime import load
from tests.golden import GOLDEN_ROOT, golden_dir
from tests.model_checks import FORBIDDEN_OPS, assert_portable_graph

SIZES = [(256, 320), (160, 224)]  # two sizes, non-square; small so that CI stays short
TARGETS = ["onnxruntime", "openvino"]

pytestmark = pytest.mark.slow


def reference_model() -> torch.nn.Module:
    """The model the session bundles were exported from (golden weights when available)."""
    checkpoint = GOLDEN_ROOT / "afformer_tiny" / "checkpoint.pth"
    torch.manual_seed(ExportRequest.seed)  # the exporter seeds random weights the same way
    return models.create("afformer-tiny", checkpoint=checkpoint if checkpoint.is_file() else None)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bundle_passes_parity_and_describes_itself(afformer_bundle, target, size):
    bundle = read_bundle(afformer_bundle(target, size))
    bundle.verify()
    manifest = bundle.manifest
    h, w = size
    assert manifest.target == target and manifest.precision == "fp32"
    assert manifest.input.shape == (1, 3, h, w) and manifest.input.color == "RGB"
    assert manifest.outputs[0].shape == (1, 150, h // 8, w // 8) and manifest.outputs[0].stride == 8
    assert set(manifest.artifacts) == {"onnx", target}
    parity = manifest.parity
    assert parity["passed"] and set(parity["results"]) == {"onnx", target}
    for result in parity["results"].values():
        assert result["max_abs"] <= 1e-4
        assert result["argmax_agreement"] >= 0.999
    if target == "openvino":
        assert parity["results"]["openvino"]["settings"] == {"INFERENCE_PRECISION_HINT": "f32"}
        # fp32 IR: ov.save_model's default fp16 compression would halve this.
        assert manifest.files["model.bin"].bytes >= 4 * manifest.model.params
    expected_files = {"manifest.json", *manifest.files}
    assert {p.name for p in bundle.path.iterdir()} == expected_files


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_onnx_graph_is_static_4d_and_free_of_size_dependent_ops(afformer_bundle, size):
    proto = onnx.load(str(afformer_bundle("onnxruntime", size) / "model.onnx"))
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert_portable_graph(proto, FORBIDDEN_OPS | {"Gather"})


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runtime_logits_match_pytorch_on_a_fresh_input(afformer_bundle, target, backend, size):
    segmenter = load(afformer_bundle(target, size), backend=backend)
    x = np.random.default_rng(7).standard_normal((1, 3, *size), dtype=np.float32)
    with torch.no_grad():
        expected = reference_model()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(segmenter.logits(x), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("target", TARGETS)
def test_golden_logits_through_the_runtimes(afformer_bundle, target):
    golden = golden_dir("afformer_tiny")
    segmenter = load(afformer_bundle(target, (256, 320)))
    logits = segmenter.logits(np.load(golden / "input.npy"))
    np.testing.assert_allclose(logits, np.load(golden / "logits.npy"), rtol=0, atol=1e-4)


def test_static_graph_rejects_another_size(afformer_bundle):
    segmenter = load(afformer_bundle("onnxruntime", (256, 320)))
    with pytest.raises(ValueError, match="256"):
        segmenter.logits(np.zeros((1, 3, 352, 480), np.float32))


def test_failed_parity_gate_leaves_nothing_behind(tmp_path):
    out = tmp_path / "bundle"
    request = ExportRequest(model="afformer-tiny", out=out, target="openvino", input_size=(64, 64), tolerance=1e-12)
    with pytest.raises(ParityError, match=r"parity gate failed .* max_abs [\d.e-]+ > 1e-12"):
        export_bundle(request)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force_and_is_replaced_whole(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "edgeseg-bundle"}')  # --force replaces only a bundle
    (out / "stale.txt").write_text("old")
    request = ExportRequest(model="afformer-tiny", out=out, target="onnx", input_size=(64, 96))
    with pytest.raises(FileExistsError, match="--force"):
        export_bundle(request)
    export_bundle(ExportRequest(**{**request.__dict__, "force": True}))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    manifest = read_bundle(out).manifest
    assert manifest.model.weights == "random" and "seed" in manifest.model.weights_note


@pytest.mark.parametrize("text", ["512", "0x64", "64x-1", "axb"])
def test_bad_input_sizes_are_explained(text):
    with pytest.raises(ValueError, match=r"HEIGHTxWIDTH|positive"):
        parse_size(text)


def test_sizes_must_be_multiples_of_32(tmp_path):
    with pytest.raises(ValueError, match="multiples of 32"):
        export_bundle(ExportRequest(model="afformer-tiny", out=tmp_path / "b", input_size=(500, 500)))


def test_manifest_records_checkpoint_provenance(afformer_bundle):
    golden = golden_dir("afformer_tiny")
    manifest = read_bundle(afformer_bundle("openvino", (256, 320))).manifest
    checkpoint = manifest.model.checkpoint
    assert manifest.model.weights == "checkpoint"
    assert checkpoint.file == Path(golden / "checkpoint.pth").name
    assert checkpoint.ignored_keys == [
        "decode_head.align.conv.weight",
        "decode_head.align.gn.weight",
        "decode_head.align.gn.bias",
    ]
    assert {"torch", "onnx", "onnxruntime", "openvino", "edgeseg"} <= set(manifest.tools)


def test_dynamic_export_is_refused_for_models_with_size_constants(tmp_path):
    request = ExportRequest(model="afformer-tiny", out=tmp_path / "b", input_size=(256, 320), dynamic=True)
    with pytest.raises(ValueError, match="one static bundle per input size"):
        export_bundle(request)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("model_name", "golden_name", "size"),
    [("cgrseg-t", "cgrseg_t", (224, 288)), ("cloformer-xxs-seg", "cloformer_xxs", (160, 224))],
)
def test_other_families_pass_the_bundle_parity_gate(model_name, golden_name, size, tmp_path):
    """Official (golden) weights, a size that is not the golden one, both backends through the bundle path."""
    checkpoint = golden_dir(golden_name) / "checkpoint.pth"
    request = ExportRequest(
        model=model_name, out=tmp_path / "b", target="openvino", input_size=size, checkpoint=checkpoint
    )
    manifest = read_bundle(export_bundle(request)).manifest
    assert manifest.parity["passed"] and set(manifest.parity["results"]) == {"onnx", "openvino"}
    assert max(r["max_abs"] for r in manifest.parity["results"].values()) <= 1e-4
    torch.manual_seed(ExportRequest.seed)  # CloFormer-seg's head is not in the ImageNet checkpoint: seeded init
    model = models.create(model_name, checkpoint=checkpoint)
    x = np.random.default_rng(3).standard_normal((1, 3, *size), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for backend in ("onnxruntime", "openvino"):
        np.testing.assert_allclose(load(tmp_path / "b", backend=backend).logits(x), expected, rtol=0, atol=1e-4)


def test_bundle_paths_may_hold_commas_and_parentheses(tmp_path):
    out = tmp_path / "bundles, v1 (openvino)"
    request = ExportRequest(model="afformer-tiny", out=out, target="openvino", input_size=(64, 64))
    assert read_bundle(export_bundle(request)).manifest.parity["passed"]
    assert load(out).logits(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 150, 8, 8)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_kind": "uint8-rgb", "dynamic": True, "frame_size": (720, 1280)}, "--frame-size fixes the frame"),
        ({"input_kind": "uint8-bgr", "target": "tensorrt"}, "needs --frame-size"),
        ({"outputs": ("labels-full",)}, "labels-full needs the frame"),
        ({"input_kind": "uint8-rgb", "frame_size": (0, 10)}, "must have sides"),
    ],
)
def test_frame_path_options_are_checked_before_any_work(tmp_path, options, message):
    request = ExportRequest(model="afformer-tiny", out=tmp_path / "b", **options)
    with pytest.raises(ValueError, match=message):
        export_bundle(request)
    assert not (tmp_path / "b").exists()

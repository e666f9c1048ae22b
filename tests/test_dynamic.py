"""Dynamic-resolution bundles: one graph for every multiple of the size step, aspect-preserving resizing."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.bundle import read_bundle
from edgeseg.runtime import load


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ((64, 96), (64, 96)),  # already the short side: kept, both multiples of 8
        ((720, 1280), (64, 112)),  # short side 64, long side 113.8 → nearest multiple of 8
        ((100, 1000), (24, 256)),  # long side capped at 256 before the short side reaches 64
        ((1280, 720), (112, 64)),  # portrait
        ((3, 5), (64, 104)),  # upscaled
    ],
)
def test_dynamic_bundles_keep_the_aspect_ratio(tiny_bundle, image, expected):
    assert read_bundle(tiny_bundle("onnx", dynamic=True)).model_input_size(image) == expected


def test_static_bundles_stretch_to_their_size(tiny_bundle):
    assert read_bundle(tiny_bundle("onnx")).model_input_size((720, 1280)) == (64, 96)


@pytest.mark.parametrize("target", ["onnx", "openvino"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_dynamic_graph_runs_at_several_sizes(tiny_bundle, tiny_conv, target, backend):
    segmenter = load(tiny_bundle(target, dynamic=True), backend=backend)
    assert segmenter.bundle.dynamic and "dynamic" in repr(segmenter)
    for h, w in [(64, 96), (48, 120), (8, 8)]:
        x = np.random.default_rng(h).standard_normal((1, 3, h, w), dtype=np.float32)
        np.testing.assert_allclose(segmenter.logits(x), tiny_conv(x), rtol=0, atol=1e-4)
    for image_size in [(720, 1280), (33, 17)]:
        labels = segmenter.predict(np.zeros((*image_size, 3), np.uint8))
        assert labels.shape == image_size


def test_dynamic_graph_rejects_sizes_off_the_step(tiny_bundle):
    segmenter = load(tiny_bundle("onnx", dynamic=True))
    with pytest.raises(ValueError, match="multiples of 8"):
        segmenter.logits(np.zeros((1, 3, 60, 96), np.float32))
    with pytest.raises(ValueError, match="multiples of 8"):
        segmenter.logits(np.zeros((1, 4, 64, 96), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["umixformer-b0"])  # segformer-b0: the uint8-frame test below
def test_dynamic_bundle_of_a_transformer_matches_pytorch_at_other_sizes(model_name, tmp_path):
    torch = pytest.importorskip("torch")
    from edgeseg import models
    from edgeseg.export import ExportRequest, export_bundle

    request = ExportRequest(
        model=model_name, out=tmp_path / "b", target="openvino", input_size=(128, 160), dynamic=True
    )
    bundle = read_bundle(export_bundle(request))
    assert bundle.dynamic and bundle.input.shape == (1, 3, None, None)
    checked = bundle.manifest.parity["results"]["openvino"]["by_size"]
    assert len(checked) == 2 and next(iter(checked)) == "128x160"  # the export size and a second one
    assert all(r["max_abs"] <= 1e-4 for r in checked.values())
    torch.manual_seed(request.seed)
    model = models.create(model_name)
    for backend in ("onnxruntime", "openvino"):
        segmenter = load(bundle.path, backend=backend)
        for size in [(224, 288), (64, 480)]:
            x = np.random.default_rng(size[0]).standard_normal((1, 3, *size), dtype=np.float32)
            with torch.no_grad():
                expected = model(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(segmenter.logits(x), expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_a_dynamic_bundle_takes_uint8_frames_of_any_size(tmp_path):
    """`--dynamic --input uint8-bgr`: the graph sizes each frame by the keep-ratio rule itself."""
    torch = pytest.importorskip("torch")
    from edgeseg import models
    from edgeseg.export import ExportRequest, export_bundle
    from edgeseg.imaging import labels_from_logits

    request = ExportRequest(
        model="segformer-b0",
        out=tmp_path / "b",
        target="openvino",
        input_size=(128, 160),
        dynamic=True,
        input_kind="uint8-bgr",
        outputs=("logits", "labels-full"),
        parity_count=2,
    )
    bundle = read_bundle(export_bundle(request))
    assert bundle.dynamic and bundle.manifest.frame is not None and bundle.manifest.frame.size is None
    assert bundle.manifest.parity["frame"]["passed"]
    checked = bundle.manifest.parity["results"]["openvino"]["by_size"]  # the core graph at two sizes, as above
    assert len(checked) == 2 and all(r["max_abs"] <= 1e-4 for r in checked.values())
    torch.manual_seed(request.seed)
    model = models.create("segformer-b0")
    rng = np.random.default_rng(0)
    for backend in ("onnxruntime", "openvino"):
        with load(bundle.path, backend=backend) as seg:
            for size in [(360, 640), (160, 157)]:  # 128x224, and 160 · 128/157 = 130.4 → 128x128
                rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                x = bundle.input_spec.preprocess(rgb)
                assert x.shape[2:] == bundle.model_input_size(size)
                with torch.no_grad():
                    expected = model(torch.from_numpy(x)).numpy()[0]
                got = seg.outputs(np.ascontiguousarray(rgb[..., ::-1]))
                np.testing.assert_allclose(got["logits"], expected, rtol=0, atol=1e-4)
                assert np.mean(got["labels-full"] == labels_from_logits(expected, size)) >= 0.9999

"""The frame path in the graph: uint8 frames in, resize + normalisation + labels/confidence inside the graph."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import edgeseg.runtime
from edgeseg.bundle import describe_files, read_bundle, write_manifest
from edgeseg.export.frame_path import (
    FRAME_HW,
    FramePlan,
    _keep_ratio_nodes,
    post_graph,
    pre_graph,
    wrap_onnx,
    wrap_openvino,
)
from edgeseg.imaging import ImageError, labels_from_logits, normalize, resize_bilinear
from edgeseg.manifest import KeepRatioResize
from edgeseg.runtimes import create_runner
from tests.conftest import TINY_INPUT_SHAPE, TINY_MEAN, TINY_STD, TinyConv

MakeBundle = Callable[..., Path]
ALL = ("logits", "labels", "labels-full", "confidence")
MODEL_SIZE = TINY_INPUT_SHAPE[2:]


def _region_frame(size: tuple[int, int], seed: int) -> np.ndarray:
    """A camera-like frame: smooth colour regions (a few boundaries) plus a little noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3)).astype(np.float32)
    smooth = resize_bilinear(coarse, size)
    return np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)


def _frame_bundle(source: Path, folder: Path, plan: FramePlan) -> Path:
    """A copy of a tiny bundle whose graphs (ONNX, and OpenVINO IR if present) carry the frame path of ``plan``."""
    import openvino as ov

    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    resize = read_bundle(source).manifest.input.resize
    pre = pre_graph(plan, "input", resize, TINY_MEAN, TINY_STD) if plan.takes_frames else None
    post = post_graph(plan, read_bundle(source).manifest.outputs[0].shape)
    onnx.save(wrap_onnx(onnx.load(str(folder / "model.onnx")), pre, post), str(folder / "model.onnx"))
    if (folder / "model.xml").exists():
        ov.save_model(wrap_openvino(source / "model.xml", pre, post), str(folder / "model.xml"), compress_to_fp16=False)
    if plan.takes_frames:
        size = list(plan.frame_size) if plan.frame_size else [None, None]
        manifest["frame"] = {"name": "frame", "shape": [1, *size, 3], "color": plan.color}
    shapes = {o.name: [d.dim_value or None for d in o.type.tensor_type.shape.dim] for o in post.graph.output}
    names = {"logits": "logits", "labels": "labels", "labels-full": "labels_full", "confidence": "confidence"}
    manifest["outputs"] = [
        {
            "name": names[kind],
            "kind": kind,
            "shape": shapes[names[kind]],
            "layout": "NCHW" if kind in ("logits", "confidence") else "NHW",
            "dtype": {"logits": "float32", "confidence": plan.confidence_dtype}.get(kind, "uint8"),
            "stride": 1 if kind == "labels-full" else 8,
            "classes": plan.confidence_classes if kind == "confidence" else None,
        }
        for kind in plan.outputs
    ]
    manifest["files"] = describe_files(folder, list(manifest["files"]))
    write_manifest(folder, manifest)
    return folder


def _expected(conv: TinyConv, rgb: np.ndarray, model_size: tuple[int, int] = MODEL_SIZE) -> dict[str, np.ndarray]:
    """The numpy reference of every output for an RGB frame (the runtime's own pre- and post-processing)."""
    logits = conv(normalize(resize_bilinear(rgb, model_size), TINY_MEAN, TINY_STD))[0].astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=0))
    return {
        "logits": logits,
        "labels": logits.argmax(axis=0).astype(np.uint8),
        "labels-full": labels_from_logits(logits, rgb.shape[:2]),
        "confidence": shifted / shifted.sum(axis=0),
    }


@pytest.mark.parametrize("target", ["onnx", "openvino"])
@pytest.mark.parametrize("color", ["rgb", "bgr"])
def test_every_output_matches_the_numpy_path(
    tiny_bundle: MakeBundle, tiny_conv: TinyConv, tmp_path: Path, target: str, color: str
) -> None:
    plan = FramePlan(f"uint8-{color}", ALL)
    folder = _frame_bundle(tiny_bundle(target), tmp_path / "frame", plan)
    with edgeseg.runtime.load(folder) as seg:
        assert seg.runner.input_dtype == np.uint8
        for seed, size in enumerate([(64, 96), (480, 640), (37, 251)]):
            rgb = _region_frame(size, seed)
            got = seg.outputs(rgb if color == "rgb" else np.ascontiguousarray(rgb[..., ::-1]))
            want = _expected(tiny_conv, rgb)
            assert set(got) == set(ALL)
            assert np.abs(got["logits"] - want["logits"]).max() < 1e-4
            assert got["labels"].dtype == np.uint8 and np.array_equal(got["labels"], want["labels"])
            assert got["labels-full"].shape == size
            assert np.mean(got["labels-full"] == want["labels-full"]) >= 0.9999
            assert got["confidence"].dtype == np.float16
            assert np.abs(got["confidence"].astype(np.float32) - want["confidence"]).max() < 1e-3


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_uint8_confidence_of_chosen_classes(
    tiny_bundle: MakeBundle, tiny_conv: TinyConv, tmp_path: Path, target: str
) -> None:
    plan = FramePlan("uint8-rgb", ("labels-full", "confidence"), confidence_dtype="uint8", confidence_classes=(3, 1))
    folder = _frame_bundle(tiny_bundle(target), tmp_path / "frame", plan)
    manifest = edgeseg.runtime.load(folder).bundle.manifest
    confidence = manifest.output("confidence")
    assert confidence is not None and confidence.dtype == "uint8" and confidence.classes == (3, 1)
    with edgeseg.runtime.load(folder) as seg:
        for seed, size in enumerate([(64, 96), (120, 200)]):
            rgb = _region_frame(size, seed)
            got = seg.outputs(rgb)["confidence"]
            want = np.round(255 * _expected(tiny_conv, rgb)["confidence"][[3, 1]])
            assert got.dtype == np.uint8 and got.shape == (2, 8, 12)  # outputs() drops the batch axis
            assert np.abs(got.astype(np.float32) - want).max() <= 1  # a probability on a .5 boundary may round up


@pytest.mark.parametrize("outputs", [("logits",), ("labels", "labels-full"), ("labels", "logits")])
def test_predict_gives_the_float_bundles_label_map(
    tiny_bundle: MakeBundle, tmp_path: Path, outputs: tuple[str, ...]
) -> None:
    folder = _frame_bundle(tiny_bundle("onnx"), tmp_path / "frame", FramePlan("uint8-bgr", outputs))
    with edgeseg.runtime.load(tiny_bundle("onnx")) as plain, edgeseg.runtime.load(folder) as seg:
        for seed, size in enumerate([(64, 96), (720, 1280)]):
            rgb = _region_frame(size, seed)
            want, got = plain.predict(rgb), seg.predict(rgb)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.mean(got == want) >= 0.9999
        frames = [_region_frame((48 + 16 * i, 80), i) for i in range(5)]
        for streamed, frame in zip(seg.stream(frames), frames, strict=True):  # the pipelined path, too
            np.testing.assert_array_equal(streamed, seg.predict(frame))


def test_a_float_bundle_with_labels_and_confidence(
    tiny_bundle: MakeBundle, tiny_conv: TinyConv, tmp_path: Path
) -> None:
    folder = _frame_bundle(tiny_bundle("onnx"), tmp_path / "float", FramePlan("float", ("labels", "logits")))
    rgb = _region_frame((100, 150), 3)
    with edgeseg.runtime.load(folder) as seg, edgeseg.runtime.load(tiny_bundle("onnx")) as plain:
        got = seg.outputs(rgb)
        assert np.array_equal(got["labels"], _expected(tiny_conv, rgb)["labels"])
        assert np.array_equal(seg.predict(rgb), plain.predict(rgb))
        assert np.array_equal(seg.logits(seg.preprocess(rgb)), plain.logits(plain.preprocess(rgb)))


def test_a_fixed_frame_size_refuses_other_sizes(tiny_bundle: MakeBundle, tmp_path: Path) -> None:
    plan = FramePlan("uint8-rgb", ("labels-full",), frame_size=(120, 160))
    folder = _frame_bundle(tiny_bundle("onnx"), tmp_path / "fixed", plan)
    with edgeseg.runtime.load(folder) as seg:
        assert seg.predict(_region_frame((120, 160), 0)).shape == (120, 160)
        with pytest.raises(ImageError, match="takes 120x160 frames only"):
            seg.predict(_region_frame((64, 96), 0))
        with pytest.raises(ValueError, match="cannot run alone"):
            seg.logits(np.zeros(TINY_INPUT_SHAPE, np.float32))
        with pytest.raises(ImageError, match="uint8 RGB frame"):
            seg.outputs(np.zeros((120, 160, 3), np.float32))


def test_runners_return_every_output_by_name(tiny_bundle: MakeBundle, tmp_path: Path) -> None:
    folder = _frame_bundle(tiny_bundle("openvino"), tmp_path / "frame", FramePlan("uint8-rgb", ALL))
    frame = _region_frame((50, 70), 1)[None]
    results = {}
    configs = {"onnxruntime": ("model.onnx", {}), "openvino": ("model.xml", {"INFERENCE_PRECISION_HINT": "f32"})}
    for backend, (name, config) in configs.items():
        with create_runner(backend, folder / name, config=config) as runner:
            assert runner.output_names == ("logits", "labels", "labels_full", "confidence")
            assert runner.input_dtype == np.uint8 and runner.input_shape == (1, None, None, 3)
            results[backend] = runner.infer_all(frame)
    ort, ov = results["onnxruntime"], results["openvino"]
    assert {k: v.dtype for k, v in ort.items()} == {k: v.dtype for k, v in ov.items()}
    assert ort["labels_full"].shape == (1, 50, 70)
    assert np.mean(ort["labels_full"] == ov["labels_full"]) >= 0.9999


# (720, 1280): stretched by a wide margin; (784, 1127): width 11.5 multiples exactly (a tie: even, 12 · 8 = 96,
# where float64 arithmetic gave 88); (100, 1000): the long side caps the scale; (8, 8): upscaled.
KEEP_RATIO_FRAMES = [(64, 96), (720, 1280), (784, 1127), (100, 1000), (8, 8), (37, 251)]


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_a_dynamic_graph_takes_frames_and_keeps_their_aspect_ratio(
    tiny_bundle: MakeBundle, tiny_conv: TinyConv, tmp_path: Path, target: str
) -> None:
    source = tiny_bundle(target, dynamic=True)
    folder = _frame_bundle(source, tmp_path / "frame", FramePlan("uint8-bgr", ALL))
    bundle = read_bundle(folder)
    assert bundle.dynamic and bundle.model_input_size((784, 1127)) == (64, 96)
    with edgeseg.runtime.load(folder) as seg, edgeseg.runtime.load(source) as plain:
        for seed, size in enumerate(KEEP_RATIO_FRAMES):
            rgb = _region_frame(size, seed)
            model_size = bundle.model_input_size(size)
            got, want = seg.outputs(np.ascontiguousarray(rgb[..., ::-1])), _expected(tiny_conv, rgb, model_size)
            stride = (model_size[0] // 8, model_size[1] // 8)
            assert got["logits"].shape == (5, *stride) and got["labels"].shape == stride
            assert np.abs(got["logits"] - want["logits"]).max() < 1e-4
            assert np.array_equal(got["labels"], want["labels"])
            assert got["labels-full"].shape == size
            assert np.mean(got["labels-full"] == want["labels-full"]) >= 0.9999
            assert np.mean(seg.predict(rgb) == plain.predict(rgb)) >= 0.9999


def test_the_graphs_keep_ratio_sizes_are_the_runtimes(tmp_path: Path) -> None:
    """The int64 nodes against :meth:`KeepRatioResize.size_for` on ONNX Runtime and OpenVINO, ties included."""
    import onnxruntime as ort
    import openvino as ov
    from onnx import TensorProto, helper

    rule = KeepRatioResize(mode="keep_ratio", short_side=64, max_long_side=256, multiple=8)
    nodes, inits = _keep_ratio_nodes(rule, "size")
    graph = helper.make_graph(
        nodes,
        "keep_ratio",
        [helper.make_tensor_value_info(FRAME_HW, TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("size", TensorProto.INT64, [2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(tmp_path / "size.onnx"))
    rng = np.random.default_rng(0)
    sizes = [(784, 1127), (1127, 784), (784, 1323), (1, 1), (1, 4096), (8192, 3)]
    sizes += [tuple(int(v) for v in rng.integers(1, 2000, 2)) for _ in range(300)]
    session = ort.InferenceSession(str(tmp_path / "size.onnx"), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(tmp_path / "size.onnx"), "CPU")
    for size in sizes:
        hw = np.array(size, np.int64)
        want = list(rule.size_for(size))
        assert session.run(None, {FRAME_HW: hw})[0].tolist() == want, size
        assert compiled({FRAME_HW: hw})[0].tolist() == want, size


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (dict(outputs=("labels",)), "needs logits or labels-full"),
        (dict(outputs=("logits", "labels-full")), "labels-full needs the frame"),
        (dict(input_kind="uint8-rgb", outputs=("logits", "logits")), "comma-separated subset"),
        (dict(input_kind="uint8-yuv"), "not one of"),
        (dict(frame_size=(720, 1280)), "add --input uint8-rgb"),
        (dict(confidence_dtype="uint8"), "shape the confidence output; add it to --output"),
        (dict(outputs=("logits", "confidence"), confidence_dtype="int8"), "not one of float16, uint8"),
        (dict(outputs=("logits", "confidence"), confidence_classes=(2, 2)), "distinct 0-based class indices"),
    ],
)
def test_bad_plans_say_what_to_change(plan: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FramePlan(**plan)


def test_manifest_refuses_labels_full_without_a_frame(tiny_bundle: MakeBundle, tmp_path: Path) -> None:
    folder = _frame_bundle(tiny_bundle("onnx"), tmp_path / "frame", FramePlan("uint8-rgb", ("labels-full",)))
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["frame"]
    with pytest.raises(Exception, match="labels-full output needs the frame"):
        write_manifest(folder, manifest)


# ==== real model: AFFormer-tiny (golden weights) through export ====================================


@pytest.fixture(scope="module")
def afformer_frame_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """AFFormer-tiny at 128², exported plain and as uint8-bgr → labels,labels-full for onnxruntime."""
    from edgeseg.export import ExportRequest, export_bundle
    from tests.golden import GOLDEN_ROOT

    checkpoint = GOLDEN_ROOT / "afformer_tiny" / "checkpoint.pth"
    if not checkpoint.is_file():
        pytest.skip("golden AFFormer-tiny checkpoint missing")
    root = tmp_path_factory.mktemp("afformer_frames")
    common = dict(model="afformer-tiny", target="onnxruntime", input_size=(128, 128), checkpoint=checkpoint)
    return {
        "float": export_bundle(ExportRequest(out=root / "float", parity_count=2, **common)),  # type: ignore[arg-type]
        "frame": export_bundle(
            ExportRequest(  # type: ignore[arg-type]
                out=root / "frame",
                input_kind="uint8-bgr",
                outputs=("labels", "labels-full", "confidence"),
                confidence_dtype="uint8",
                confidence_classes=(0, 12, 149),
                parity_count=2,
                **common,
            )
        ),
    }


def test_export_records_and_gates_the_frame_path(afformer_frame_bundles: dict[str, Path]) -> None:
    manifest = json.loads((afformer_frame_bundles["frame"] / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["frame"]["color"] == "BGR"
    assert [o["kind"] for o in manifest["outputs"]] == ["labels", "labels-full", "confidence"]
    confidence = manifest["outputs"][2]
    assert confidence["dtype"] == "uint8" and confidence["classes"] == [0, 12, 149]
    assert confidence["shape"] == [1, 3, 16, 16]  # stride 8 at 128²
    frame = manifest["parity"]["frame"]
    assert frame["passed"] and set(frame["results"]) == {"onnx", "onnxruntime"}
    assert frame["gates"]["fp32"]["confidence_max_abs"] == pytest.approx(1.5 / 255)
    for result in frame["results"].values():
        assert all(entry["agreement"] >= 0.9999 for entry in result["outputs"].values())
        assert result["outputs"]["confidence"]["max_abs"] <= 1.5 / 255


def test_afformer_frame_bundle_predicts_the_float_bundles_labels(afformer_frame_bundles: dict[str, Path]) -> None:
    with (
        edgeseg.runtime.load(afformer_frame_bundles["float"]) as plain,
        edgeseg.runtime.load(afformer_frame_bundles["frame"]) as seg,
    ):
        for seed, size in enumerate([(128, 128), (360, 640)]):
            rgb = _region_frame(size, seed)
            assert np.mean(seg.predict(rgb) == plain.predict(rgb)) >= 0.9999

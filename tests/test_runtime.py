"""The torch-free runtime on real ONNX Runtime and OpenVINO sessions, against a numpy reference."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import edgeseg.runtime
from edgeseg.bundle import BundleError, read_bundle
from edgeseg.imaging import ImageError, labels_from_logits, normalize
from edgeseg.runtimes import BACKENDS, Runner, RunnerClosedError, available_backends, create_runner
from edgeseg.runtimes.tensorrt import TensorRTRunner

REPO = Path(__file__).resolve().parents[1]
IN_SHAPE, OUT_SHAPE = (1, 3, 64, 96), (1, 5, 8, 12)
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

MakeBundle = Callable[..., Path]


def random_input(seed: int = 0) -> np.ndarray:
    """A plausible normalised model input."""
    return np.random.default_rng(seed).standard_normal(IN_SHAPE).astype(np.float32)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_backends_registry() -> None:
    assert BACKENDS == ("onnxruntime", "openvino", "tensorrt")
    assert available_backends() == ["onnxruntime", "openvino"]


# ---- runners ---------------------------------------------------------------------------------------

RUNNER_CASES = [
    ("onnx", "onnxruntime", "model.onnx", {"session.intra_op.allow_spinning": "0"}),
    ("openvino", "openvino", "model.xml", {"INFERENCE_PRECISION_HINT": "f32"}),
    ("onnx", "openvino", "model.onnx", {"INFERENCE_PRECISION_HINT": "f32"}),
]


@pytest.mark.parametrize(("target", "backend", "artifact", "config"), RUNNER_CASES)
@pytest.mark.parametrize("threads", [None, 1])
def test_runner_matches_numpy_reference(
    tiny_bundle: MakeBundle, tiny_conv, target: str, backend: str, artifact: str, config: dict, threads
) -> None:
    runner = create_runner(backend, tiny_bundle(target) / artifact, threads=threads, config=config)
    assert isinstance(runner, Runner)
    assert runner.name == backend and runner.threads == threads
    assert runner.input_shape == IN_SHAPE and runner.output_shape == OUT_SHAPE
    x = random_input()
    out = runner.infer(x)
    assert out.shape == OUT_SHAPE and out.dtype == np.float32
    np.testing.assert_allclose(out, tiny_conv(x), rtol=0, atol=1e-4)
    again = runner.infer(random_input(1))  # the first result is the caller's, not a reused buffer
    np.testing.assert_allclose(out, tiny_conv(x), rtol=0, atol=1e-4)
    np.testing.assert_allclose(again, tiny_conv(random_input(1)), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("target", "backend", "artifact", "config"), RUNNER_CASES)
def test_runner_closes_and_then_refuses_to_run(
    tiny_bundle: MakeBundle, target: str, backend: str, artifact: str, config: dict
) -> None:
    path = tiny_bundle(target) / artifact
    with create_runner(backend, path, config=config) as runner:
        assert not runner.closed
        runner.infer(random_input())
    assert runner.closed and "closed" in repr(runner)
    with pytest.raises(RunnerClosedError, match=rf"the {backend} runner of .*{artifact} is closed; load the model"):
        runner.infer(random_input())
    runner.close()  # closing twice is harmless
    assert runner.closed


@pytest.mark.parametrize(("target", "backend", "artifact", "config"), RUNNER_CASES)
def test_close_waits_for_calls_in_flight(
    tiny_bundle: MakeBundle, tiny_conv, target: str, backend: str, artifact: str, config: dict
) -> None:
    runner = create_runner(backend, tiny_bundle(target) / artifact, config=config)
    x = random_input(3)
    outcomes: list[object] = []
    running = threading.Event()

    def keep_calling() -> None:
        while True:
            try:
                outcomes.append(runner.infer(x))
            except RunnerClosedError as error:
                outcomes.append(error)
                return
            if len(outcomes) == 3:
                running.set()

    caller = threading.Thread(target=keep_calling)
    caller.start()
    running.wait(timeout=60)
    runner.close()
    caller.join(timeout=60)
    assert not caller.is_alive()
    *results, last = outcomes
    assert isinstance(last, RunnerClosedError) and len(results) >= 3
    for out in results:  # every call that ran before close() finished with the right answer
        np.testing.assert_allclose(out, tiny_conv(x), rtol=0, atol=1e-4)


def test_every_backend_is_a_runner() -> None:
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRunner
    from edgeseg.runtimes.openvino import OpenVINORunner

    assert all(issubclass(c, Runner) for c in (OnnxRuntimeRunner, OpenVINORunner, TensorRTRunner))
    with pytest.raises(TypeError, match="abstract"):
        Runner("model.onnx", None)  # type: ignore[abstract]


def test_create_runner_errors(tiny_bundle: MakeBundle) -> None:
    known = r"unknown backend 'coreml'; known backends: onnxruntime, openvino, tensorrt"
    with pytest.raises(ValueError, match=known):
        create_runner("coreml", tiny_bundle() / "model.onnx")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        create_runner("onnxruntime", tiny_bundle() / "model.onnx", threads=0)


# ---- load: backend selection, verification ---------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "backend", "expected", "artifact"),
    [
        ("onnx", None, "onnxruntime", "model.onnx"),
        ("openvino", None, "openvino", "model.xml"),
        ("openvino", "onnxruntime", "onnxruntime", "model.onnx"),
        ("onnx", "openvino", "openvino", "model.onnx"),
    ],
)
def test_load_picks_backend_and_artifact(
    tiny_bundle: MakeBundle, tiny_conv, target: str, backend: str | None, expected: str, artifact: str
) -> None:
    seg = edgeseg.runtime.load(tiny_bundle(target), backend)
    assert seg.backend == expected and seg.runner.name == expected
    assert Path(seg.runner.path).name == artifact  # type: ignore[attr-defined]
    # An fp32 bundle stays fp32 on OpenVINO even when its manifest has no precision hint for it.
    x = random_input(2)
    np.testing.assert_allclose(seg.logits(x), tiny_conv(x), rtol=0, atol=1e-4)


def test_load_accepts_a_bundle_and_threads(tiny_bundle: MakeBundle) -> None:
    seg = edgeseg.runtime.load(read_bundle(tiny_bundle()), threads=1)
    assert seg.runner.threads == 1


def test_load_unknown_backend(tiny_bundle: MakeBundle) -> None:
    with pytest.raises(ValueError, match="known backends: onnxruntime, openvino"):
        edgeseg.runtime.load(tiny_bundle(), "tensorflow")


@pytest.fixture
def bundle_copy(tiny_bundle: MakeBundle, tmp_path: Path) -> Path:
    """A writable copy of the openvino-target tiny bundle."""
    return Path(shutil.copytree(tiny_bundle("openvino"), tmp_path / "bundle"))


def test_tampered_file_fails_verification(bundle_copy: Path) -> None:
    weights = bundle_copy / "model.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.bin does not match its size and sha256"):
        edgeseg.runtime.load(bundle_copy)
    assert edgeseg.runtime.load(bundle_copy, verify=False).backend == "openvino"


def test_missing_file_fails_verification(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is listed in the manifest but missing"):
        edgeseg.runtime.load(bundle_copy, "onnxruntime")


def test_manifest_shape_must_match_the_model(bundle_copy: Path) -> None:
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["input"]["shape"] = [1, 3, 32, 32]  # a valid manifest that disagrees with its graph
    manifest["input"]["example_size"] = manifest["input"]["resize"]["size"] = [32, 32]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"input shape \(1, 3, 32, 32\) does not match"):
        edgeseg.runtime.load(bundle_copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not an edgeseg bundle"):
        edgeseg.runtime.load(tmp_path)


# ---- Segmenter -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["onnx", "openvino"])
def segmenter(request: pytest.FixtureRequest, tiny_bundle: MakeBundle) -> edgeseg.runtime.Segmenter:
    return edgeseg.runtime.load(tiny_bundle(request.param))


def test_segmenter_properties(segmenter: edgeseg.runtime.Segmenter) -> None:
    assert segmenter.input_size == (64, 96)
    assert segmenter.num_classes == 5
    text = repr(segmenter)
    assert text.startswith("Segmenter(model='tiny-conv', backend=")
    assert "input=64x96" in text and "classes=5" in text and "precision='fp32'" in text


def test_preprocess(segmenter: edgeseg.runtime.Segmenter) -> None:
    image = random_image(64, 96)
    x = segmenter.preprocess(image)
    assert x.shape == IN_SHAPE and x.dtype == np.float32 and x.flags.c_contiguous
    expected = (image.astype(np.float64) - MEAN) / STD  # already at the input size: no resampling
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), expected, rtol=0, atol=1e-5)
    assert segmenter.preprocess(random_image(300, 200)).shape == IN_SHAPE


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (
            np.zeros((1, 3, 32, 32), np.float32),
            r"shape \(1, 3, 64, 96\), got float32 array of shape \(1, 3, 32, 32\)",
        ),
        (np.zeros(IN_SHAPE, np.float64), "got float64 array"),
        (np.zeros((64, 96, 3), np.uint8), "preprocess"),
        ([[0.0]], "got list"),
    ],
)
def test_logits_rejects_bad_input(segmenter: edgeseg.runtime.Segmenter, x: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segmenter.logits(x)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(120, 160), (64, 96), (33, 47)])
def test_predict_matches_reference(segmenter: edgeseg.runtime.Segmenter, tiny_conv, size) -> None:
    image = random_image(*size, seed=size[0])
    labels = segmenter.predict(image)
    assert labels.shape == size and labels.dtype == np.uint8
    assert labels.max() < 5
    x = segmenter.preprocess(image)
    reference = labels_from_logits(tiny_conv(x)[0].astype(np.float32), size)
    assert (labels == reference).mean() > 0.99  # only near-ties may differ by float rounding


def test_predict_converts_grayscale_and_rgba(segmenter: edgeseg.runtime.Segmenter) -> None:
    gray = random_image(40, 50)[:, :, 0]
    np.testing.assert_array_equal(segmenter.predict(gray), segmenter.predict(np.dstack([gray] * 3)))
    rgba = np.dstack([random_image(40, 50), np.zeros((40, 50), np.uint8)])
    np.testing.assert_array_equal(segmenter.predict(rgba), segmenter.predict(rgba[:, :, :3]))
    with pytest.raises(ImageError, match="convert it to uint8"):
        segmenter.predict(random_image(40, 50) / 255.0)


def test_stream_yields_one_map_per_frame(segmenter: edgeseg.runtime.Segmenter) -> None:
    sizes = [(48, 64), (64, 96), (30, 40)]
    frames = [random_image(*s, seed=i) for i, s in enumerate(sizes)]
    maps = list(segmenter.stream(iter(frames)))
    assert [m.shape for m in maps] == sizes
    for frame, labels in zip(frames, maps, strict=True):
        np.testing.assert_array_equal(labels, segmenter.predict(frame))
    endless = (random_image(24, 32, seed=i) for i in itertools.count())  # a camera never ends
    assert len(list(itertools.islice(segmenter.stream(endless), 2))) == 2


def test_logits_of_preprocessed_image(segmenter: edgeseg.runtime.Segmenter, tiny_conv) -> None:
    image = random_image(64, 96, seed=9)
    x = normalize(image.astype(np.float32), MEAN, STD)
    np.testing.assert_allclose(segmenter.logits(segmenter.preprocess(image)), tiny_conv(x), rtol=0, atol=1e-4)


def test_segmenter_closes_its_runner(tiny_bundle: MakeBundle) -> None:
    with edgeseg.runtime.load(tiny_bundle("openvino")) as seg:
        assert seg.predict(random_image(64, 96)).shape == (64, 96)
        assert not seg.closed
    assert seg.closed and seg.runner.closed and repr(seg).endswith(", closed)")
    with pytest.raises(RunnerClosedError, match="is closed; load the model again"):
        seg.predict(random_image(64, 96))
    seg.close()


# ---- no torch ---------------------------------------------------------------------------------------


def test_runtime_imports_neither_torch_nor_models(tiny_bundle: MakeBundle) -> None:
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import edgeseg.runtime
        assert "onnxruntime" not in sys.modules and "openvino" not in sys.modules, "backends load lazily"
        for path in sys.argv[1:]:
            seg = edgeseg.runtime.load(path)
            labels = seg.predict(np.zeros((50, 70, 3), np.uint8))
            assert labels.shape == (50, 70), labels.shape
        leaked = [m for m in ("torch", "edgeseg.models", "edgeseg.export") if m in sys.modules]
        assert not leaked, leaked
        print("ok", sorted(m for m in ("onnxruntime", "openvino") if m in sys.modules))
        """
    )
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny_bundle("onnx")), str(tiny_bundle("openvino"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok ['onnxruntime', 'openvino']"


def test_load_refuses_an_absurd_thread_count(tiny_bundle: MakeBundle) -> None:
    too_many = 4 * (os.cpu_count() or 1) + 1
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(ValueError, match=f"{too_many} threads is more than 4× this machine's"):
            edgeseg.runtime.load(tiny_bundle("openvino"), backend, threads=too_many)

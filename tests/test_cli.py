"""The `edgeseg` command line, run as a user would, in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.runtimes.base import usable_cores

pytestmark = pytest.mark.slow


def edgeseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "tiny-ov"
    done = edgeseg(
        "export", "--model", "afformer-tiny", "--input-size", "128x160", "--target", "openvino", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "parity vs PyTorch" in done.stdout and "openvino" in done.stdout
    # stage lines while it works; nothing from the exporter's or the runtimes' own logs
    assert "exporting the ONNX graph (torch.onnx, onnxslim) …" in done.stderr.splitlines()
    assert "[torch.onnx]" not in done.stdout + done.stderr
    return out


def test_models_lists_params_and_macs():
    done = edgeseg("models")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("afformer-tiny "))
    assert "2,127,306" in line and "3.09" in line


def test_export_writes_a_bundle(cli_bundle):
    manifest = json.loads((cli_bundle / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [1, 3, 128, 160] and manifest["parity"]["passed"]


@pytest.mark.parametrize("color", [False, True])
def test_predict_writes_a_mask_at_the_image_size(cli_bundle, tmp_path, color):
    image = tmp_path / "in.jpg"
    rgb = np.random.default_rng(0).integers(0, 256, (75, 203, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(image)
    mask = tmp_path / "mask.png"
    done = edgeseg("predict", str(cli_bundle), str(image), "--out", str(mask), *(["--color"] if color else []))
    assert done.returncode == 0, done.stderr
    with Image.open(mask) as written:
        assert written.size == (203, 75)
        assert written.mode == ("P" if color else "L")
        assert np.asarray(written).max() < 150


def test_bench_prints_a_table_and_writes_json(cli_bundle, tmp_path):
    report = tmp_path / "bench.json"
    done = edgeseg("bench", str(cli_bundle), "--warmup", "1", "--iters", "3", "--threads", "1", "--json", str(report))
    assert done.returncode == 0, done.stderr
    assert "afformer-tiny" in done.stdout and "p99" in done.stdout
    (record,) = json.loads(report.read_text())
    assert record["backend"] == "openvino" and record["threads"] == 1 and not record["torch_imported"]
    assert record["latency_ms"]["p50"] > 0 and record["peak_rss_mb"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--model", "nope", "--out", "x"], "unknown model 'nope'"),
        (["export", "--model", "afformer-tiny", "--input-size", "100x100", "--out", "x"], "multiples of 32"),
        (["predict", "missing-bundle", "img.png", "--out", "m.png"], "not an edgeseg bundle"),
    ],
)
def test_errors_are_one_clear_line(args, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_predict_reports_a_missing_image(cli_bundle, tmp_path):
    done = edgeseg("predict", str(cli_bundle), str(tmp_path / "none.png"), "--out", str(tmp_path / "m.png"))
    assert done.returncode == 2 and "does not exist" in done.stderr


# ---- untrusted arguments and files: refused in one line, before any work --------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "b", "i.png", "--out", "m.png", "--threads", "100000"], "argument --threads: 100000 threads"),
        (["predict", "b", "i.png", "--out", "m.png", "--threads", "2000"], "argument --threads: 2000 threads"),
        (["bench", "b", "--threads", "1", "99999"], "argument --threads: 99999 threads"),
        (["train", "--model", "m", "--data", "d", "--out", "o", "--threads", "0"], "not a positive integer"),
        (["export", "--model", "m", "--out", "o", "--tolerance", "nan"], "argument --tolerance: nan is not a finite"),
        (["export", "--model", "m", "--out", "o", "--tolerance=-1e-4"], "argument --tolerance: -1e-4 is not a posi"),
        (["export", "--model", "m", "--out", "o", "--opset", "7"], "argument --opset: opset 7 is not between 18"),
        (["export", "--model", "m", "--out", "o", "--gate", "agreement=inf"], "argument --gate: gate 'agreement=inf'"),
        (["export", "--model", "m", "--out", "o", "--num-classes", "10000000"], "more than the 65536"),
        (["export", "--model", "m", "--out", "o", "--input-size", "0x512"], "argument --input-size: size '0x512'"),
        (["train", "--model", "m", "--data", "d", "--out", "o", "--lr", "inf"], "argument --lr: inf is not a finite"),
        (["data", "synthetic", "--out", "o", "--count", "2", "--size", "8x8", "--val-fraction", "1"], "between 0 and"),
        (["data", "synthetic", "--out", "o", "--count", "2", "--size", "8x8", "--seed", "-3"], "argument --seed"),
    ],
)
def test_bad_numbers_are_refused_at_parse_time(args, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_predict_into_a_folder_writes_the_image_name(tiny_bundle, tmp_path):
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "cat.jpg")
    (tmp_path / "masks").mkdir()
    done = edgeseg("predict", str(tiny_bundle("onnx")), str(tmp_path / "cat.jpg"), "--out", str(tmp_path / "masks"))
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "masks" / "cat.png") as written:
        assert written.size == (40, 30)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("mask.jpg", "does not hold class indices exactly; give a .png, or add --color"),
        ("in.png/mask.png", "in.png is a file, not a folder"),
        ("in.png", "input"),
    ],
)
def test_predict_refuses_bad_output_paths(tiny_bundle, tmp_path, out, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "predict", str(tiny_bundle("onnx")), "in.png", "--out", out],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_predict_creates_the_output_folders_and_takes_the_format_from_the_suffix(tiny_bundle, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    for out, image_format in (("new/dir/mask.png", "PNG"), ("new/colour.jpg", "JPEG"), ("new/mask.tif", "TIFF")):
        color = ["--color"] if out.endswith(".jpg") else []
        done = edgeseg(
            "predict", str(tiny_bundle("onnx")), str(tmp_path / "in.png"), "--out", str(tmp_path / out), *color
        )
        assert done.returncode == 0, done.stderr
        with Image.open(tmp_path / out) as written:
            assert written.format == image_format and written.size == (8, 8)


def test_predict_reports_a_corrupt_image_in_one_line(tiny_bundle, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    done = edgeseg("predict", str(tiny_bundle("onnx")), str(tmp_path / "broken.png"), "--out", str(tmp_path / "m.png"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path / 'broken.png'}: is not a readable" in done.stderr


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.txt", b"some text", "is not an ONNX model"),
        ("model.onnx", b"hello world", "is not an ONNX model"),
        ("empty.onnx", b"", "is not an ONNX model (no graph nodes"),
        ("folder.onnx", None, "is not an edgeseg bundle"),
    ],
)
def test_lint_refuses_files_that_are_not_onnx(tmp_path, name, data, message):
    path = tmp_path / name
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    done = edgeseg("lint", str(path), "--target", "openvino")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


# ---- predict on videos, folders, cameras and streams ----------------------------------------------------


def write_mp4(path: Path, count: int, size: tuple[int, int] = (48, 80)) -> list[np.ndarray]:
    """A short mp4 written with OpenCV; returns its frames as OpenCV decodes them, in RGB."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size[1], size[0]), True)
    for _ in range(count):
        writer.write(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    writer.release()
    capture, decoded = cv2.VideoCapture(str(path)), []
    ok, bgr = capture.read()
    while ok:
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        ok, bgr = capture.read()
    return decoded


def test_predict_segments_every_frame_of_a_video(tiny_bundle, tmp_path):
    import edgeseg.runtime as runtime

    decoded = write_mp4(tmp_path / "clip.mp4", 7)
    assert len(decoded) == 7
    (tmp_path / "masks").mkdir()
    report = tmp_path / "timings.json"
    done = edgeseg(
        "predict", str(tiny_bundle("onnx")), str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "masks"),
        "--json", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "7 frame(s) of video" in done.stdout
    written = sorted((tmp_path / "masks").iterdir())
    assert [p.name for p in written] == [f"clip_{i:06d}.png" for i in range(7)]
    with runtime.load(tiny_bundle("onnx")) as seg:
        for path, frame in zip(written, decoded, strict=True):
            np.testing.assert_array_equal(np.asarray(Image.open(path)), seg.predict(frame))
    timings = json.loads(report.read_text())
    assert timings["frames"] == 7 and timings["kind"] == "video" and timings["fps"] > 0
    assert timings["inferences"] == min(2, usable_cores())  # two lanes by default where there are 2 cores
    assert [f["index"] for f in timings["per_frame"]] == list(range(7))
    assert all(f["latency_ms"] > 0 and f["decode_ms"] >= 0 for f in timings["per_frame"])  # independent spans


def test_predict_live_plays_a_video_at_its_rate_and_writes_the_segmented_frames(tiny_bundle, tmp_path):
    import edgeseg.runtime as runtime

    decoded = write_mp4(tmp_path / "clip.mp4", 12)  # 25 FPS: 0.44 s from the first frame to the last
    (tmp_path / "masks").mkdir()
    report = tmp_path / "live.json"
    done = edgeseg(
        "predict", str(tiny_bundle("onnx")), str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "masks"),
        "--live", "--json", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    timings = json.loads(report.read_text())
    assert timings["read"] == 12 and timings["frames"] + timings["dropped"] == 12 and timings["frames"] >= 1
    assert timings["seconds"] >= 11 / 25  # played at the file's rate, not as fast as it decodes
    assert f"live: 12 frame(s) read, {timings['dropped']} dropped" in done.stdout
    assert timings["latency_ms"]["p50"] > 0
    indices = [f["index"] for f in timings["per_frame"]]
    assert indices == sorted(indices) and len(indices) == timings["frames"]
    written = sorted((tmp_path / "masks").iterdir())
    assert [p.name for p in written] == [f"clip_{i:06d}.png" for i in indices]
    with runtime.load(tiny_bundle("onnx")) as seg:
        for path, index in zip(written, indices, strict=True):
            np.testing.assert_array_equal(np.asarray(Image.open(path)), seg.predict(decoded[index]))


def test_predict_takes_the_inferences_of_video_mode_only(tiny_bundle, tmp_path):
    write_mp4(tmp_path / "clip.mp4", 4)
    (tmp_path / "masks").mkdir()
    report = tmp_path / "timings.json"
    args = ["predict", str(tiny_bundle("onnx")), str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "masks")]
    done = edgeseg(*args, "--inferences", "3", "--json", str(report))
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["inferences"] == 3
    refused = edgeseg(*args, "--live", "--inferences", "2")
    assert refused.returncode == 2 and "live mode runs one at a time" in refused.stderr


def test_live_drops_the_frames_that_arrive_while_the_model_is_busy(tiny_bundle, tmp_path):
    import time

    import edgeseg.runtime as runtime
    from edgeseg.predict import segment_live
    from edgeseg.video import describe_source, open_source
    from edgeseg.video_out import LabelPngFolder

    decoded = write_mp4(tmp_path / "clip.mp4", 30)

    class Slow:
        """A real Segmenter that takes at least 40 ms a frame (a model slower than the camera)."""

        def __init__(self, segmenter: runtime.Segmenter) -> None:
            self.segmenter = segmenter

        def predict(self, image: np.ndarray) -> np.ndarray:
            time.sleep(0.04)
            return self.segmenter.predict(image)

    with runtime.load(tiny_bundle("onnx")) as seg, open_source(describe_source(str(tmp_path / "clip.mp4"))) as source:
        (tmp_path / "masks").mkdir()
        writer = LabelPngFolder(tmp_path / "masks", color=False, inputs=[])
        report = segment_live(Slow(seg), source, writer)  # as fast as the file decodes: a burst of frames
        writer.commit()
        assert report["read"] == 30 and report["dropped"] > 0
        assert report["frames"] + report["dropped"] == 30
        names = sorted(p.name for p in (tmp_path / "masks").iterdir())
        assert names == [f"clip_{f['index']:06d}.png" for f in report["per_frame"]]
        for frame in report["per_frame"]:
            png = np.asarray(Image.open(tmp_path / "masks" / f"clip_{frame['index']:06d}.png"))
            np.testing.assert_array_equal(png, seg.predict(decoded[frame["index"]]))


@pytest.mark.parametrize(("out", "frames"), [("labels.mkv", 5), ("overlay.mp4", 5)])
def test_predict_writes_a_video(tiny_bundle, tmp_path, out, frames):
    import cv2

    import edgeseg.runtime as runtime

    decoded = write_mp4(tmp_path / "clip.mp4", 9)
    done = edgeseg(
        "predict", str(tiny_bundle("onnx")), str(tmp_path / "clip.mp4"), "--out", str(tmp_path / out),
        "--max-frames", str(frames),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    capture, written = cv2.VideoCapture(str(tmp_path / out)), []
    ok, frame = capture.read()
    while ok:
        written.append(frame)
        ok, frame = capture.read()
    assert len(written) == frames and written[0].shape == (48, 80, 3)
    if out.endswith(".mkv"):
        with runtime.load(tiny_bundle("onnx")) as seg:
            for got, source in zip(written, decoded, strict=False):
                np.testing.assert_array_equal(got[:, :, 0], seg.predict(source))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.mp4", out])


def test_a_truncated_video_is_an_error_and_writes_nothing(tiny_bundle, tmp_path):
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(tmp_path / "whole.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (80, 48), True)
    for value in range(0, 240, 12):
        writer.write(np.full((48, 80, 3), value, np.uint8) + np.arange(80, dtype=np.uint8)[None, :, None])
    writer.release()
    data = (tmp_path / "whole.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    (tmp_path / "masks").mkdir()
    for out in ("masks", "labels.mkv"):
        done = edgeseg("predict", str(tiny_bundle("onnx")), str(tmp_path / "cut.mkv"), "--out", str(tmp_path / out))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "ended early" in done.stderr and "of the 20 frames its container declares" in done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cut.mkv", "masks", "whole.mkv"]


@pytest.mark.parametrize(
    ("source", "out", "message"),
    [
        ("63", "v.mkv", "camera 63 cannot be opened"),
        ("clip.mp4", "m.png", "the source has many frames"),
        ("clip.mp4", "clip.mp4", "is the input"),
        ("notes.mp4", "v.mkv", "video notes.mp4 cannot be opened"),
        ("none.mkv", "v.mkv", "video none.mkv does not exist"),
        ("*.png", "v.mkv", "holds no image files"),
    ],
)
def test_predict_refuses_bad_sources_in_one_line(tiny_bundle, tmp_path, source, out, message):
    write_mp4(tmp_path / "clip.mp4", 2)
    (tmp_path / "notes.mp4").write_text("not a video")
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "predict", str(tiny_bundle("onnx")), source, "--out", out],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "notes.mp4"]


def test_predict_on_a_folder_of_images_never_writes_over_them(tiny_bundle, tmp_path):
    for name in ("a", "b"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
            tmp_path / f"{name}.png"
        )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    done = edgeseg("predict", str(tiny_bundle("onnx")), str(tmp_path), "--out", str(tmp_path))
    assert done.returncode == 2 and "is an input image" in done.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "masks").mkdir()
    done = edgeseg("predict", str(tiny_bundle("onnx")), str(tmp_path), "--out", str(tmp_path / "masks"), "--color")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a.png", "b.png"]

"""Frame sources and label outputs (real OpenCV files), and the pipelined ``Segmenter.stream``.

Cameras and network streams cannot be tested here beyond "cannot be opened" (no camera; network only loopback).
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeseg.runtime
from edgeseg.image_io import LABEL_IMAGE_FORMATS, palette
from edgeseg.imaging import FrameError
from edgeseg.video import Frame, SourceError, TruncatedVideoError, describe_source, open_source
from edgeseg.video_out import LabelPngFolder, VideoFile, check_output, open_writer

cv2 = pytest.importorskip("cv2")

SIZE = (48, 80)  # height, width of the test videos


def blocky_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """RGB frames of 16×16 flat blocks (they survive lossy coding almost unchanged), all different."""
    rng = np.random.default_rng(seed)
    blocks = (SIZE[0] // 16, SIZE[1] // 16, 3)
    return [np.kron(rng.integers(0, 256, blocks, dtype=np.uint8), np.ones((16, 16, 1), np.uint8)) for _ in range(count)]


def write_video(path: Path, frames: list[np.ndarray], fourcc: str, fps: float = 25.0) -> Path:
    """Write RGB ``frames`` with OpenCV (as BGR, the way cameras and files hold them)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (SIZE[1], SIZE[0]), True)
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decode_rgb(path: Path) -> list[np.ndarray]:
    """Every frame of a video as OpenCV decodes it, turned RGB."""
    capture, frames = cv2.VideoCapture(str(path)), []
    ok, bgr = capture.read()
    while ok:
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        ok, bgr = capture.read()
    capture.release()
    return frames


@pytest.fixture(scope="module")
def segmenter(tiny_bundle) -> edgeseg.runtime.Segmenter:
    with edgeseg.runtime.load(tiny_bundle("onnx")) as seg:
        yield seg


# ---- sources ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("0", "camera"),
        ("12", "camera"),
        ("rtsp://127.0.0.1:8554/cam", "stream"),
        ("HTTP://example.com/v.mp4", "stream"),
        ("photo.JPG", "image"),
        ("clip.mp4", "video"),
        ("clip", "video"),
        ("frames/*.png", "images"),
    ],
)
def test_describe_source_classifies_without_opening(text: str, kind: str) -> None:
    assert describe_source(text).kind == kind


@pytest.mark.parametrize(("text", "message"), [("", "empty"), ("64", "larger than 63"), ("ftp://h/x", "'ftp'")])
def test_describe_source_refuses_nonsense(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        describe_source(text)


def test_a_video_file_is_read_as_rgb_frames_with_positions(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", blocky_frames(6), "mp4v", fps=25.0)
    expected = decode_rgb(path)
    with open_source(str(path)) as source:
        assert source.kind == "video" and source.frame_count == 6 and source.fps == pytest.approx(25.0)
        frames = list(source)
    assert [f.index for f in frames] == list(range(6))
    assert [f.name for f in frames] == [f"clip_{i:06d}" for i in range(6)]
    assert [f.position for f in frames] == pytest.approx([i / 25.0 for i in range(6)])
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(frames))
    for frame, rgb in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(frame.image, rgb)  # converted from OpenCV's BGR


def test_a_truncated_video_yields_what_decodes_then_says_how_much(tmp_path: Path) -> None:
    path = write_video(tmp_path / "whole.mkv", blocky_frames(20), "FFV1")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    read = []
    with open_source(str(cut)) as source, pytest.raises(TruncatedVideoError, match=r"ended early: \d+ of the 20"):
        read.extend(source)
    assert 0 < len(read) < 20


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda d: d / "none.mp4", FileNotFoundError, "does not exist"),
        (lambda d: d / "cut.mp4", SourceError, "cannot be opened: OpenCV reads no video"),  # index (moov) cut off
        (lambda d: d / "notes.avi", SourceError, "cannot be opened"),
        (lambda d: d / "empty", SourceError, "holds no image files"),
        (lambda d: str(d / "*.jpg"), SourceError, "holds no image files"),
    ],
)
def test_bad_sources_are_refused_clearly(tmp_path: Path, make, error, message) -> None:
    whole = write_video(tmp_path / "whole.mp4", blocky_frames(10), "mp4v")
    (tmp_path / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (tmp_path / "notes.avi").write_text("not a video")
    (tmp_path / "empty").mkdir()
    with pytest.raises(error, match=message):
        open_source(str(make(tmp_path)))


def test_a_missing_camera_and_an_unreachable_stream_cannot_be_opened() -> None:
    with pytest.raises(SourceError, match="camera 63 cannot be opened"):
        open_source("63")
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceError, match=f"stream http://127.0.0.1:{port}/v.mp4 cannot be opened"):
        open_source(f"http://127.0.0.1:{port}/v.mp4")


def test_a_folder_and_a_glob_read_images_in_name_order(tmp_path: Path) -> None:
    frames = blocky_frames(3)
    for name, frame in zip(["b", "a", "c"], frames):
        Image.fromarray(frame).save(tmp_path / f"{name}.png")
    (tmp_path / "notes.txt").write_text("skipped")
    for text in (str(tmp_path), str(tmp_path / "*.png")):
        with open_source(text) as source:
            read = list(source)
        assert [f.name for f in read] == ["a", "b", "c"] and source.frame_count == 3
        np.testing.assert_array_equal(read[0].image, frames[1])


# ---- outputs ------------------------------------------------------------------------------------


def frame_of(index: int, image: np.ndarray) -> Frame:
    return Frame(index, image, f"f_{index:06d}", 0.0)


def test_a_label_video_gives_the_labels_back_exactly(tmp_path: Path) -> None:
    labels = [np.random.default_rng(i).integers(0, 150, SIZE, dtype=np.uint8) for i in range(5)]
    writer = VideoFile(tmp_path / "labels.mkv", fps=10.0, num_classes=150)
    for i, label_map in enumerate(labels):
        writer.write(frame_of(i, np.zeros((*SIZE, 3), np.uint8)), label_map)
    writer.commit()
    decoded = [frame[:, :, 0] for frame in decode_rgb(tmp_path / "labels.mkv")]
    assert len(decoded) == 5
    for got, want in zip(decoded, labels, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.mkv"]


def test_an_overlay_video_has_every_frame(tmp_path: Path) -> None:
    frames = blocky_frames(4)
    writer = VideoFile(tmp_path / "overlay.mp4", fps=None, num_classes=300)
    for i, frame in enumerate(frames):
        writer.write(frame_of(i, frame), np.full(SIZE, 257 + i, np.uint16))
    assert "4 frames at 30 FPS" in writer.commit()
    assert len(decode_rgb(tmp_path / "overlay.mp4")) == 4


@pytest.mark.parametrize("out", ["labels.mkv", "overlay.mp4", "pngs"])
def test_an_aborted_output_leaves_nothing(tmp_path: Path, out: str) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    writer = LabelPngFolder(folder, False, []) if out == "pngs" else VideoFile(tmp_path / out, 25.0, 5)
    writer.write(frame_of(0, blocky_frames(1)[0]), np.zeros(SIZE, np.uint8))
    assert any(".partial-" in p.name for p in tmp_path.rglob("*"))  # a hidden stage, not the output yet
    with pytest.raises(ValueError, match=r"a video needs frames of one size|would overwrite"):
        other = np.zeros((16, 16), np.uint8) if out != "pngs" else np.zeros(SIZE, np.uint8)
        writer.write(frame_of(0, np.zeros((*other.shape, 3), np.uint8)), other)
    writer.abort()
    assert [p.name for p in tmp_path.rglob("*")] == ["pngs"]


def test_a_label_video_refuses_more_than_256_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="up to 256 classes"):
        VideoFile(tmp_path / "labels.mkv", 25.0, 300)


@pytest.mark.parametrize(
    ("out", "single", "message"),
    [
        ("m.png", False, "the source has many frames"),
        ("m.avi", False, r"\.avi is not an output edgeseg writes"),
        ("m.jpg", True, r"\.jpg does not hold class indices exactly; give a \.png, or add --color"),
        ("file.txt/m.mkv", False, "file.txt is a file, not a folder"),
    ],
)
def test_check_output_refuses_bad_outputs(tmp_path: Path, monkeypatch, out: str, single: bool, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("")
    with pytest.raises((ValueError, NotADirectoryError), match=message):
        check_output(out, single, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # nothing created for a refused path


@pytest.mark.parametrize(
    ("out", "single", "kind"),
    [("new/dir/m.png", True, "image"), ("new/dir/v.mkv", False, "video"), ("new/labels", False, "folder")],
)
def test_check_output_creates_missing_folders(tmp_path: Path, monkeypatch, out: str, single: bool, kind: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_output(out, single, []) == (kind, Path(out))
    assert (Path(out) if kind == "folder" else Path(out).parent).is_dir()
    assert not Path(out).exists() or kind == "folder"  # the file itself is written later, under a temporary name


# ---- pipelined stream ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_stream_gives_exactly_the_serial_results_in_order(segmenter, depth: int) -> None:
    rng = np.random.default_rng(depth)
    frames = [rng.integers(0, 256, (int(rng.integers(20, 90)), 70, 3), dtype=np.uint8) for _ in range(40)]
    maps = list(segmenter.stream(frames, depth=depth))
    assert len(maps) == len(frames)
    for frame, labels in zip(frames, maps, strict=True):
        np.testing.assert_array_equal(labels, segmenter.predict(frame))


@pytest.mark.parametrize("target", ["onnx", "openvino"])
@pytest.mark.parametrize("inferences", [2, 3])
def test_stream_in_lanes_gives_exactly_the_serial_results(tiny_bundle, target: str, inferences: int) -> None:
    rng = np.random.default_rng(inferences)
    frames = [rng.integers(0, 256, (int(rng.integers(20, 90)), 70, 3), dtype=np.uint8) for _ in range(30)]
    with edgeseg.runtime.load(tiny_bundle(target), threads=2) as seg:
        made = []
        lanes = seg.runner.lanes

        def spy(count: int):
            made.extend(lanes(count))
            return made

        seg.runner.lanes = spy  # type: ignore[method-assign]
        maps = list(seg.stream(frames, inferences=inferences))
        assert len(made) == inferences and all(lane.closed for lane in made)  # the stream's own lanes
        assert not seg.closed
        for frame, labels in zip(frames, maps, strict=True):
            np.testing.assert_array_equal(labels, seg.predict(frame))


def test_lanes_split_the_runners_threads(tiny_bundle) -> None:
    from edgeseg.runtimes import create_runner

    bundle = tiny_bundle("openvino")
    with create_runner("onnxruntime", bundle / "model.onnx", threads=2) as ort_runner:
        assert ort_runner.lanes(1) == [ort_runner]
        lanes = ort_runner.lanes(2)
        assert len({id(lane) for lane in lanes}) == 2 and [lane.threads for lane in lanes] == [1, 1]
        for lane in lanes:
            lane.close()
        with pytest.raises(ValueError, match="positive int count"):
            ort_runner.lanes(0)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    with create_runner("openvino", bundle / "model.xml", threads=2, config=config) as ov_runner:
        first, second = ov_runner.lanes(2)
        assert first is second and first is not ov_runner  # one model compiled with two streams
        assert int(first._compiled.get_property("NUM_STREAMS")) == 2
        assert first.config["INFERENCE_PRECISION_HINT"] == "f32"
        first.close()


@pytest.mark.parametrize("inferences", [0, -2, True, 1.5])
def test_stream_refuses_a_bad_number_of_inferences(segmenter, inferences) -> None:
    with pytest.raises(ValueError, match="inferences must be a positive int"):
        segmenter.stream([], inferences=inferences)


def test_stream_reads_a_bounded_number_of_frames_ahead(segmenter) -> None:
    pulled = []

    def camera():
        for i in itertools.count():
            pulled.append(i)
            yield blocky_frames(1, seed=i)[0]

    stream = segmenter.stream(camera(), depth=3)
    for _ in range(5):
        next(stream)
    assert 5 + 2 <= len(pulled) <= 5 + 3  # pipelined: read ahead, but boundedly
    stream.close()  # waits for the frames in flight
    with pytest.raises(StopIteration):
        next(stream)


def test_a_bad_frame_after_good_ones_is_raised_after_them(segmenter) -> None:
    good = blocky_frames(5)
    frames = iter([*good[:3], np.zeros((8, 8, 3), np.float64), good[3], good[4]])
    stream = segmenter.stream(frames, depth=4)
    assert len([next(stream) for _ in range(3)]) == 3
    with pytest.raises(FrameError, match="frame 3"):
        next(stream)
    assert len(list(segmenter.stream(frames))) == 2  # the frames after the bad one are still unread


@pytest.mark.parametrize("depth", [0, -1, True, 2.5])
def test_stream_refuses_a_bad_depth(segmenter, depth) -> None:
    with pytest.raises(ValueError, match="depth must be a positive int"):
        segmenter.stream([], depth=depth)


def test_without_opencv_videos_explain_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    import sys

    path = write_video(tmp_path / "clip.mp4", blocky_frames(2), "mp4v")
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if opencv-python-headless were not installed
    with pytest.raises(ImportError, match=r"pip install 'edgeseg\[video\]'"):
        open_source(str(path))
    Image.fromarray(blocky_frames(1)[0]).save(tmp_path / "still.png")
    with open_source(str(tmp_path / "still.png")) as source:  # still images never need OpenCV
        assert len(list(source)) == 1


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_label_images_take_the_format_of_their_suffix(tmp_path: Path, suffix: str) -> None:
    labels = np.random.default_rng(0).integers(0, 6, (30, 40), dtype=np.uint8)
    kind, path = check_output(str(tmp_path / f"m{suffix}"), True, [])
    writer = open_writer(kind, path, color=False, fps=None, num_classes=6, inputs=[])
    writer.write(Frame(0, np.zeros((30, 40, 3), np.uint8), "m", 0.0), labels)
    writer.commit()
    with Image.open(path) as image:
        assert image.format == LABEL_IMAGE_FORMATS[suffix][0]
        np.testing.assert_array_equal(np.asarray(image), labels)


def test_a_coloured_jpeg_is_written_as_jpeg_in_the_palette_colours(tmp_path: Path) -> None:
    labels = np.zeros((32, 48), np.uint8)
    labels[:, 24:] = 3
    kind, path = check_output(str(tmp_path / "m.jpg"), True, [], color=True)
    writer = open_writer(kind, path, color=True, fps=None, num_classes=6, inputs=[])
    writer.write(Frame(0, np.zeros((32, 48, 3), np.uint8), "m", 0.0), labels)
    writer.commit()
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        rgb = np.asarray(image).astype(int)
    assert np.abs(rgb[16, 40] - palette()[3].astype(int)).max() <= 8  # lossy, but the class colour

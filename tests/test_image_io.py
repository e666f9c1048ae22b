"""Reading image files honestly: orientation, bit depth, frames, size limits and broken files; bad stream frames."""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeseg.runtime
from edgeseg.image_io import MAX_PIXELS_ENV, max_image_pixels, read_frames, read_image
from edgeseg.imaging import FrameError, ImageError, ImageFileError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)

# What each EXIF orientation asks a viewer to do, in numpy.
ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def png_bytes(width: int, height: int, depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG written by hand (so its header can claim anything)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    image.save(path, exif=exif)
    np.testing.assert_array_equal(read_image(path), ORIENTED[orientation](RGB))


def test_exif_rotated_jpeg_is_upright(tmp_path: Path) -> None:
    tall = np.zeros((40, 24, 3), np.uint8)
    tall[:20] = 255  # white top half
    image = Image.fromarray(np.rot90(tall, 1))  # stored lying on its side, as cameras do
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "photo.jpg")
    assert out.shape == (40, 24, 3)
    assert out[:18].mean() > 240 and out[22:].mean() < 15


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    levels = np.array([[0, 128, 129, 257, 32768, 65535]], np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    out = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 1, 128, 255])
    assert (out == out[:, :, :1]).all()


def test_16_bit_rgb_png_keeps_its_levels(tmp_path: Path) -> None:
    levels = np.array([[[65535, 32768, 0], [257, 514, 12850]]], ">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in levels)
    (tmp_path / "deep.png").write_bytes(png_bytes(2, 1, 16, 2, raw))
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), [[[255, 128, 0], [1, 2, 50]]])


def test_float_tiff_in_0_1_is_scaled(tmp_path: Path) -> None:
    gray = np.array([[0.0, 0.5, 1.0, 0.2]], np.float32)
    Image.fromarray(gray).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif")[0, :, 0], [0, 128, 255, 51])


@pytest.mark.parametrize(("values", "message"), [([0.0, 2.5], r"values 0\.\.2\.5"), ([0.0, np.nan], "NaN or inf")])
def test_float_tiff_out_of_range_is_refused(tmp_path: Path, values: list[float], message: str) -> None:
    Image.fromarray(np.array([values], np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageFileError, match=message) as info:
        read_image(tmp_path / "f.tif")
    assert "f.tif" in str(info.value)


def animated_gif(path: Path, count: int = 3) -> None:
    frames = [Image.fromarray(np.full((4, 5, 3), 40 * i, np.uint8)) for i in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def test_animated_gif_is_refused_with_its_frame_count(tmp_path: Path) -> None:
    animated_gif(tmp_path / "a.gif")
    with pytest.raises(ImageFileError, match=r"a\.gif: has 3 frames.*read_frames"):
        read_image(tmp_path / "a.gif")


def test_read_frames_yields_every_frame(tmp_path: Path) -> None:
    animated_gif(tmp_path / "a.gif")
    frames = list(read_frames(tmp_path / "a.gif"))
    assert [f.shape for f in frames] == [(4, 5, 3)] * 3
    assert [int(f[0, 0, 0]) for f in frames] == [0, 40, 80]
    Image.fromarray(RGB).save(tmp_path / "still.png")
    (still,) = read_frames(tmp_path / "still.png")
    np.testing.assert_array_equal(still, RGB)


def test_huge_header_is_refused_before_decoding(tmp_path: Path) -> None:
    # 12000×12000 claimed by ~1 KB of data: decoding would allocate 144 MB and then fail on the missing rows.
    (tmp_path / "bomb.png").write_bytes(png_bytes(12000, 12000, 8, 0, b"\x00" * 12001))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageFileError, match=r"bomb.png: is 12000x12000 \(HxW\) = 144,000,000 pixels"):
            read_image(tmp_path / "bomb.png")
        # Above Pillow's own limit too: its DecompressionBombError becomes our error.
        (tmp_path / "huge.png").write_bytes(png_bytes(30000, 30000, 8, 0, b"\x00"))
        with pytest.raises(ImageFileError, match=r"huge\.png"):
            read_image(tmp_path / "huge.png", max_pixels=10**10)


def test_pixel_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(RGB).save(tmp_path / "small.png")
    with pytest.raises(ImageFileError, match=r"is 6x9 \(HxW\) = 54 pixels, over the limit of 53"):
        read_image(tmp_path / "small.png", max_pixels=53)
    assert read_image(tmp_path / "small.png", max_pixels=54).shape == (6, 9, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "50")
    assert max_image_pixels() == 50
    with pytest.raises(ImageFileError, match="over the limit of 50"):
        read_image(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_PIXELS_ENV):
        read_image(tmp_path / "small.png")
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        read_image(tmp_path / "small.png", max_pixels=0)


def broken_files(folder: Path) -> dict[str, Path]:
    """Files that are not readable images, by what is wrong with them."""
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "whole.png")
    whole = (folder / "whole.png").read_bytes()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "whole.jpg")
    files = {
        "empty": b"",
        "text": b"just some text, not pixels\n" * 4,
        "truncated png": whole[: len(whole) // 2],
        "corrupt png": whole[:60] + bytes(200) + whole[260:],
        "truncated jpeg": (folder / "whole.jpg").read_bytes()[:500],
        "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.img"
        paths[name].write_bytes(data)
    return paths


def test_broken_files_raise_one_error_naming_the_file(tmp_path: Path) -> None:
    for name, path in broken_files(tmp_path).items():
        with pytest.raises(ImageFileError) as info:
            read_image(path)
        assert str(path) in str(info.value), name
        assert isinstance(info.value, ImageError) and isinstance(info.value, ValueError)
        assert info.value.path == path


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "none.png")
    with pytest.raises(ImageFileError, match="is not a file"):
        read_image(tmp_path)


# ---- bad frames in Segmenter.stream ------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmenter(tiny_bundle) -> edgeseg.runtime.Segmenter:
    return edgeseg.runtime.load(tiny_bundle("onnx"))


def frames_with_a_bad_one() -> list[object]:
    good = [RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    return [good[0], np.zeros((24, 32, 3), np.float32) + 7.0, good[1], good[2]]


def test_a_bad_frame_raises_naming_its_index_and_the_stream_can_resume(segmenter) -> None:
    frames = iter(frames_with_a_bad_one())
    stream = segmenter.stream(frames)
    assert next(stream).shape == (24, 32)
    with pytest.raises(FrameError, match="frame 1: got a float32 image") as info:
        next(stream)
    assert info.value.index == 1 and isinstance(info.value, ImageError)
    assert [m.shape for m in segmenter.stream(frames)] == [(24, 32), (24, 32)]  # the rest is still there


def test_skip_bad_frames_yields_none_in_place_and_logs(segmenter, caplog: pytest.LogCaptureFixture) -> None:
    frames = frames_with_a_bad_one()
    with caplog.at_level(logging.WARNING, logger="edgeseg.runtime"):
        maps = list(segmenter.stream(frames, skip_bad_frames=True))
    assert [m is None for m in maps] == [False, True, False, False]
    np.testing.assert_array_equal(maps[3], segmenter.predict(frames[3]))
    assert "frame 1 skipped: got a float32 image" in caplog.text

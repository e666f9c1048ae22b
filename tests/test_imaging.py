"""Input checks, bilinear resizing, normalisation and label maps (numpy only)."""

from __future__ import annotations

import math
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg import imaging
from edgeseg.imaging import ImageError, as_rgb_uint8, labels_from_logits, normalize, resize_bilinear


def reference_resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize pixel by pixel: half-pixel centres, source clamped at 0, neighbours at the edge."""
    in_h, in_w, channels = image.shape
    src = image.astype(np.float64)
    out = np.zeros((h, w, channels))

    def neighbours(dst: int, in_size: int, out_size: int) -> tuple[int, int, float]:
        s = max((dst + 0.5) * in_size / out_size - 0.5, 0.0)
        lo = min(math.floor(s), in_size - 1)
        return lo, min(lo + 1, in_size - 1), s - lo

    for y in range(h):
        y0, y1, ly = neighbours(y, in_h, h)
        for x in range(w):
            x0, x1, lx = neighbours(x, in_w, w)
            top = (1 - lx) * src[y0, x0] + lx * src[y0, x1]
            bottom = (1 - lx) * src[y1, x0] + lx * src[y1, x1]
            out[y, x] = (1 - ly) * top + ly * bottom
    return out


def unchunked_labels(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsample the whole C×h×w tensor at once, then argmax."""
    return resize_bilinear(logits.transpose(1, 2, 0), size).argmax(axis=2)


# ---- resize_bilinear ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_size", [(1, 1), (1, 5), (4, 1), (5, 7), (8, 3)])
@pytest.mark.parametrize("out_size", [(1, 1), (1, 6), (3, 1), (2, 3), (5, 7), (11, 4), (16, 21)])
def test_resize_matches_reference(in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(in_size) * 31 + sum(out_size))
    image = rng.integers(0, 256, (*in_size, 3), dtype=np.uint8)
    out = resize_bilinear(image, out_size)
    assert out.shape == (*out_size, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference_resize(image, *out_size), rtol=0, atol=1e-3)
    floats = rng.standard_normal((*in_size, 2))
    np.testing.assert_allclose(
        resize_bilinear(floats, out_size), reference_resize(floats, *out_size), rtol=0, atol=1e-5
    )


def test_resize_known_values() -> None:
    row = np.array([[[0.0], [10.0]]])  # 1×2×1
    np.testing.assert_allclose(resize_bilinear(row, (1, 4))[0, :, 0], [0.0, 2.5, 7.5, 10.0])
    row4 = np.array([[[0.0], [10.0], [20.0], [30.0]]])
    np.testing.assert_allclose(resize_bilinear(row4, (1, 2))[0, :, 0], [5.0, 25.0])  # no antialiasing
    np.testing.assert_allclose(resize_bilinear(row4, (1, 1))[0, :, 0], [15.0])
    np.testing.assert_allclose(resize_bilinear(row4[:, :3], (1, 1))[0, :, 0], [10.0])
    np.testing.assert_allclose(resize_bilinear(np.full((1, 1, 3), 7, np.uint8), (4, 9)), 7.0)


def test_resize_same_size_is_a_float_copy() -> None:
    image = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    out = resize_bilinear(image, (2, 4))
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)
    np.testing.assert_array_equal(resize_bilinear(image.astype(np.uint8), (2, 4)), image)


def test_resize_uint8_equals_float() -> None:
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        resize_bilinear(image, (64, 96)), resize_bilinear(image.astype(np.float64), (64, 96)), atol=1e-4
    )


@pytest.mark.parametrize("size", [(0, 4), (4, -1), (3,), "ab", None])
def test_resize_rejects_bad_sizes(size: object) -> None:
    with pytest.raises(ValueError, match="size"):
        resize_bilinear(np.zeros((4, 4, 3), np.uint8), size)  # type: ignore[arg-type]


@pytest.fixture
def fresh_probe_cache():
    imaging._opencv_is_exact.cache_clear()
    yield
    imaging._opencv_is_exact.cache_clear()


CAMERA_PAIRS = [((720, 1280), (512, 512)), ((1080, 1920), (512, 1024)), ((480, 640), (512, 512))]
ODD_PAIRS = [((1, 128), (513, 1920)), ((7, 5), (1920, 333)), ((720, 480), (255, 31)), ((5, 7), (16, 21))]


@pytest.mark.parametrize(("in_size", "out_size"), CAMERA_PAIRS + ODD_PAIRS)
def test_resize_is_bit_identical_to_the_numpy_rule_whichever_path_runs(fresh_probe_cache, in_size, out_size):
    image = np.random.default_rng(3).integers(0, 256, (*in_size, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear(image, out_size), imaging._numpy_resize(image, out_size))


def test_opencv_resizes_camera_frames_and_is_refused_where_it_differs(fresh_probe_cache, monkeypatch):
    pytest.importorskip("cv2", reason="OpenCV (the video extra) is not installed: only the numpy rule runs")
    shape, size = (720, 1280, 3), (512, 512)
    if not imaging._opencv_is_exact(shape, size):  # OpenCV's SIMD kernels depend on the CPU
        warnings.warn("OpenCV's resize differs from the rule on this CPU at 720p → 512²: numpy runs", stacklevel=1)
    calls = []
    real = imaging._opencv_resize

    def off_by_one_ulp(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        calls.append(size)
        out = real(image, size)
        return np.nextafter(out, np.float32(np.inf))

    monkeypatch.setattr(imaging, "_opencv_resize", off_by_one_ulp)
    imaging._opencv_is_exact.cache_clear()
    image = np.random.default_rng(4).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear(image, size), imaging._numpy_resize(image, size))
    assert calls == [size]  # probed once, then the numpy rule ran
    resize_bilinear(image, size)
    assert calls == [size]  # the verdict is cached per pair of sizes
    resize_bilinear(image.astype(np.float32), size)
    assert calls == [size]  # float images always take the numpy rule


def test_without_opencv_the_numpy_rule_runs(fresh_probe_cache, monkeypatch):
    monkeypatch.setattr(imaging, "_opencv", lambda: None)
    assert not imaging._opencv_is_exact((720, 1280, 3), (512, 512))
    image = np.random.default_rng(5).integers(0, 256, (72, 128, 3), dtype=np.uint8)
    np.testing.assert_allclose(resize_bilinear(image, (51, 51)), reference_resize(image, 51, 51), atol=1e-3)


# ---- normalize ------------------------------------------------------------------------------------


def test_normalize() -> None:
    image = np.random.default_rng(1).uniform(0, 255, (5, 7, 3)).astype(np.float32)
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    x = normalize(image, mean, std)
    assert x.shape == (1, 3, 5, 7) and x.dtype == np.float32 and x.flags.c_contiguous
    for c in range(3):
        np.testing.assert_allclose(x[0, c], (image[:, :, c] - mean[c]) / std[c], rtol=1e-6)
    m, s = np.float32(mean), np.float32(std)
    for source in (image, image.astype(np.uint8), image.astype(np.float64)):  # the broadcast formula, bit for bit
        expected = ((source.astype(np.float32) - m) / s).transpose(2, 0, 1)[None]
        np.testing.assert_array_equal(normalize(source, mean, std), expected)
    with pytest.raises(ValueError, match="non-zero"):
        normalize(image, mean, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="H×W×3"):
        normalize(image[:, :, :2], mean, std)


# ---- labels_from_logits ---------------------------------------------------------------------------


def region_logits(classes: int, h: int, w: int, seed: int) -> np.ndarray:
    """Logits of a few smooth regions (as a trained model gives), so most coarse cells agree."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    logits = rng.standard_normal((classes, h, w)).astype(np.float32) * 0.1
    for k, (cy, cx) in enumerate(rng.uniform(0, 1, (4, 2)) * (h, w)):
        logits[k * 2] += 20 - np.hypot(yy - cy, xx - cx)
    return logits


@pytest.mark.parametrize("size", [(64, 96), (61, 101), (5, 3), (8, 40)])
@pytest.mark.parametrize("prune_ulps", [imaging.PRUNE_ULPS, math.inf], ids=["pruned", "every-class"])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 12, 32 << 20])
@pytest.mark.parametrize("kind", ["noise", "regions"])
def test_labels_equal_the_full_upsampling(size, prune_ulps, chunk_bytes, kind, monkeypatch) -> None:
    monkeypatch.setattr(imaging, "PRUNE_ULPS", prune_ulps)
    monkeypatch.setattr(imaging, "LABEL_CHUNK_BYTES", chunk_bytes)
    if kind == "noise":
        logits = np.random.default_rng(2).standard_normal((6, 8, 12)).astype(np.float32)
    else:
        logits = region_logits(9, 8, 12, seed=2)
    labels = labels_from_logits(logits, size)
    assert labels.shape == size and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, unchunked_labels(logits, size))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_region_logits_blend_only_boundary_pixels(workers) -> None:
    logits = region_logits(150, 64, 64, seed=0)
    labels = labels_from_logits(logits, (720, 1280), workers=workers)
    np.testing.assert_array_equal(labels, unchunked_labels(logits, (720, 1280)))


def test_labels_shared_by_workers_equal_one_thread(monkeypatch) -> None:
    logits = np.random.default_rng(6).standard_normal((6, 40, 60)).astype(np.float32)  # boundaries everywhere
    monkeypatch.setattr(imaging, "LABEL_CHUNK_BYTES", 1 << 14)  # many chunks per worker
    serial = labels_from_logits(logits, (333, 517))
    pools = []
    real_pool = imaging._label_pool
    monkeypatch.setattr(imaging, "_label_pool", lambda workers: pools.append(workers) or real_pool(workers))
    np.testing.assert_array_equal(labels_from_logits(logits, (333, 517), workers=2), serial)
    assert pools == [2]  # the boundary cells were shared by two threads
    np.testing.assert_array_equal(serial, unchunked_labels(logits, (333, 517)))


def test_first_max_is_numpys_argmax_ties_included() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 3, (50, 5, 4, 6)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(imaging._first_max(values), values.argmax(axis=1))


def test_labels_follow_the_reference_upsampling() -> None:
    logits = np.random.default_rng(3).standard_normal((4, 3, 5)) * 10
    size = (13, 17)
    reference = reference_resize(logits.transpose(1, 2, 0), *size).argmax(axis=2)
    np.testing.assert_array_equal(labels_from_logits(logits.astype(np.float32), size), reference)


def test_labels_same_size_is_plain_argmax() -> None:
    logits = np.random.default_rng(4).standard_normal((9, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(labels_from_logits(logits, (6, 4)), logits.argmax(axis=0))


def test_labels_ties_go_to_the_lowest_class() -> None:
    logits = np.zeros((3, 2, 2), np.float32)
    logits[1:] = 1.0
    np.testing.assert_array_equal(labels_from_logits(logits, (5, 5)), np.ones((5, 5)))


@pytest.mark.parametrize(("classes", "dtype"), [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65537, np.int32)])
def test_label_dtype(classes: int, dtype: type) -> None:
    logits = np.zeros((classes, 1, 2), np.float32)
    logits[-1] = 1.0
    labels = labels_from_logits(logits, (3, 4))
    assert labels.dtype == dtype
    assert (labels == classes - 1).all()


def test_labels_memory_stays_bounded() -> None:
    logits = np.random.default_rng(5).standard_normal((150, 24, 32)).astype(np.float32)
    size = (540, 960)  # the full upsampled tensor would take 150 × 540 × 960 × 4 B = 311 MB
    tracemalloc.start()
    try:
        labels = labels_from_logits(logits, size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert labels.shape == size
    assert peak < 64 << 20
    np.testing.assert_array_equal(labels[::7, ::11], unchunked_labels(logits, size)[::7, ::11])


def test_labels_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="C×h×w"):
        labels_from_logits(np.zeros((1, 5, 8, 8), np.float32), (8, 8))
    for workers in (0, True, 1.5):
        with pytest.raises(ValueError, match="workers must be a positive int"):
            labels_from_logits(np.zeros((2, 4, 4), np.float32), (8, 8), workers=workers)  # type: ignore[arg-type]


# ---- as_rgb_uint8 ---------------------------------------------------------------------------------


def test_rgb_uint8_passes_through_without_copy() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    out = as_rgb_uint8(image)
    assert out.shape == (4, 5, 3) and np.shares_memory(out, image)


def test_non_contiguous_input_becomes_contiguous() -> None:
    image = np.random.default_rng(6).integers(0, 256, (4, 5, 3), dtype=np.uint8)[:, ::-1]
    out = as_rgb_uint8(image)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 1)])
def test_grayscale_is_replicated(shape: tuple[int, ...]) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(shape)
    out = as_rgb_uint8(gray)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray.reshape(4, 5))


def test_rgba_drops_alpha() -> None:
    rgba = np.random.default_rng(7).integers(0, 256, (4, 5, 4), dtype=np.uint8)
    out = as_rgb_uint8(rgba)
    assert out.shape == (4, 5, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgba[:, :, :3])


def test_pil_images_are_converted_to_rgb() -> None:
    rgb = np.random.default_rng(8).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(as_rgb_uint8(Image.fromarray(rgb)), rgb)
    np.testing.assert_array_equal(as_rgb_uint8(Image.fromarray(rgb).convert("RGBA")), rgb)
    palette = Image.fromarray(rgb).quantize(colors=4)  # mode "P": indices, not gray levels
    np.testing.assert_array_equal(as_rgb_uint8(palette), np.asarray(palette.convert("RGB")))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (None, "not an image"),
        ({"a": 1}, "not an image"),
        ("photo.jpg", "load the file first"),
        (Path("photo.jpg"), "load the file first"),
        ([[1, 2], [3]], "could not read a list"),
        (np.zeros((0, 5, 3), np.uint8), "empty image"),
        (np.zeros((4, 0), np.uint8), "empty image"),
        (np.zeros(5, np.uint8), "1 dimensions"),
        (np.zeros((1, 4, 4, 3), np.uint8), "4 dimensions"),
        (np.zeros((4, 4, 2), np.uint8), "2 channels"),
        (np.zeros((4, 4, 5), np.uint8), "5 channels"),
        (np.zeros((3, 8, 8), np.uint8), "channels-first"),
        (np.full((4, 4, 3), 0.5, np.float32), r"convert it to uint8 RGB 0..255, e.g. \(image \* 255\)"),
        (np.full((4, 4, 3), 100.0), "float64 image; convert it to uint8"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN or inf"),
        (np.zeros((4, 4, 3), bool), "boolean"),
        (np.zeros((4, 4, 3), np.uint16), "uint16 image; convert it to uint8"),
        ([[[1, 2, 3]]], "int64 image; convert it to uint8"),
        (np.zeros((4, 4, 3), np.complex64), "not an image"),
    ],
)
def test_bad_images_raise_helpful_errors(image: object, message: str) -> None:
    with pytest.raises(ImageError, match=message) as info:
        as_rgb_uint8(image)
    assert isinstance(info.value, ValueError)


# ---- PIL images of deep and float modes, and EXIF orientation ------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_16_bit_pil_images_are_scaled_by_257(dtype: type) -> None:
    levels = np.array([[0, 128, 129, 385, 386, 65535]], dtype)
    out = as_rgb_uint8(Image.fromarray(levels))
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 1, 2, 255])
    assert out.shape == (1, 6, 3) and (out == out[:, :, :1]).all()


def test_32_bit_pil_values_beyond_16_bits_are_refused() -> None:
    with pytest.raises(ImageError, match=r"values -1\.\.70000; edgeseg reads integer images as 16-bit"):
        as_rgb_uint8(Image.fromarray(np.array([[-1, 70000]], np.int32)))


def test_float_pil_images_in_0_1_are_scaled_else_refused() -> None:
    out = as_rgb_uint8(Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32)))
    np.testing.assert_array_equal(out[0, :, 0], [0, 64, 255])
    with pytest.raises(ImageError, match=r"values 0\.\.255; edgeseg reads float images as gray levels 0\.\.1"):
        as_rgb_uint8(Image.fromarray(np.array([[0.0, 255.0]], np.float32)))


def test_pil_images_are_turned_upright_by_exif(tmp_path: Path) -> None:
    rgb = np.random.default_rng(9).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 8  # stored turned clockwise: show it turned back, counter-clockwise
    image.save(tmp_path / "turned.png", exif=exif)
    with Image.open(tmp_path / "turned.png") as opened:
        np.testing.assert_array_equal(as_rgb_uint8(opened), np.rot90(rgb, 1))

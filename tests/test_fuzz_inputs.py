"""Fuzzing what enters edgeseg: image bytes, arrays and PIL images, checkpoint bytes, CLI arguments, output paths.

The invariant everywhere: a correct result or one clear edgeseg error; never a library's exception, a hang or
a file written anywhere but where the user asked. Derandomized (the same examples every run) and bounded:
well under a minute in all.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from edgeseg import cli
from edgeseg.image_io import read_image
from edgeseg.imaging import ImageError, ImageFileError, as_rgb_uint8
from edgeseg.runtimes.base import THREADS_PER_CORE

FUZZ = settings(
    derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=120
)
MAX_PIXELS = 1_000_000  # fuzzed headers may claim anything; the limit keeps each example small
SLOW_S = 20.0  # one example taking this long is a hang


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh temporary folder per example (Hypothesis re-runs a test body many times)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@cache
def seed_files() -> tuple[bytes, ...]:
    """Valid files of every format and several modes, for the mutations to start from."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    files = []
    for image, fmt, options in [
        (Image.fromarray(rgb), "PNG", {}),
        (Image.fromarray(rgb).convert("RGBA"), "PNG", {}),
        (Image.fromarray(rgb).quantize(8), "PNG", {}),
        (Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257), "PNG", {}),
        (Image.fromarray(rgb), "JPEG", {"quality": 80}),
        (Image.fromarray(rgb).convert("CMYK"), "JPEG", {}),
        (Image.fromarray(rgb), "BMP", {}),
        (Image.fromarray(rgb), "WEBP", {"lossless": True}),
        (Image.fromarray(rgb), "TGA", {}),
        (Image.fromarray(rgb), "PPM", {}),
        (Image.fromarray(rgb[:, :, 0].astype(np.float32) / 255), "TIFF", {}),
        (Image.fromarray(rgb), "TIFF", {"compression": "tiff_deflate"}),
        (Image.fromarray(rgb), "GIF", {}),
        (Image.fromarray(rgb), "GIF", {"save_all": True, "append_images": [Image.fromarray(rgb[::-1])]}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        files.append(buffer.getvalue())
    files.append(_png_header_only(40000, 40000))
    return tuple(files)


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """A valid file, truncated, overwritten or spliced at random places; or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(seed_files())))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["overwrite", "truncate", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(patch)] = patch
        elif kind == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@FUZZ
@given(data=image_bytes(), suffix=st.sampled_from([".png", ".jpg", ".img", ""]))
def test_fuzz_image_files_decode_or_fail_clearly(data: bytes, suffix: str) -> None:
    with scratch() as folder:
        path = folder / f"input{suffix}"
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            rgb = read_image(path, max_pixels=MAX_PIXELS)
        except ImageFileError as error:
            assert str(path) in str(error)
        else:
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
            assert 0 < rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS
        assert time.perf_counter() - start < SLOW_S


ARRAY_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_])


@FUZZ
@given(arr=hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)))
def test_fuzz_arrays_are_accepted_exactly_or_refused(arr: np.ndarray) -> None:
    try:
        rgb = as_rgb_uint8(arr)
    except ImageError:
        accepted = arr.dtype == np.uint8 and arr.ndim in (2, 3) and 0 not in arr.shape
        assert not (accepted and (arr.ndim == 2 or arr.shape[2] in (1, 3, 4))), "a valid image was refused"
        return
    assert arr.dtype == np.uint8 and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    gray = arr.reshape((*arr.shape[:2], -1))
    expected = np.repeat(gray, 3, axis=2) if gray.shape[2] == 1 else gray[:, :, :3]
    np.testing.assert_array_equal(rgb, expected)


@st.composite
def pil_images(draw: st.DrawFn) -> tuple[Image.Image, np.ndarray]:
    """A PIL image of a random mode and its pixels as built."""
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1", "CMYK", "I;16", "I", "F"]))
    if mode in ("I;16", "I"):
        dtype, low, high = (np.uint16, 0, 65535) if mode == "I;16" else (np.int32, -5, 70000)
        pixels = draw(hnp.arrays(dtype, (h, w), elements=st.integers(low, high)))
    elif mode == "F":
        pixels = draw(hnp.arrays(np.float32, (h, w), elements=st.floats(-0.5, 1.5, width=32) | st.just(np.nan)))
    else:
        pixels = draw(hnp.arrays(np.uint8, (h, w, 3), elements=st.integers(0, 255)))
    if mode in ("I;16", "I", "F"):
        return Image.fromarray(pixels), pixels
    image = Image.fromarray(pixels)
    return (image.quantize(4) if mode == "P" else image.convert(mode)), pixels


@FUZZ
@given(pil=pil_images())
def test_fuzz_pil_modes_are_scaled_exactly_or_refused(pil: tuple[Image.Image, np.ndarray]) -> None:
    image, pixels = pil
    try:
        rgb = as_rgb_uint8(image)
    except ImageError:
        assert image.mode in ("I", "F"), f"mode {image.mode} was refused"
        if image.mode == "I":
            assert pixels.min() < 0 or pixels.max() > 65535
        else:
            assert not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (*image.size[::-1], 3)
    if image.mode in ("I;16", "I"):
        np.testing.assert_array_equal(rgb[:, :, 0], np.round(pixels.astype(np.float64) / 257).astype(np.uint8))
    elif image.mode == "F":
        np.testing.assert_array_equal(rgb[:, :, 0], np.round(pixels.astype(np.float64) * 255).astype(np.uint8))
    else:
        np.testing.assert_array_equal(rgb, np.asarray(image.convert("RGB")))


@cache
def seed_checkpoints() -> tuple[bytes, ...]:
    import torch
    from safetensors.torch import save

    state = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.ones(2)}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": {"steps": 3}}, buffer)
    legacy = io.BytesIO()
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    return buffer.getvalue(), legacy.getvalue(), save(state)


@st.composite
def checkpoint_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(seed_checkpoints())))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        if draw(st.booleans()):
            patch = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(patch)] = patch
        else:
            del data[at:]
    return bytes(data)


@settings(FUZZ, max_examples=80)
@given(data=checkpoint_bytes(), suffix=st.sampled_from([".pth", ".safetensors", ".bin"]))
def test_fuzz_checkpoint_files_load_or_fail_clearly(data: bytes, suffix: str) -> None:
    import torch

    from edgeseg.models.checkpoint import CheckpointError, read_state_dict

    with scratch() as folder:
        path = folder / f"weights{suffix}"
        path.write_bytes(data)
        try:
            state = read_state_dict(path)
        except CheckpointError as error:
            assert str(path) in str(error)
        else:
            assert all(isinstance(t, torch.Tensor) and bool(torch.isfinite(t).all()) for t in state.values())


NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["0", "1", "2", "7", "8", "9", "17", "18", "65536", "65537", "100000", "2000", "10**3"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0.0", "1e-4", "0.5", "1", "abc", "", "١٢", "3" * 5000]),
)
NUMBER_OPTIONS = {
    "predict": ["--threads"],
    "eval": ["--threads", "--limit"],
    "bench": ["--threads", "--warmup", "--iters"],
    "export": ["--num-classes", "--opset", "--tolerance", "--calib-count", "--parity-count", "--input-size"],
    "train": ["--threads", "--lr", "--seed", "--steps", "--batch-size", "--crop"],
    "data synthetic": ["--count", "--seed", "--val-fraction", "--size"],
    "lint": ["--num-classes", "--input-size"],
    "models": ["--num-classes"],
}
REQUIRED = {
    "predict": ["b", "i.png", "--out", "m.png"],
    "eval": ["b", "--data", "d"],
    "bench": ["b"],
    "export": ["--model", "m", "--out", "o"],
    "train": ["--model", "m", "--data", "d", "--out", "o"],
    "data synthetic": ["--out", "o", "--count", "2", "--size", "8x8"],
    "lint": ["x.onnx", "--target", "openvino"],
    "models": [],
}


@settings(FUZZ, max_examples=300)
@given(command=st.sampled_from(sorted(NUMBER_OPTIONS)), data=st.data())
def test_fuzz_cli_numbers_are_valid_or_refused_at_parse_time(command: str, data: st.DataObject) -> None:
    options = data.draw(st.lists(st.sampled_from(NUMBER_OPTIONS[command]), min_size=1, max_size=3, unique=True))
    argv = [*command.split(), *REQUIRED[command]]
    for option in options:
        argv.append(f"{option}={data.draw(NUMBERS)}")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = cli.build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 2 and "Traceback" not in stderr.getvalue()
        assert "error: argument" in stderr.getvalue().splitlines()[-1]
        return
    cores = os.cpu_count() or 1
    for threads in (args.threads or []) if command == "bench" else [getattr(args, "threads", None)]:
        assert threads is None or 1 <= threads <= THREADS_PER_CORE * cores
    for name in ("tolerance", "lr"):
        value = getattr(args, name, None)
        assert value is None or (math.isfinite(value) and value > 0)
    num_classes = getattr(args, "num_classes", None)  # export's default None: from --weights/--classes, else 150
    assert num_classes is None or 1 <= num_classes <= cli.MAX_CLASSES
    assert not hasattr(args, "opset") or args.opset >= cli.MIN_OPSET
    assert not hasattr(args, "val_fraction") or 0 < args.val_fraction < 1
    assert getattr(args, "seed", 0) >= 0


# ".." only first, so that every path stays inside the example's scratch folder.
OUT_PIECES = st.sampled_from(["masks", "new", ".", "m.png", "m.PNG", "m.jpg", "x", "in.png", "deep/er", "a b"])
OUT_PATHS = st.tuples(st.sampled_from([".", ".."]), st.lists(OUT_PIECES, min_size=1, max_size=3))


@pytest.fixture(scope="module")
def predict_bundle(tiny_bundle) -> Path:
    return tiny_bundle("onnx")


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@settings(FUZZ, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(out_path=OUT_PATHS, absolute=st.booleans())
def test_fuzz_predict_writes_only_where_asked(
    predict_bundle: Path, out_path: tuple[str, list[str]], absolute: bool
) -> None:
    start, pieces = out_path
    with scratch() as root:
        work = root / "work"
        (work / "masks").mkdir(parents=True)
        Image.fromarray(np.full((9, 13, 3), 200, np.uint8)).save(work / "in.png")
        out = str(Path(start, *pieces) if not absolute else work.joinpath(start, *pieces))
        before = {p: p.read_bytes() for p in _files(root)}
        previous = Path.cwd()
        os.chdir(work)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = cli.main(["predict", str(predict_bundle), "in.png", "--out", out])
        finally:
            os.chdir(previous)
        target = work / out
        expected = target / "in.png" if target.is_dir() else target
        new = _files(root) - set(before)
        changed = {p for p in before if p.read_bytes() != before[p]}
        assert code in (0, 2)
        if code == 0:
            assert (new | changed) == {expected.resolve()} or (new | changed) == {expected}
            with Image.open(expected) as mask:
                assert mask.size == (13, 9)
        else:
            assert not new and not changed
